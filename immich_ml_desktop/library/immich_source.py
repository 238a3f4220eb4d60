"""An Immich server as a library source: its image assets (and video preview frames), keyed by asset id.

`sync` lists the assets (metadata only) and brings the library in line; `load` downloads the same preview
Immich's ML service receives. Only new or changed assets (checksum or `updatedAt`) are indexed again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterator

from immich_ml_desktop.errors import ImmichError, SourceUnavailableError
from immich_ml_desktop.immich.client import ImmichClient
from immich_ml_desktop.library.folders import SyncResult
from immich_ml_desktop.library.store import Asset, AssetFile, LibraryStore
from immich_ml_desktop.models.images import DecodedImage, decode_image

# Immich's ML runs on the preview of images and on the preview frame of videos.
INDEXED_TYPES = ("IMAGE", "VIDEO")


def updated_ns(stamp: str) -> int:
    """`updatedAt` (ISO 8601) as integer nanoseconds, stored where a file's mtime goes."""
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return int(moment.timestamp() * 1_000_000) * 1000


def asset_file(asset: dict[str, Any]) -> AssetFile:
    return AssetFile(key=asset["id"], mtime_ns=updated_ns(asset["updatedAt"]), checksum=asset["checksum"])


class ImmichSource:
    """The assets an Immich API key can see. A library holds the assets of one Immich server."""

    kind = "immich"

    def __init__(self, client: ImmichClient, include_videos: bool = True) -> None:
        self.client = client
        self.types = INDEXED_TYPES if include_videos else ("IMAGE",)
        self.parallel_loads = client.max_parallel  # previews downloading at once while others are computed

    def assets(self) -> Iterator[dict[str, Any]]:
        """Every indexable asset (`AssetResponseDto`), trashed ones left out."""
        for kind in self.types:
            for asset in self.client.search_assets(type=kind, withDeleted=False):
                if not asset.get("isTrashed"):
                    yield asset

    def sync(self, store: LibraryStore) -> SyncResult:
        """Add new assets, reset changed ones and forget those gone from Immich (one transaction)."""
        files = [asset_file(a) for a in self.assets()]  # listed fully before touching the library
        changes = store.sync_assets("immich", files, remove_missing=True)
        return SyncResult(*(len(changes[k]) for k in ("new", "changed", "unchanged", "removed")))

    def load(self, asset: Asset) -> DecodedImage:
        try:
            data = self.client.download_preview(asset.key)
        except ImmichError as e:
            if e.status in (400, 404):
                raise  # this asset only: deleted since the listing, or not ours
            raise SourceUnavailableError(str(e)) from e  # stop the job; nothing is marked failed
        # The preview is already upright: Immich's ML decodes it without an EXIF transpose, so do we.
        return DecodedImage(decode_image(data, what=f"the preview of Immich asset {asset.key}"))
