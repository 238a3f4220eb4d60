"""Engine throughput per runtime/device/precision: model-only and end-to-end (JPEG bytes in, vector out).

For CLIP visual, CLIP textual and the face pipeline (detection + recognition of every face), prints
images/s (or texts/s) and p50/p95 latency for each available runtime, the ratio to ONNX Runtime CPU
measured in the same run, and the cosine of each precision's vectors to fp32.

    python bench/bench_engine.py --cache-dir /path/to/cache --clip ViT-B-32__openai --face test-scrfd25g-r512

A full-size CLIP for this: `immich-ml-desktop models export-clip ViT-B-32 openai --random-init`.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("IMMICH_ML_SHARED", ROOT.parent / "shared"))
sys.path.insert(0, str(ROOT))

from immich_ml_desktop.models.base import ModelTask, ModelType  # noqa: E402
from immich_ml_desktop.models.engine import Engine  # noqa: E402
from immich_ml_desktop.models.images import DecodedImage, decode_image  # noqa: E402
from immich_ml_desktop.models.runtime import discover_devices  # noqa: E402

TEXTS = ["a photo of a cat", "sunset over the sea", "Grandma's 80th birthday cake", "two dogs playing in snow",
         "a red car parked on a street", "mountains with snow", "people at a wedding", "a plate of pasta"]


def preview_jpeg(path: Path, short_side: int = 1440) -> bytes:
    """The kind of image Immich's server sends: a JPEG preview whose shorter side is 1440 px."""
    im = Image.open(path).convert("RGB")
    scale = short_side / min(im.size)
    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def timed(fn, items, seconds: float) -> tuple[float, float, float]:
    """Run fn over items (cycling) for ~seconds after one warm-up; (per second, p50 ms, p95 ms)."""
    fn(items[0])
    lat = []
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds or i < 5:
        t = time.perf_counter()
        fn(items[i % len(items)])
        lat.append((time.perf_counter() - t) * 1000)
        i += 1
    total = time.perf_counter() - start
    return i / total, statistics.median(lat), float(np.percentile(lat, 95))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_cache = Path("/work/bench-models") if Path("/work/bench-models/READY").exists() else SHARED / "models"
    ap.add_argument("--cache-dir", type=Path, default=default_cache)
    ap.add_argument("--clip", default="ViT-B-32__openai" if default_cache != SHARED / "models" else "tiny-random-clip")
    ap.add_argument("--face", default="test-scrfd25g-r512")
    ap.add_argument("--face-cache", type=Path, default=SHARED / "models")
    ap.add_argument("--seconds", type=float, default=6.0, help="seconds per measurement")
    ap.add_argument("--batch", type=int, default=8, help="CLIP visual batch size for the batched model-only row")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()

    photos = sorted((SHARED / "photos/photoprism/assets/examples").glob("*.jpg"))[:12]
    previews = [preview_jpeg(p) for p in photos]
    face_photo = preview_jpeg(SHARED / "photos/insightface/t1.jpg")
    print(f"CLIP {args.clip} from {args.cache_dir}; faces {args.face}; {len(previews)} previews of 1440 px; "
          f"{args.seconds:.0f} s per figure; {os.cpu_count()} cores")

    configs = [("cpu", "f32")]
    if any(d.runtime == "openvino" for d in discover_devices()):
        configs += [("openvino:CPU", "f32"), ("openvino:CPU", "bf16"), ("openvino:CPU", "f16")]
    rows: list[tuple[str, str, float, float, float]] = []
    reference: dict[str, np.ndarray] = {}
    cosines: dict[str, list[float]] = {}
    decoded = [DecodedImage(decode_image(p)) for p in previews]
    for device, precision in configs:
        label = f"{device} {precision}" if device != "cpu" else "onnxruntime cpu f32"
        engine = Engine([args.cache_dir, args.face_cache], device, precision=precision, threads=args.threads)
        visual = engine.clip_visual(args.clip)
        pixels = [visual.transform(d.pil)[np.newaxis] for d in decoded]
        r = timed(lambda x: visual.embed(x), pixels, args.seconds)
        rows.append((label, "clip visual, model only", *r))
        batch = np.concatenate([pixels[i % len(pixels)] for i in range(args.batch)])
        visual.embed(batch)
        rate, p50, p95 = timed(lambda x: visual.embed(x), [batch], args.seconds)
        batched = visual._batch_session is not None
        rows.append((label, f"clip visual, model only, batch {args.batch}{'' if batched else ' (runs 1 by 1)'}", rate * args.batch, p50, p95))
        r = timed(lambda b: engine.clip_image(args.clip, b), previews, args.seconds)
        rows.append((label, "clip visual, JPEG bytes -> vector", *r))
        r = timed(lambda t: engine.clip_text(args.clip, t), TEXTS, args.seconds)
        rows.append((label, "clip textual, text -> vector", *r))
        r = timed(lambda b: engine.faces(args.face, b), [face_photo], args.seconds)
        rows.append((label, "faces (6-face photo), JPEG bytes -> faces", *r))

        vecs = np.concatenate([np.stack([engine.clip_image(args.clip, d) for d in decoded[:6]]),
                               np.stack([engine.clip_text(args.clip, t) for t in TEXTS[:4]]),
                               np.stack([f.embedding for f in engine.faces(args.face, face_photo)])])
        if not reference:
            reference["fp32"] = vecs
        else:
            cosines[label] = [cosine(a, b) for a, b in zip(vecs, reference["fp32"])]
        engine.close()

    base = {task: rate for label, task, rate, *_ in rows if label == "onnxruntime cpu f32"}
    print(f"\n{'runtime':<22} {'what':<48} {'per s':>8} {'p50 ms':>8} {'p95 ms':>8} {'x ORT':>6}")
    for label, task, rate, p50, p95 in rows:
        print(f"{label:<22} {task:<48} {rate:8.1f} {p50:8.1f} {p95:8.1f} {rate / base[task]:6.2f}")
    print("\ncosine to ONNX Runtime fp32 (6 images, 4 texts, 6 faces): min / median")
    for label, values in cosines.items():
        print(f"  {label:<22} {min(values):.6f} / {statistics.median(values):.6f}")


if __name__ == "__main__":
    main()
