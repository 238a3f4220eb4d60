"""Engine throughput per runtime/device/precision: model-only and end-to-end (JPEG bytes in, vector out).

For CLIP visual, CLIP textual and the face pipeline (detection + recognition of every face) it prints,
for each available runtime and precision:
- one call at a time: calls/s and p50/p95 latency (what one request waits);
- N calls at once (`--callers`, default one per core) on an engine built for them (OpenVINO streams,
  ONNX Runtime threads split between callers): calls/s (what a busy server or the index job gets);
- the ratio to ONNX Runtime CPU f32 measured in the same run, and the cosine of each configuration's
  vectors to ONNX Runtime f32 (faces matched by box, so a reordering is not counted as drift).

    python bench/bench_engine.py --cache-dir /path/to/cache --clip ViT-B-32__openai --face test-scrfd25g-r512

A full-size CLIP for this: `immich-ml-desktop models export-clip ViT-B-32 --random-init --name ViT-B-32__openai`.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from collections.abc import Callable

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("IMMICH_ML_SHARED", ROOT.parent / "shared"))
sys.path.insert(0, str(ROOT))

from immich_ml_desktop.models.engine import Engine  # noqa: E402
from immich_ml_desktop.models.images import DecodedImage, decode_image  # noqa: E402
from immich_ml_desktop.models.runtime import default_parallel, discover_devices  # noqa: E402

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


def timed(fn: Callable, items: list, seconds: float) -> tuple[float, float, float]:
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


def timed_parallel(fn: Callable, items: list, seconds: float, callers: int, warm_up: float = 2.0) -> float:
    """Calls per second with `callers` threads calling fn back to back, counted for ~seconds after a
    warm-up (new threads get new infer requests, whose first calls are slow)."""
    counts = [0] * callers
    begin = time.perf_counter() + warm_up
    stop = begin + seconds

    def work(k: int) -> None:
        i = k
        while (now := time.perf_counter()) < stop:
            fn(items[i % len(items)])
            if now >= begin:
                counts[k] += 1
            i += callers

    threads = [threading.Thread(target=work, args=(k,)) for k in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / seconds


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def vectors(engine: Engine, clip: str, face: str, decoded: list[DecodedImage], face_photo: bytes) -> dict[str, np.ndarray]:
    faces = sorted(engine.faces(face, face_photo), key=lambda f: tuple(f.box))
    return {
        "images": np.stack([engine.clip_image(clip, d) for d in decoded[:6]]),
        "texts": np.stack([engine.clip_text(clip, t) for t in TEXTS[:4]]),
        "faces": np.stack([f.embedding for f in faces]),
        "boxes": np.stack([f.box for f in faces]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache-dir", type=Path, action="append", help="model caches (default ../shared/models)")
    ap.add_argument("--clip", default=None, help="CLIP pack (default ViT-B-32__openai if present, else the tiny one)")
    ap.add_argument("--face", default="test-scrfd25g-r512")
    ap.add_argument("--seconds", type=float, default=4.0, help="seconds per measurement")
    ap.add_argument("--callers", type=int, default=default_parallel(), help="calls at once for the throughput rows")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    caches = args.cache_dir or [SHARED / "models"]
    if SHARED / "models" not in caches:
        caches.append(SHARED / "models")
    clip = args.clip or ("ViT-B-32__openai" if any((c / "clip/ViT-B-32__openai").is_dir() for c in caches) else "tiny-random-clip")

    photos = sorted((SHARED / "photos/photoprism/assets/examples").glob("*.jpg"))[:12]
    previews = [preview_jpeg(p) for p in photos]
    face_photo = preview_jpeg(SHARED / "photos/insightface/t1.jpg")
    print(f"CLIP {clip}; faces {args.face} (6-face photo); {len(previews)} previews of 1440 px; "
          f"{args.seconds:.0f} s per figure; {os.cpu_count()} cores; {args.callers} callers for the throughput rows")

    configs = [("cpu", "f32")]
    if any(d.runtime == "openvino" for d in discover_devices()):
        configs += [("openvino:CPU", p) for p in ("f32", "bf16", "f16", "auto")]
    rows: list[tuple[str, str, float, float, float, float]] = []
    reference: dict[str, np.ndarray] = {}
    cosines: dict[str, dict[str, float]] = {}
    used: dict[str, str] = {}
    decoded = [DecodedImage(decode_image(p)) for p in previews]
    for device, precision in configs:
        label = f"{'onnxruntime' if device == 'cpu' else device} {precision}"
        measures: dict[str, tuple[float, float, float]] = {}
        for callers in (1, args.callers):
            engine = Engine(caches, device, precision=precision, threads=args.threads, parallel=callers)
            visual = engine.clip_visual(clip)
            pixels = [visual.transform(d.pil)[np.newaxis] for d in decoded]
            tasks: dict[str, tuple[Callable, list]] = {
                "clip visual, model only": (visual.embed, pixels),
                "clip visual, JPEG bytes -> vector": (lambda b, engine=engine: engine.clip_image(clip, b), previews),
                "clip textual, text -> vector": (lambda t, engine=engine: engine.clip_text(clip, t), TEXTS),
                "faces, JPEG bytes -> boxes + vectors": (lambda b, engine=engine: engine.faces(args.face, b), [face_photo]),
            }
            for task, (fn, items) in tasks.items():
                if callers == 1:
                    measures[task] = timed(fn, items, args.seconds)
                else:
                    rows.append((label, task, *measures[task], timed_parallel(fn, items, args.seconds, callers)))
            if callers == 1:
                vecs = vectors(engine, clip, args.face, decoded, face_photo)
                used[label] = ", ".join(f"{m['type']} {m['precision']}" for m in engine.loaded_models())
                if not reference:
                    reference = vecs
                else:
                    same_boxes = vecs["boxes"].shape == reference["boxes"].shape and np.abs(vecs["boxes"] - reference["boxes"]).max() <= 1
                    cosines[label] = {
                        k: min(cosine(a, b) for a, b in zip(vecs[k], reference[k])) for k in ("images", "texts", "faces")
                    } | {"boxes within 1 px": float(same_boxes)}
            engine.close()

    base = {task: (single, many) for label, task, single, _, _, many in rows if label == "onnxruntime f32"}
    print(f"\n{'runtime':<22} {'what':<38} {'1 call/s':>8} {'p50 ms':>7} {'p95 ms':>7} {f'{args.callers} calls/s':>10} "
          f"{'x ORT':>6} {f'x ORT@{args.callers}':>8}")
    for label, task, single, p50, p95, many in rows:
        b1, bn = base[task]
        print(f"{label:<22} {task:<38} {single:8.1f} {p50:7.1f} {p95:7.1f} {many:10.1f} {single / b1:6.2f} {many / bn:8.2f}")
    print("\nprecision each configuration ran the models in:")
    for label, text in used.items():
        print(f"  {label:<22} {text}")
    print("\nworst cosine to ONNX Runtime f32 (6 images, 4 texts, the 6 faces matched by box):")
    for label, values in cosines.items():
        print(f"  {label:<22} " + ", ".join(f"{k} {v:.6f}" if k != "boxes within 1 px" else f"{k}: {'yes' if v else 'NO'}"
                                             for k, v in values.items()))


if __name__ == "__main__":
    main()
