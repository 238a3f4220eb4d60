"""CLIP preprocessing spends less and keeps Immich's exact pixels: `resize_crop` (horizontal pass alone, crop,
vertical pass alone; optionally in two bands of rows on a helper thread) gives the pixels of Immich's own
`resize_pil` + `crop_pil` run under Immich's own Pillow (12.2, in the kit's venv), on every shape that
matters (landscape, portrait, square, smaller than the crop, odd sizes) and on real photos.

Pillow 13 (what a fresh install of this app gets) resamples some portrait shapes vertically first, so its
one-call resize no longer gives Immich's pixels there; `resize_crop` always runs the passes in the order
Pillow 12 and Immich do.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from immich_ml_desktop.models.images import center_crop, resize_crop, resize_shorter_side

KIT_WORK = Path(os.environ.get("IMMICH_KIT_WORK", "/var/tmp/immich-kit"))
IMMICH_PYTHON = KIT_WORK / "ml" / "venv" / "bin" / "python"
IMMICH_SRC = KIT_WORK / "ml" / "src"

SHAPES = [(2080, 1440, 224), (1440, 2160, 224), (1440, 1440, 224), (1919, 1441, 256), (301, 1999, 224),
          (970, 2204, 224), (200, 150, 224), (224, 224, 224), (225, 224, 224), (3000, 65, 224), (640, 480, 336),
          (480, 640, 224)]
LANDSCAPE = [s for s in SHAPES if s[0] >= s[1]]  # Pillow 12 and 13 agree on these

# Immich's transforms, in its own venv, on the PNGs given; prints the sha256 of each result's pixels.
_IMMICH_SCRIPT = """
import hashlib, importlib.util, json, sys
import numpy as np
from PIL import Image
spec = importlib.util.spec_from_file_location("transforms", "immich_ml/models/transforms.py")  # not the package:
transforms = importlib.util.module_from_spec(spec)  # its __init__ loads every model runtime
spec.loader.exec_module(transforms)
crop_pil, resize_pil = transforms.crop_pil, transforms.resize_pil
out = []
for path, size in json.loads(sys.argv[1]):
    im = Image.open(path).convert("RGB")
    out.append(hashlib.sha256(np.asarray(crop_pil(resize_pil(im, size), size)).tobytes()).hexdigest())
print(json.dumps(out))
"""


def _noise(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    # sharp detail (noise) over smooth structure: every filter tap and the 8-bit clipping matter
    smooth = Image.fromarray(rng.integers(0, 256, (max(2, height // 40), max(2, width // 40), 3), dtype=np.uint8))
    base = np.asarray(smooth.resize((width, height), Image.Resampling.BILINEAR), dtype=np.int16)
    return Image.fromarray(np.clip(base + rng.integers(-90, 90, (height, width, 3)), 0, 255).astype(np.uint8))


def _sha(image: Image.Image) -> str:
    return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def helper():
    with ThreadPoolExecutor(1) as pool:
        yield pool


@pytest.mark.parametrize("width,height,size", LANDSCAPE)
def test_same_pixels_as_one_call_resize_and_crop(width: int, height: int, size: int, helper: ThreadPoolExecutor) -> None:
    image = _noise(width, height, seed=width * height)
    expected = np.asarray(center_crop(resize_shorter_side(image, size), size))
    assert expected.shape == (size, size, 3)
    assert np.array_equal(np.asarray(resize_crop(image, size)), expected)
    assert np.array_equal(np.asarray(resize_crop(image, size, helper)), expected)


def test_same_pixels_as_immichs_own_code(tmp_path: Path, photos_dir: Path, helper: ThreadPoolExecutor) -> None:
    if not IMMICH_PYTHON.exists():
        pytest.skip(f"Immich's ML service is not built here ({IMMICH_PYTHON}; ../shared/immich-kit/ml-build.sh)")
    cases: list[tuple[str, int, Image.Image]] = []
    for width, height, size in SHAPES:
        path = tmp_path / f"{width}x{height}.png"
        _noise(width, height, seed=width * height).save(path)
        cases.append((str(path), size, Image.open(path).convert("RGB")))
    for path in [*sorted(photos_dir.glob("*/*.jpg"))[:4], *sorted(photos_dir.glob("*/*/*/*.jpg"))[:4]]:
        cases.append((str(path), 224, Image.open(path).convert("RGB")))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    answer = subprocess.run(
        [str(IMMICH_PYTHON), "-c", _IMMICH_SCRIPT, json.dumps([(p, s) for p, s, _ in cases])],
        cwd=IMMICH_SRC, env=env, capture_output=True, text=True, check=True, timeout=120,
    )
    immich = json.loads(answer.stdout)
    ours = [_sha(resize_crop(im, size, helper if i % 2 else None)) for i, (_, size, im) in enumerate(cases)]
    mismatched = [cases[i][0] for i in range(len(cases)) if ours[i] != immich[i]]
    assert mismatched == []
