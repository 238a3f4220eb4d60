"""Real inputs for the `auto` precision check (`precision.py`): photos, phrases and an aligned face.

The photos come from the installed packages themselves (scikit-image's sample data, insightface's sample
images), so the check needs no test data and no network. A missing file only means the check cannot run
and the model stays in f32.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from immich_ml_desktop.errors import ModelNotFoundError

# (package, file inside it): everyday scenes and faces, public domain or the packages' own samples.
_PHOTOS = [
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/rocket.jpg"),
    ("insightface", "data/images/t1.jpg"),
]
_FACE = ("insightface", "data/images/Tom_Hanks_54745.png")  # an aligned 112x112 face crop
SAMPLE_FILES = [*_PHOTOS, _FACE]  # what an installer must carry (installer/immich-ml-desktop.spec)

PHRASES = [
    "a photo of a cat sleeping on a sofa",
    "sunset over the sea",
    "Grandma's 80th birthday cake!",
    "two dogs playing in the snow",
    "a red car parked on a narrow street",
]


def _package_file(package: str, rel: str) -> Path:
    spec = importlib.util.find_spec(package)
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        path = Path(root) / rel
        if path.is_file():
            return path
    raise ModelNotFoundError(f"Sample input {package}/{rel} is not installed.")


@lru_cache(maxsize=1)
def photos() -> tuple[Image.Image, ...]:
    """A handful of RGB photos of different kinds (the first ones that are installed, at least one)."""
    found = []
    for package, rel in _PHOTOS:
        try:
            with Image.open(_package_file(package, rel)) as im:
                found.append(im.convert("RGB"))
        except (ModelNotFoundError, OSError):
            continue
    if not found:
        raise ModelNotFoundError("No sample photos are installed for the precision check.")
    return tuple(found)


@lru_cache(maxsize=1)
def face_crops() -> tuple[np.ndarray, ...]:
    """Aligned 112x112 BGR face crops: the sample face, mirrored, and darker (as faces in dim rooms)."""
    with Image.open(_package_file(*_FACE)) as im:
        bgr = np.ascontiguousarray(np.asarray(im.convert("RGB"))[:, :, ::-1])
    mirrored = np.ascontiguousarray(bgr[:, ::-1])
    darker = (bgr.astype(np.float32) * 0.55).astype(np.uint8)
    return bgr, mirrored, darker
