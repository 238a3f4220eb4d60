"""Local folders as a library source: find the photos (skipping hidden and system files), and decode each
one the way Immich makes its preview (EXIF-rotated, sRGB, shorter side 1440, never upscaled).

Immich's server resizes with sharp `resize(1440, 1440, {fit: 'outside', withoutEnlargement: true})`
(lanczos3) and sends that preview to its ML service, so boxes and vectors here match Immich's.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from immich_ml_desktop.errors import ImageDecodeError, InvalidInputError
from immich_ml_desktop.library.store import Asset, AssetFile, LibraryStore
from immich_ml_desktop.models.images import DecodedImage  # importing it registers the HEIC/AVIF openers

log = logging.getLogger(__name__)

PREVIEW_SIZE = 1440  # Immich's default `image.preview.size`
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".heic", ".heif", ".hif", ".avif", ".tif", ".tiff", ".bmp"}
)
# Folders and files that NAS boxes, Windows and macOS put next to photos (dotfiles are skipped too).
SYSTEM_NAMES = frozenset(
    {"@eadir", "#recycle", "#snapshot", "$recycle.bin", "system volume information", "thumbs.db", "desktop.ini",
     "__macosx", "lost+found"}
)


def is_skipped(name: str) -> bool:
    return name.startswith(".") or name.lower() in SYSTEM_NAMES


def scan_folder(root: Path) -> Iterator[AssetFile]:
    """Every photo under `root` (recursively, symlinked folders not followed), keyed by absolute path."""
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as e:
            log.warning("Skipping unreadable folder %s: %s", folder, e)
            continue
        for entry in entries:
            if is_skipped(entry.name):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS and entry.is_file():
                    st = entry.stat()
                    yield AssetFile(key=entry.path, size=st.st_size, mtime_ns=st.st_mtime_ns)
            except OSError as e:  # vanished or unreadable between listing and stat
                log.warning("Skipping %s: %s", entry.path, e)


@dataclass(frozen=True)
class SyncResult:
    """What a scan found compared with the library."""

    new: int
    changed: int
    unchanged: int
    removed: int

    @property
    def total(self) -> int:
        return self.new + self.changed + self.unchanged


class FolderSource:
    """Photos in local folders. `sync` brings the library in line with the disk; `load` decodes one."""

    kind = "folder"

    def __init__(self, folders: Sequence[Path | str], preview_size: int = PREVIEW_SIZE) -> None:
        if not folders:
            raise InvalidInputError("Give at least one folder to index.")
        self.folders = [Path(os.path.abspath(f)) for f in folders]
        self.preview_size = preview_size

    def sync(self, store: LibraryStore) -> SyncResult:
        """Add new photos, reset changed ones (size or modification time), forget deleted ones; only
        assets under these folders are touched. A missing folder is an error, so an unplugged disk
        never empties the library."""
        for folder in self.folders:
            if not folder.is_dir():
                raise InvalidInputError(f"The folder {folder} does not exist or is not a folder (is the disk connected?).")
        files: dict[str, AssetFile] = {}
        for folder in self.folders:
            for f in scan_folder(folder):
                files[f.key] = f
        prefixes = [os.path.join(str(folder), "") for folder in self.folders]
        changes = store.sync_assets("folder", files.values(), remove_missing_under=prefixes)
        return SyncResult(*(len(changes[k]) for k in ("new", "changed", "unchanged", "removed")))

    def load(self, asset: Asset) -> DecodedImage:
        return DecodedImage(load_preview(asset.key, self.preview_size))


def load_preview(path: Path | str, size: int = PREVIEW_SIZE) -> Image.Image:
    """The photo as Immich's preview: EXIF orientation applied, sRGB, shorter side `size` (lanczos),
    never upscaled, RGB. Large JPEGs are decoded at a reduced DCT scale first (draft), which is
    several times faster than decoding every pixel. Raises ImageDecodeError with the reason."""
    name = os.path.basename(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format == "JPEG" and min(image.size) > size:
                    scale = size / min(image.size)
                    # draft keeps at least the requested size, so the exact resize below still shrinks
                    image.draft("RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale)))
                image.load()
                icc = image.info.get("icc_profile")
                if image.mode != "RGB":
                    image = image.convert("RGB")
                # Rotating after the resize is cheaper and gives the same pixels (the shorter side is
                # the same either way); resize keeps `info`, so the EXIF orientation is still there.
                image = ImageOps.exif_transpose(_resize_shorter_side(image, size))
    except FileNotFoundError:
        raise ImageDecodeError(f"{name} was deleted or moved before it could be read.") from None
    except PermissionError:
        raise ImageDecodeError(f"{name} cannot be read (permission denied).") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{name} is not an image this app can read (unknown or damaged format).") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageDecodeError(f"{name} is too large to decode safely (over {Image.MAX_IMAGE_PIXELS} pixels).") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageDecodeError(f"{name} is corrupt or truncated and cannot be decoded: {e}.") from None
    if image.width <= 0 or image.height <= 0:
        raise ImageDecodeError(f"{name} has zero width or height.")
    return _to_srgb(image, icc) if icc else image


def _resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """sharp's fit 'outside' without enlargement: the shorter side becomes `size`, the other rounds."""
    w, h = image.size
    if min(w, h) <= size:
        return image
    scale = size / min(w, h)
    target = (size, round(h * scale)) if w <= h else (round(w * scale), size)
    return image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)


_SRGB = ImageCms.createProfile("sRGB")


@functools.lru_cache(maxsize=32)
def _srgb_transform(icc: bytes) -> ImageCms.ImageCmsTransform | None:
    """A transform into sRGB for an embedded profile, or None if it is already sRGB or unusable."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in (ImageCms.getProfileDescription(profile) or "").lower().replace(" ", ""):
            return None
        if profile.profile.xcolor_space.strip() != "RGB":
            return None  # e.g. a CMYK profile: the image was already converted to RGB above
        return ImageCms.buildTransform(profile, _SRGB, "RGB", "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return None


def _to_srgb(image: Image.Image, icc: bytes) -> Image.Image:
    transform = _srgb_transform(icc)
    return ImageCms.applyTransform(image, transform) if transform is not None else image
