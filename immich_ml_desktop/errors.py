"""Errors a user can meet, each with a message that says what to do about it.

The GUI shows them in place, the CLI prints the message on one line and exits non-zero,
the ML server maps them to Immich's HTTP status codes (`http_status`).
"""

from __future__ import annotations


class UserError(Exception):
    """Base of every error whose message is meant for the user."""

    http_status = 500
    exit_code = 2


class InvalidInputError(UserError):
    """The request or command line is incomplete or contradictory (HTTP 400)."""

    http_status = 400


class EntriesFormatError(UserError):
    """The `entries` JSON of a /predict request is malformed (HTTP 422, as Immich answers)."""

    http_status = 422


class ImageDecodeError(InvalidInputError):
    """An image could not be decoded: corrupt, truncated, empty or of an unsupported format."""


class ModelNotFoundError(UserError):
    """A model's files are not in the cache."""


class ModelDamagedError(UserError):
    """A model's files are present but cannot be loaded (truncated, corrupt, wrong layout)."""


class DeviceUnavailableError(UserError):
    """The requested execution device does not exist on this machine."""


class DownloadError(UserError):
    """A model could not be downloaded (network, server error, checksum mismatch)."""


class ForwardError(UserError):
    """A request handed on to another ML service failed there."""

    http_status = 502


class LibraryError(UserError):
    """The library file cannot be used: not a library, damaged, or made by a newer version of the app."""


class ImmichError(UserError):
    """The Immich server answered a request with an error (`status`: its HTTP status, if any)."""

    http_status = 502

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ImmichUnreachableError(ImmichError):
    """The Immich server cannot be reached (wrong URL, server down, network)."""


class ImmichAuthError(ImmichError):
    """Immich rejected the API key (HTTP 401)."""


class ImmichPermissionError(ImmichError):
    """The API key lacks a permission the request needs (HTTP 403)."""


class ImmichVersionError(ImmichError):
    """The Immich server is older than the versions this app speaks to."""


class SourceUnavailableError(UserError):
    """A library source as a whole cannot be read (server down, key revoked); no single asset is at fault."""
