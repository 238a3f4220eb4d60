"""`ImmichClient`: the slice of Immich's public REST API (v3.1 spec, 2.x compatible) this app uses.

API-key auth, version and permission checks, retries with backoff for idempotent calls, paging,
streaming downloads and a cap on parallel requests. Errors come out as typed `ImmichError`s.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, BinaryIO
from collections.abc import Iterator

import httpx

from immich_ml_desktop.errors import (
    ImmichAuthError,
    InvalidInputError,
    ImmichError,
    ImmichPermissionError,
    ImmichUnreachableError,
    ImmichVersionError,
)

log = logging.getLogger(__name__)

OLDEST_MAJOR = 2  # Immich 2.0 made the API stable; 1.x differs in paths and DTOs
NEWEST_MAJOR = 3

# The `x-immich-permission` of every operation the client calls (a test checks it against the spec).
PERMISSIONS: dict[str, str | None] = {
    "getServerVersion": None,
    "getMyApiKey": None,
    "getMyUser": "user.read",
    "searchAssets": "asset.read",
    "viewAsset": "asset.view",
    "getFaces": "face.read",
    "reassignFacesById": "face.update",
    "createFace": "face.create",
    "deleteFace": "face.delete",
    "getAllPeople": "person.read",
    "getPerson": "person.read",
    "searchPerson": "person.read",
    "createPerson": "person.create",
    "updatePeople": "person.update",
    "deletePerson": "person.delete",
    "mergePerson": "person.merge",
    "getConfig": "systemConfig.read",
    "updateConfig": "systemConfig.update",
    "getQueues": "queue.read",
    "getQueuesLegacy": "job.read",
    "runQueueCommandLegacy": "job.create",
}

# What each feature of the app needs, in the user's words.
FEATURES: dict[str, tuple[str, ...]] = {
    "index assets": ("searchAssets", "viewAsset"),
    "push people": (
        "searchAssets", "getFaces", "reassignFacesById", "getAllPeople", "getPerson", "searchPerson",
        "createPerson", "updatePeople", "mergePerson", "deletePerson",
    ),
    "add missed faces": ("createFace", "deleteFace"),  # push: faces only the library found, and their undo
    "register ML URL": ("getConfig", "updateConfig"),
    "run ML jobs": ("getQueues", "runQueueCommandLegacy"),
}
# Operations Immich keeps for admins (`x-immich-admin-only`), whatever the key's permissions.
ADMIN_OPERATIONS = frozenset({"getConfig", "updateConfig", "getQueues", "getQueuesLegacy", "runQueueCommandLegacy"})
ADMIN_FEATURES = tuple(f for f, ops in FEATURES.items() if ADMIN_OPERATIONS & set(ops))

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


def api_base_url(url: str) -> str:
    """`https://photos.example` or `.../api/` -> `https://photos.example/api`; a URL that cannot be an
    Immich server's (no host, another scheme, a bad port) is refused at once, before any network."""
    given = url.strip()
    url = given.rstrip("/")
    if not url:
        raise ImmichUnreachableError("No Immich server URL given: pass --server or set IMMICH_URL.")
    example = "e.g. http://192.168.1.10:2283 or https://photos.example.com"
    if "://" not in url:
        # `http//x`, `http:/x`, `https:x`, `http://` (its slashes stripped above): a mistyped scheme, not a host
        # named "http" (which the network would be asked about for seconds before failing).
        if url.lower() in ("http:", "https:"):
            raise InvalidInputError(f"{given!r} has no host name; give it as {example}.")
        head = re.split(r"[/:]", url, maxsplit=1)[0].lower()
        if head in ("http", "https") and url.lower() != head and not re.fullmatch(r"https?:\d+", url.lower()):
            raise InvalidInputError(f"{given!r} is not a valid server URL (mistyped {head}://); give it as {example}.")
        url = "http://" + url
    try:
        parsed = httpx.URL(url)
        parsed.port  # noqa: B018 - raises for a port that is not a number
    except (httpx.InvalidURL, ValueError) as e:
        raise InvalidInputError(f"{url!r} is not a valid server URL ({e}); give it as {example}.") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidInputError(f"{url!r} is not an http(s) URL with a host name; give it as {example}.")
    return url if url.endswith("/api") else url + "/api"


@dataclass(frozen=True)
class ServerVersion:
    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True)
class KeyCheck:
    """What a key may do: its permissions, whether its user is an admin, what it lacks per feature."""

    name: str
    permissions: tuple[str, ...]
    is_admin: bool | None  # None when the key may not read its own user
    missing: dict[str, list[str]]  # feature -> permissions it lacks (features it can use are absent)


PROBE_TIMEOUT = 10.0  # the first call to a server: a server that accepts and never answers is named at once


