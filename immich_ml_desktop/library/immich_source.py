"""An Immich server as a library source: the assets Immich's own ML would see, keyed by asset id.

`sync` lists the assets (metadata only) and brings the library in line; `load` downloads the same preview
Immich's ML service receives. Like Immich's ML jobs, it takes assets that are not hidden (the video of a
motion photo is), not trashed, and have a preview; one without a preview yet is counted, not failed.
Only an asset whose image changed (its checksum, or its preview's thumbhash) is indexed again: an edit of
its metadata (favourite, description, trash and restore) bumps `updatedAt` but changes no pixel.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any
from collections.abc import Iterator

from immich_ml_desktop.errors import ImmichError, SourceUnavailableError
from immich_ml_desktop.immich.client import ImmichClient
from immich_ml_desktop.library.folders import SyncResult
from immich_ml_desktop.library.store import Asset, AssetFile, LibraryStore
from immich_ml_desktop.models.images import DecodedImage, decode_image

# Immich's ML runs on the preview of images and on the preview frame of videos.
INDEXED_TYPES = ("IMAGE", "VIDEO")
# What Immich's ML jobs take (`visibility != hidden`); "locked" assets are not listed to an API key.
INDEXED_VISIBILITIES = ("timeline", "archive")


def updated_ns(stamp: str) -> int:
    """`updatedAt` (ISO 8601) as integer nanoseconds (kept for the record: it is not what decides a change)."""
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return int(moment.timestamp() * 1_000_000) * 1000


def image_key(asset: dict[str, Any]) -> str:
    """What changes exactly when the image the models see does: the original's checksum and the preview's
    thumbhash (an edit in Immich's editor keeps the checksum and changes the thumbhash)."""
    return f"{asset['checksum']}|{asset.get('thumbhash') or ''}"


def asset_file(asset: dict[str, Any]) -> AssetFile:
    return AssetFile(key=asset["id"], checksum=image_key(asset))


def has_preview(asset: dict[str, Any]) -> bool:
    """Immich sets the thumbhash when it makes the preview (none yet, or never for a format its build
    cannot decode)."""
    return bool(asset.get("thumbhash"))


class ImmichSource:
    """The assets an Immich API key can see. A library holds the assets of one Immich server."""

    kind = "immich"

    def __init__(self, client: ImmichClient, include_videos: bool = True) -> None:
        self.client = client
        self.types = INDEXED_TYPES if include_videos else ("IMAGE",)
        self.parallel_loads = client.max_parallel  # previews downloading at once while others are computed

    def assets(self) -> Iterator[dict[str, Any]]:
        """Every asset Immich's ML would see (`AssetResponseDto`), with or without a preview yet."""
        for kind in self.types:
            for visibility in INDEXED_VISIBILITIES:
                # Without a visibility filter Immich also returns hidden assets, which its ML never sees.
                for asset in self.client.search_assets(type=kind, visibility=visibility, withDeleted=False):
                    if not asset.get("isTrashed"):
                        yield asset

    def sync(self, store: LibraryStore) -> SyncResult:
        """Add new assets, reset those whose image changed and forget those gone from Immich (one
        transaction). An asset without a preview yet is left as the library has it (or not added)."""
        listed = list(self.assets())  # listed fully before touching the library
        known = {a.key: a for a in store.assets("immich")}
        files = [asset_file(a) for a in listed if has_preview(a)]
        self._upgrade_keys(store, known, [a for a in listed if has_preview(a)])
        waiting = [a for a in listed if not has_preview(a)]
        for a in waiting:  # keep what an earlier run computed while Immich remakes the preview
            if a["id"] in known:
                k = known[a["id"]]
                files.append(AssetFile(key=k.key, size=k.size, mtime_ns=k.mtime_ns, checksum=k.checksum))
        changes = store.sync_assets("immich", files, remove_missing=True)
        return SyncResult(new=len(changes["new"]), changed=len(changes["changed"]),
                          unchanged=len(changes["unchanged"]), removed=len(changes["removed"]),
                          no_preview=[a.get("originalFileName") or a["id"] for a in waiting])

    @staticmethod
    def _upgrade_keys(store: LibraryStore, known: dict[str, Asset], listed: list[dict[str, Any]]) -> None:
        """Libraries indexed by earlier versions keyed an asset by checksum + `updatedAt`: where the checksum
        still matches, take the new key without indexing it again."""
        old = [asset_file(a) for a in listed if a["id"] in known and known[a["id"]].checksum == a["checksum"]]
        if old:
            store.rekey_assets("immich", old)

    def load(self, asset: Asset) -> DecodedImage:
        try:
            data = self.client.download_preview(asset.key)
        except ImmichError as e:
            if e.status in (400, 404):
                raise  # this asset only: deleted since the listing, or not ours
            raise SourceUnavailableError(str(e)) from e  # stop the job; nothing is marked failed
        # The preview is already upright: Immich's ML decodes it without an EXIF transpose, so do we.
        # These are the very bytes Immich sends its ML service for the asset: their SHA-256 names the
        # answers the index leaves for `serve` (server/answer_cache.py).
        return DecodedImage(decode_image(data, what=f"the preview of Immich asset {asset.key}"),
                            digest=hashlib.sha256(data).hexdigest())
