"""Immich API keys in the OS keyring (one entry per server URL), where the platform has one."""

from __future__ import annotations

import logging

from immich_ml_desktop.immich.client import api_base_url

log = logging.getLogger(__name__)

KEYRING_SERVICE = "immich-ml-desktop"


def saved_api_key(server: str) -> str | None:
    """The key saved for this server, or None (no keyring on this machine counts as none saved)."""
    try:
        import keyring

        return keyring.get_password(KEYRING_SERVICE, api_base_url(server))
    except Exception as e:  # noqa: BLE001 - a missing or locked keyring must not stop a command
        log.info("No API key from the keyring: %s", e)
        return None


def save_api_key(server: str, api_key: str) -> bool:
    """Keep the key in the keyring; False when this machine has no usable keyring."""
    try:
        import keyring

        keyring.set_password(KEYRING_SERVICE, api_base_url(server), api_key)
        return True
    except Exception as e:  # noqa: BLE001
        log.warning("Cannot save the API key in the keyring: %s", e)
        return False
