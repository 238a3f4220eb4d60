"""Image decoding and the reference preprocessing helpers (numpy/PIL, no per-pixel Python loops).

`decode_image` decodes exactly as Immich's ML service does (no EXIF transpose: the server sends
previews already rotated) and turns every failure into an `ImageDecodeError` that says what is wrong.
"""

from __future__ import annotations

import io
import re
import warnings
from concurrent.futures import Executor

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from immich_ml_desktop.errors import ImageDecodeError

try:  # HEIC/HEIF and AVIF; optional so that a missing wheel only loses those formats
    import pillow_heif

    pillow_heif.register_heif_opener()
    if hasattr(pillow_heif, "register_avif_opener"):
        pillow_heif.register_avif_opener()
except ImportError:  # pragma: no cover - pillow-heif is a dependency
    pass

# Decompression bombs: a 1440 px preview is ~3 Mpx; allow large originals but refuse absurd sizes.
Image.MAX_IMAGE_PIXELS = 300_000_000


class DecodedImage:
    """A decoded RGB image plus its BGR array, computed once and shared by the face models."""

    __slots__ = ("pil", "_bgr", "digest")

    def __init__(self, pil: Image.Image, bgr: np.ndarray | None = None, digest: str | None = None) -> None:
        self.pil = pil
        self._bgr = bgr
        self.digest = digest  # SHA-256 of the encoded bytes, where a source knows them as Immich sends them

    @classmethod
    def from_bgr(cls, bgr: np.ndarray) -> DecodedImage:
        """From an OpenCV BGR uint8 array (kept as the face models' input)."""
        return cls(Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), bgr)

    @property
    def bgr(self) -> np.ndarray:
        if self._bgr is None:
            self._bgr = to_bgr(self.pil)
        return self._bgr

    @property
    def width(self) -> int:
        return self.pil.width

    @property
    def height(self) -> int:
        return self.pil.height


ImageInput = bytes | Image.Image | DecodedImage


def decode_image(data: ImageInput, what: str = "image") -> Image.Image:
    """Decode bytes into a fully loaded RGB PIL image, or raise ImageDecodeError."""
    if isinstance(data, DecodedImage):
        return data.pil
    if isinstance(data, Image.Image):
        image = data
    else:
        if not data:
            raise ImageDecodeError(f"The {what} is empty (0 bytes).")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))
                image.load()
        except UnidentifiedImageError:
            raise ImageDecodeError(
                f"The {what} is not an image format this app can read "
                f"(first bytes {data[:8].hex()}); send JPEG, PNG, WebP, HEIC, AVIF, TIFF or BMP."
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageDecodeError(too_large_message(what, e)) from None
        except (OSError, SyntaxError, ValueError) as e:
            raise ImageDecodeError(f"The {what} is corrupt or truncated and cannot be decoded: {e}.") from None
    if image.width <= 0 or image.height <= 0:
        raise ImageDecodeError(f"The {what} has zero width or height.")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def too_large_message(what: str, bomb: Exception) -> str:
    """What to say about a decompression bomb: PIL's error names the pixel count it refused."""
    found = re.search(r"\((\d+) pixels\)", str(bomb))
    size = f" ({int(found.group(1)):,} pixels)" if found else ""
    return (f"The {what} is too large to decode{size}: over the {Image.MAX_IMAGE_PIXELS:,}-pixel limit "
            "(a decompression bomb, or a picture far larger than any photo). Send a smaller image.")


def to_bgr(image: Image.Image) -> np.ndarray:
    """PIL RGB -> OpenCV BGR uint8, as Immich's `decode_cv2` does for the face models."""
    return cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR)


def bgr_of(data: ImageInput) -> np.ndarray:
    return data.bgr if isinstance(data, DecodedImage) else to_bgr(decode_image(data))


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Immich's `resize_pil`: bicubic, shorter side to `size`, the other side truncated to int."""
    if image.width < image.height:
        return image.resize((size, int((image.height / image.width) * size)), resample=Image.Resampling.BICUBIC)
    return image.resize((int((image.width / image.height) * size), size), resample=Image.Resampling.BICUBIC)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """Immich's `crop_pil`: left = int(w/2 - size/2)."""
    left = int((image.size[0] / 2) - (size / 2))
    upper = int((image.size[1] / 2) - (size / 2))
    return image.crop((left, upper, left + size, upper + size))


def resize_crop(image: Image.Image, size: int, helper: Executor | None = None) -> Image.Image:
    """Exactly `center_crop(resize_shorter_side(image, size), size)`, for less work.

    PIL resizes in two passes, horizontal then vertical, each rounding to 8 bits, and a pass along an axis
    whose size does not change is skipped. Running the horizontal pass alone, cropping, then the vertical
    pass alone therefore gives the same pixels, and the vertical pass only computes the columns the crop
    keeps. With `helper` (a thread pool; PIL releases the GIL while it resamples) the horizontal pass, most
    of the work, runs as two bands of rows at once: rows are independent in that pass, so the pixels are
    still the same. Checked against the one-call path in tests/test_preprocessing.py.
    """
    width, height = image.size
    if width < height:
        new_w, new_h = size, int((height / width) * size)
    else:
        new_w, new_h = int((width / height) * size), size
    if new_w != width:
        image = _horizontal(image, new_w, helper)
    left = int((new_w / 2) - (size / 2))
    if left != 0 or new_w != size:
        image = image.crop((left, 0, left + size, height))
    if new_h != height:
        image = image.resize((size, new_h), resample=Image.Resampling.BICUBIC)
    upper = int((new_h / 2) - (size / 2))
    return image.crop((0, upper, size, upper + size)) if (upper, new_h) != (0, size) else image


def _horizontal(image: Image.Image, new_w: int, helper: Executor | None) -> Image.Image:
    """PIL's horizontal bicubic pass alone (the height is kept), in two row bands when given a helper."""
    width, height = image.size
    if helper is None or height < 64:
        return image.resize((new_w, height), resample=Image.Resampling.BICUBIC)
    middle = height // 2

    def band(y0: int, y1: int) -> Image.Image:
        return image.crop((0, y0, width, y1)).resize((new_w, y1 - y0), resample=Image.Resampling.BICUBIC)

    lower = helper.submit(band, middle, height)
    out = Image.new(image.mode, (new_w, height))
    out.paste(band(0, middle), (0, 0))
    out.paste(lower.result(), (0, middle))
    return out


def normalize_chw(image: Image.Image, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """/255, (x - mean)/std, HWC -> CHW float32."""
    arr = np.asarray(image, dtype=np.float32) / 255.0
    return np.divide(arr - mean, std, dtype=np.float32).transpose(2, 0, 1)