def not_visible(error: ImmichError) -> bool:
    """Immich's answer for an asset or person that is gone or belongs to another user: 400 "Not found or
    no ... access" (it does not tell the two apart), or 404 from older versions."""
    return error.status in (400, 404)


class ImmichClient:
    """A thread-safe client; one per server and key. Use as a context manager or call `close()`."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_parallel: int = 4,
        probe_timeout: float = PROBE_TIMEOUT,
    ) -> None:
        if not api_key:
            raise ImmichAuthError("No Immich API key given: pass --api-key or set IMMICH_API_KEY.")
        self.base_url = api_base_url(url)
        self.probe_timeout = probe_timeout
        self.retries = retries
        self.backoff = backoff
        self.max_parallel = max_parallel
        self._slots = threading.BoundedSemaphore(max_parallel)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"x-api-key": api_key, "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=max_parallel, max_keepalive_connections=max_parallel),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ImmichClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------------

    def _send(self, operation: str, method: str, path: str, *, idempotent: bool | None = None,
              stream_to: BinaryIO | None = None, retries: int | None = None, retry_timeouts: bool = True,
              **kwargs: Any) -> httpx.Response:
        """One API call with retries; `stream_to` receives the body in chunks (emptied on each attempt)."""
        retry_all = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        retries = self.retries if retries is None else retries
        attempt = 0
        while True:
            try:
                with self._slots:
                    if stream_to is None:
                        response = self._http.request(method, path, **kwargs)
                    else:
                        response = self._stream(method, path, stream_to, **kwargs)
            except httpx.ReadTimeout as e:
                seconds = self._http.timeout.read if "timeout" not in kwargs else kwargs["timeout"].read
                error: Exception = ImmichUnreachableError(
                    f"Immich at {self.base_url} accepted the connection but sent no answer to {operation} within "
                    f"{seconds:.0f} s ({_reason(e)}): it may be starting, overloaded or not an Immich server. "
                    "Nothing was changed; try again later."
                )
                retryable = retry_all and retry_timeouts
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                # The request never reached the server: safe to retry whatever the method.
                error = ImmichUnreachableError(
                    f"Cannot reach Immich at {self.base_url} ({_reason(e)}). "
                    "Check the URL and that the server is running, then try again."
                )
                retryable = True
            except httpx.TransportError as e:
                error = ImmichUnreachableError(
                    f"The connection to Immich at {self.base_url} broke during {operation} ({_reason(e)}). "
                    "Nothing was lost; run the command again to finish."
                )
                retryable = retry_all
            else:
                if response.status_code < 400:
                    return response
                error = self._error(operation, response)
                retryable = retry_all and response.status_code >= 500
            if not retryable or attempt >= retries:
                raise error
            delay = self.backoff * (2 ** attempt)
            attempt += 1
            log.info("%s failed (%s); retry %d/%d in %.2fs", operation, error, attempt, self.retries, delay)
            time.sleep(delay)

    def _stream(self, method: str, path: str, sink: BinaryIO, **kwargs: Any) -> httpx.Response:
        sink.seek(0)
        sink.truncate()
        with self._http.stream(method, path, **kwargs) as response:
            if response.status_code >= 400:
                response.read()
                return response
            for chunk in response.iter_bytes(64 * 1024):
                sink.write(chunk)
        return response

    def _error(self, operation: str, response: httpx.Response) -> ImmichError:
        detail = _message(response)
        status = response.status_code
        if status == 401:
            return ImmichAuthError(
                f"Immich at {self.base_url} rejected the API key ({detail}). "
                "Create a key under Account Settings > API Keys and pass it with --api-key or IMMICH_API_KEY.",
                status,
            )
        if status == 403:
            needed = PERMISSIONS.get(operation)
            if needed and "permission" in detail.lower():
                return ImmichPermissionError(
                    f"The API key lacks the '{needed}' permission for {operation} ({detail}). "
                    "Edit the key in Immich (Account Settings > API Keys) to grant it.",
                    status,
                )
            what = "an admin account" if operation in ADMIN_OPERATIONS else "access"
            return ImmichPermissionError(
                f"Immich refused {operation}: it needs {what} ({detail}). Use an API key of an admin.", status
            )
        if status >= 500:
            return ImmichError(
                f"Immich at {self.base_url} failed on {operation} (HTTP {status}: {detail}). "
                "Nothing was lost; try again, and check the server's logs if it keeps failing.",
                status,
            )
        return ImmichError(f"Immich refused {operation} (HTTP {status}: {detail}).", status)

    def _json(self, operation: str, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(operation, method, path, **kwargs)
        return response.json() if response.content else None

    # -- server and key --------------------------------------------------------------------------

    def version(self) -> ServerVersion:
        """The server's version; the first call to a server, so it also tells that the server answers in
        time and that it is an Immich server at all (in one line each)."""
        try:
            # One try for an answer (a refused connection once more): a server that does not answer is named
            # within seconds, not after the retries a busy server deserves later on.
            response = self._send("getServerVersion", "GET", "/server/version", retries=1, retry_timeouts=False,
                                  timeout=httpx.Timeout(self.probe_timeout, connect=min(self.probe_timeout, 5.0)))
        except ImmichError as e:
            if e.status is not None and e.status < 500 and not isinstance(e, ImmichAuthError):
                raise self._not_immich(f"HTTP {e.status}") from None
            raise
        try:
            data = response.json()
            return ServerVersion(int(data["major"]), int(data["minor"]), int(data["patch"]))
        except (ValueError, TypeError, KeyError):
            kind = response.headers.get("content-type", "no content type").split(";")[0]
            raise self._not_immich(f"{kind}: {' '.join(response.text.split())[:60]!r}") from None

    def _not_immich(self, answer: str) -> ImmichError:
        return ImmichError(
            f"{self.base_url.removesuffix('/api')} is not an Immich server: GET /api/server/version answered "
            f"{answer}. Check the URL (Immich's web address, usually port 2283), not its ML service's."
        )

    def check_version(self) -> ServerVersion:
        """The server's version; raises ImmichVersionError for Immich older than 2.0."""
        version = self.version()
        if version.major < OLDEST_MAJOR:
            raise ImmichVersionError(
                f"Immich {version} at {self.base_url} is too old: this app needs Immich {OLDEST_MAJOR}.0 "
                "or newer. Upgrade the server first."
            )
        if version.major > NEWEST_MAJOR:
            log.warning("Immich %s is newer than the %d.x API this app was built for", version, NEWEST_MAJOR)
        return version

    def my_api_key(self) -> dict[str, Any]:
        return self._json("getMyApiKey", "GET", "/api-keys/me")

    def my_user(self) -> dict[str, Any]:
        return self._json("getMyUser", "GET", "/users/me")

    def check_key(self) -> KeyCheck:
        """Which features the key can use: 401 for a bad key, else the permissions it lacks per feature."""
        key = self.my_api_key()
        permissions = tuple(key.get("permissions") or ())
        granted = set(permissions)
        has_all = "all" in granted
        try:
            is_admin: bool | None = bool(self.my_user().get("isAdmin"))
        except ImmichPermissionError:
            is_admin = None
        missing: dict[str, list[str]] = {}
        for feature, operations in FEATURES.items():
            lacks = [] if has_all else sorted({p for op in operations if (p := PERMISSIONS[op]) and p not in granted})
            if feature in ADMIN_FEATURES and is_admin is False:
                lacks.append("admin account")
            if lacks:
                missing[feature] = lacks
        return KeyCheck(name=str(key.get("name", "")), permissions=permissions, is_admin=is_admin, missing=missing)

    # -- assets ----------------------------------------------------------------------------------

    def search_assets(self, page_size: int = 1000, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every asset matching `filters` (MetadataSearchDto fields), page by page."""
        page: int | None = 1
        while page is not None:
            body = {**filters, "page": page, "size": page_size}
            # A search writes nothing, so a retry after a broken connection is harmless.
            data = self._json("searchAssets", "POST", "/search/metadata", json=body, idempotent=True)
            assets = data["assets"]
            yield from assets["items"]
            page = int(assets["nextPage"]) if assets.get("nextPage") else None

    def download_preview(self, asset_id: str, sink: BinaryIO | None = None, size: str = "preview") -> bytes:
        """The preview Immich's ML service receives (`/assets/{id}/thumbnail?size=preview`), streamed.

        Written into `sink` when given (a retry truncates it and starts over); also returned.
        """
        buffer = sink if sink is not None else io.BytesIO()
        self._send("viewAsset", "GET", f"/assets/{asset_id}/thumbnail", params={"size": size}, stream_to=buffer)
        buffer.seek(0)
        return buffer.read()

    # -- faces and people ------------------------------------------------------------------------

    def faces(self, asset_id: str) -> list[dict[str, Any]]:
        return self._json("getFaces", "GET", "/faces", params={"id": asset_id})

    def people(self, with_hidden: bool = True) -> list[dict[str, Any]]:
        """The people Immich lists: only those with a visible face on a timeline asset that have a name or
        at least `minimumFaces` (3) faces. A new, still empty person is not among them (`person(id)` and
        `search_people(name)` find it)."""
        people: list[dict[str, Any]] = []
        page = 1
        while True:
            data = self._json("getAllPeople", "GET", "/people",
                              params={"page": page, "size": 1000, "withHidden": str(with_hidden).lower()})
            people.extend(data["people"])
            if not data.get("hasNextPage"):
                return people
            page += 1

    def person(self, person_id: str) -> dict[str, Any] | None:
        """The person, or None when Immich no longer has it."""
        try:
            return self._json("getPerson", "GET", f"/people/{person_id}")
        except ImmichError as e:
            if e.status in (400, 404):  # Immich answers 400 "Person not found" for a deleted person
                return None
            raise

    def search_people(self, name: str, with_hidden: bool = True) -> list[dict[str, Any]]:
        """People whose name is like `name` (Immich's trigram match, faces or not); callers compare exactly."""
        return self._json("searchPerson", "GET", "/search/person",
                          params={"name": name, "withHidden": str(with_hidden).lower()})

    def create_person(self, name: str, is_hidden: bool = False) -> dict[str, Any]:
        return self._json("createPerson", "POST", "/people", json={"name": name, "isHidden": is_hidden})

    def update_people(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Bulk `PUT /people` (`PeopleUpdateItem`s with `id` and the fields to change)."""
        return self._json("updatePeople", "PUT", "/people", json={"people": items})

    def delete_person(self, person_id: str) -> None:
        self._send("deletePerson", "DELETE", f"/people/{person_id}")

    def reassign_face(self, face_id: str, person_id: str) -> dict[str, Any]:
        """Move one face to a person (`PUT /faces/{personId}` with the face's id in the body)."""
        return self._json("reassignFacesById", "PUT", f"/faces/{person_id}", json={"id": face_id})

    def create_face(self, asset_id: str, person_id: str, box: tuple[float, float, float, float],
                    image_size: tuple[int, int]) -> None:
        """Add a face Immich's detection did not find (`POST /faces`, a "manual" face), box in the pixels of
        an image of `image_size` (the preview's). Immich answers nothing: find it again with `faces()`."""
        x1, y1, x2, y2 = (round(v) for v in box)
        self._send("createFace", "POST", "/faces", json={
            "assetId": asset_id, "personId": person_id, "imageWidth": int(image_size[0]),
            "imageHeight": int(image_size[1]), "x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1})

    def delete_face(self, face_id: str) -> None:
        self._send("deleteFace", "DELETE", f"/faces/{face_id}", json={"force": True})

    def merge_people(self, into_id: str, ids: list[str]) -> list[dict[str, Any]]:
        """Merge `ids` into `into_id`; Immich deletes the merged people."""
        return self._json("mergePerson", "POST", f"/people/{into_id}/merge", json={"ids": ids})

    # -- administration --------------------------------------------------------------------------

    def system_config(self) -> dict[str, Any]:
        return self._json("getConfig", "GET", "/system-config")

    def update_system_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """PUT the whole `SystemConfigDto` back (Immich takes no partial config)."""
        return self._json("updateConfig", "PUT", "/system-config", json=config)

    def queues(self) -> dict[str, dict[str, Any]]:
        """Queue name -> {"isPaused", "statistics": QueueStatisticsDto}; `GET /queues` (2.4+) else `/jobs`."""
        try:
            return {q["name"]: q for q in self._json("getQueues", "GET", "/queues")}
        except ImmichError as e:
            if e.status != 404:
                raise
        legacy = self._json("getQueuesLegacy", "GET", "/jobs")
        return {name: {"name": name, "isPaused": q["queueStatus"]["isPaused"], "statistics": q["jobCounts"]}
                for name, q in legacy.items()}

    def run_queue_command(self, name: str, command: str = "start", force: bool = False) -> dict[str, Any]:
        """`PUT /jobs/{name}` with a `QueueCommandDto`: the only way 3.1 offers to queue all assets."""
        return self._json("runQueueCommandLegacy", "PUT", f"/jobs/{name}", json={"command": command, "force": force})


def _reason(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _message(response: httpx.Response) -> str:
    """Immich's error text; with its validation details (3.1: `errors: [{path: [...], message}]`)."""
    try:
        body = response.json()
    except ValueError:
        return " ".join(response.text.split())[:200] or response.reason_phrase
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, list):  # Immich 2.x: class-validator messages
            message = "; ".join(map(str, message))
        details = [_validation_detail(e) for e in body.get("errors") or () if isinstance(e, dict)]
        text = str(message or body.get("error") or body)
        return f"{text}: {'; '.join(details)}" if details else text
    return str(body)[:200]


def _validation_detail(error: dict[str, Any]) -> str:
    path = error.get("path")
    where = ".".join(map(str, path)) if isinstance(path, list) else str(path or "")
    return f"{where}: {error.get('message', '?')}" if where else str(error.get("message", "?"))
