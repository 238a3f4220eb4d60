"""Where a CLIP image request's preprocessing goes, per stage, and what a fast path would give.

For a 1440 px JPEG preview (what Immich sends): JPEG decode, Immich's one-call bicubic resize + centre crop
(`resize_pil` + `crop_pil`) against ours (`resize_crop`: the same pixels, vertical pass only on the kept
columns; and with the horizontal pass in two bands when a core is idle), and normalisation. Medians of CPU
time (what throughput costs) and of wall time (what a lone request waits), interleaved so load hits all
alike.

Then the fast path: decoding the JPEG at a reduced DCT scale (1/2, 1/4: libjpeg-turbo's draft mode) before
the same resize, with its cosine to the exact path on every photo of ../shared/photos (as 1440 px previews)
for the given CLIP model. It may be used only where that cosine stays >= 0.9999.

    python bench/bench_preprocess.py --cache-dir /path/with/ViT-B-32__openai --clip ViT-B-32__openai
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from collections.abc import Callable

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import SHARED, preview_jpeg  # noqa: E402

from immich_ml_desktop.models.engine import Engine  # noqa: E402
from immich_ml_desktop.models.images import center_crop, normalize_chw, resize_crop, resize_shorter_side  # noqa: E402


def timed(stages: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """(median CPU ms, median wall ms) per stage, the stages interleaved."""
    cpu: dict[str, list[float]] = {k: [] for k in stages}
    wall: dict[str, list[float]] = {k: [] for k in stages}
    for fn in stages.values():
        fn()
    for _ in range(repeats):
        for name, fn in stages.items():
            c, w = time.thread_time(), time.perf_counter()  # thread_time: this thread; helper bands add below
            fn()
            cpu[name].append((time.thread_time() - c) * 1000)
            wall[name].append((time.perf_counter() - w) * 1000)
    return {k: (statistics.median(cpu[k]), statistics.median(wall[k])) for k in stages}


def draft_decode(data: bytes, scale: int) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (image.width // scale, image.height // scale))
    image.load()
    return image.convert("RGB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, action="append", default=[])
    parser.add_argument("--clip", default="tiny-random-clip")
    parser.add_argument("--image", type=Path, default=SHARED / "photos" / "insightface" / "t1.jpg")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--max-photos", type=int, default=0, help="photos for the fast path's cosines (0 = all)")
    args = parser.parse_args()

    data = preview_jpeg(args.image)
    image = Image.open(io.BytesIO(data))
    image.load()
    size = 224
    mean = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
    std = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
    cropped = resize_crop(image, size)
    helper = ThreadPoolExecutor(1)
    print(f"{args.image.name} as a {image.width}x{image.height} JPEG preview ({len(data) // 1024} KiB), crop {size}")
    stages = {
        "decode (PIL, as Immich)": lambda: Image.open(io.BytesIO(data)).load(),
        "resize + crop, Immich's one call": lambda: center_crop(resize_shorter_side(image, size), size),
        "resize + crop, ours": lambda: resize_crop(image, size),
        "resize + crop, ours, 2 bands": lambda: resize_crop(image, size, helper),
        "normalise": lambda: normalize_chw(cropped, mean, std),
        "decode at 1/2 DCT scale": lambda: draft_decode(data, 2),
        "decode at 1/4 DCT scale": lambda: draft_decode(data, 4),
    }
    half, quarter = draft_decode(data, 2), draft_decode(data, 4)
    stages["resize + crop from 1/2"] = lambda: resize_crop(half, size)
    stages["resize + crop from 1/4"] = lambda: resize_crop(quarter, size)
    results = timed(stages, args.repeats)
    print(f"{'stage':<34} {'CPU ms':>7} {'wall ms':>8}   (medians of {args.repeats}, interleaved)")
    for name, (cpu, wall) in results.items():
        note = "  (CPU of the calling thread only)" if "2 bands" in name else ""
        print(f"{name:<34} {cpu:>7.2f} {wall:>8.2f}{note}")
    exact = results["decode (PIL, as Immich)"][0] + results["resize + crop, Immich's one call"][0]
    ours = results["decode (PIL, as Immich)"][0] + results["resize + crop, ours"][0]
    print(f"decode + resize CPU: Immich's way {exact:.1f} ms, ours {ours:.1f} ms ({ours / exact:.2f}x); "
          f"fast path 1/2 {results['decode at 1/2 DCT scale'][0] + results['resize + crop from 1/2'][0]:.1f} ms, "
          f"1/4 {results['decode at 1/4 DCT scale'][0] + results['resize + crop from 1/4'][0]:.1f} ms")

    photos = sorted(p for p in (SHARED / "photos").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if args.max_photos:
        photos = photos[:: max(1, len(photos) // args.max_photos)][: args.max_photos]
    cos: dict[int, list[float]] = {2: [], 4: []}
    with Engine([*args.cache_dir, SHARED / "models"], "auto", precision="f32") as engine:
        model = engine.clip_visual(args.clip)
        for path in photos:
            try:
                preview = preview_jpeg(path)
            except OSError:
                continue
            full = Image.open(io.BytesIO(preview)).convert("RGB")
            if min(full.size) < 4 * size:
                continue  # too small to be decoded at 1/4 and still cover the crop
            v = model.embed(model.transform(full)[None])[0]
            for scale in cos:
                w = model.embed(model.transform(draft_decode(preview, scale))[None])[0]
                cos[scale].append(float(v @ w / np.linalg.norm(v) / np.linalg.norm(w)))
    for scale, values in cos.items():
        a = np.array(values)
        print(f"fast path 1/{scale} vs exact, {args.clip} f32, {len(a)} photos: worst {a.min():.6f}, "
              f"p1 {np.percentile(a, 1):.6f}, median {np.median(a):.7f}, below 0.9999: {int((a < 0.9999).sum())}")
    helper.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
