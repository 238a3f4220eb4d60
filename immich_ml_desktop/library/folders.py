"""Local folders as a library source: find the photos (skipping hidden and system files), and decode each
one the way Immich makes its preview (EXIF-rotated, sRGB, shorter side 1440, never upscaled).

Immich's server resizes with sharp `resize(1440, 1440, {fit: 'outside', withoutEnlargement: true})`
(lanczos3) and sends that preview to its ML service, so boxes and vectors here match Immich's.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator, Sequence

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

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
    no_preview: list[str] = field(default_factory=list)  # Immich assets it has made no preview of (yet)

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
        return SyncResult(new=len(changes["new"]), changed=len(changes["changed"]),
                          unchanged=len(changes["unchanged"]), removed=len(changes["removed"]))

    def load(self, asset: Asset) -> DecodedImage:
        return decode_preview(asset.key, self.preview_size)


def load_preview(path: Path | str, size: int = PREVIEW_SIZE) -> Image.Image:
    """The photo as Immich's preview (see `decode_preview`), as a PIL image."""
    return decode_preview(path, size).pil


def decode_preview(path: Path | str, size: int = PREVIEW_SIZE) -> DecodedImage:
    """The photo as Immich's preview: EXIF orientation applied, sRGB, shorter side `size`, never upscaled.
    Raises ImageDecodeError with the reason.

    Immich's server makes its preview with libvips (shrink-on-load, then a lanczos3 reduce). Here, JPEGs
    (most photos) take the same shape of path through OpenCV's libjpeg-turbo: decoded at the smallest
    DCT scale that keeps at least `size` pixels, then area-averaged down (7x faster than PIL's decode and
    Lanczos for a 12 MP photo; the pixels differ from PIL's by about 1 level on average). Other formats,
    and JPEGs that look truncated (so the reason is told), go through PIL."""
    name = os.path.basename(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                icc = image.info.get("icc_profile")
                orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
                big_jpeg = image.format == "JPEG" and image.mode in ("RGB", "L") and min(image.size) > size
                fast = _jpeg_preview(image, size) if big_jpeg else None
                if fast is not None:
                    preview = DecodedImage.from_bgr(_oriented(fast, orientation))
                else:
                    preview = DecodedImage(_pil_preview(image, size))
    except FileNotFoundError:
        raise ImageDecodeError(f"{name} was deleted or moved before it could be read.") from None
    except PermissionError:
        raise ImageDecodeError(f"{name} cannot be read (permission denied).") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{name} is not an image this app can read (unknown or damaged format).") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageDecodeError(f"{name} is too large to decode safely (over {Image.MAX_IMAGE_PIXELS} pixels).") from None
    except (OSError, SyntaxError, ValueError, EOFError, cv2.error) as e:
        raise ImageDecodeError(f"{name} is corrupt or truncated and cannot be decoded: {e}.") from None
    if preview.width <= 0 or preview.height <= 0:
        raise ImageDecodeError(f"{name} has zero width or height.")
    transform = _srgb_transform(icc) if icc else None
    if transform is None:
        return preview
    converted = ImageCms.applyTransform(preview.pil, transform)
    assert converted is not None  # only an in-place transform returns None
    return DecodedImage(converted)


def preview_size(width: int, height: int, size: int = PREVIEW_SIZE) -> tuple[int, int]:
    """sharp's fit 'outside' without enlargement: the shorter side becomes `size`, the other rounds."""
    if min(width, height) <= size:
        return width, height
    scale = size / min(width, height)
    return (size, round(height * scale)) if width <= height else (round(width * scale), size)


def _jpeg_preview(image: ImageFile.ImageFile, size: int) -> np.ndarray | None:
    """The BGR preview of a JPEG through OpenCV, unrotated; None where PIL should decode it instead."""
    fp = image.fp
    assert fp is not None  # an image opened from a file, still inside its `with`
    fp.seek(0)
    data = fp.read()
    if not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return None  # no end-of-image marker: truncated (PIL says so) or data appended (PIL copes)
    target = preview_size(*image.size, size)
    factor = 1
    while factor < 8 and min(image.size) / (factor * 2) >= min(target):
        factor *= 2  # libjpeg scales by 1/2, 1/4, 1/8 while decoding: far less to decode and resize
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED[factor] | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        return None  # let PIL tell what is wrong
    if (bgr.shape[1], bgr.shape[0]) != target:
        bgr = cv2.resize(bgr, target, interpolation=cv2.INTER_AREA)
    return bgr


_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def _oriented(bgr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an image array, as PIL's `ImageOps.exif_transpose` does."""
    if orientation in (5, 6, 7, 8):
        bgr = np.swapaxes(bgr, 0, 1)  # transpose; then flips make the four rotations and mirrors
        flips = {5: (), 6: (1,), 7: (0, 1), 8: (0,)}[orientation]
    else:
        flips = {2: (1,), 3: (0, 1), 4: (0,)}.get(orientation, ())
    return np.ascontiguousarray(np.flip(bgr, flips) if flips else bgr)


def _pil_preview(image: Image.Image, size: int) -> Image.Image:
    """Any format through PIL: large JPEGs at a reduced DCT scale (draft) first, then Lanczos."""
    target = preview_size(*image.size, size)
    if image.format == "JPEG" and target != image.size:
        image.draft("RGB", target)  # keeps at least the requested size, so the resize below still shrinks
    image.load()
    if image.mode != "RGB":
        image = image.convert("RGB")
    # Rotating after the resize is cheaper and gives the same pixels (the shorter side is the same either
    # way); resize keeps `info`, so the EXIF orientation is still there.
    if image.size != target:
        image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return ImageOps.exif_transpose(image)


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


