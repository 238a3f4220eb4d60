"""Does the `auto` precision check hold beyond its samples? For each vector model, the device's lower
precision (as `auto` would build it) against f32 of the same file: the worst cosine on the check's own
samples (`models/samples.py`), and on inputs it never saw: every photo of ../shared/photos as a 1440 px
JPEG preview through the exact CLIP preprocessing, every face the f32 detector finds in them (aligned as
Immich aligns), and a few hundred phrases. Prints the worst, the 1st percentile and how many fall below
0.9999, so the check's margin (`precision.CHECK_COSINE`) can be judged.

    python bench/bench_precision.py --cache-dir /path/with/ViT-B-32__openai --clip ViT-B-32__openai
    python bench/bench_precision.py --clip tiny-random-clip --face test-scrfd25g-r512 --max-photos 60
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import SHARED, preview_jpeg  # noqa: E402

from immich_ml_desktop.models import samples  # noqa: E402
from immich_ml_desktop.models.engine import Engine  # noqa: E402
from immich_ml_desktop.models.precision import CHECK_COSINE, MIN_COSINE  # noqa: E402
from immich_ml_desktop.models.runtime import native_low_precision, resolve_device  # noqa: E402

WORDS = ("cat dog beach sunset mountain snow car street birthday cake wedding people child grandma table city "
         "night forest river boat plane train flower garden kitchen pasta coffee book phone computer red blue "
         "green old young happy rainy sunny two three a the on in with at of near").split()


def phrases(n: int) -> list[str]:
    rng = np.random.default_rng(0)
    out = list(samples.PHRASES) + ["a photo of a cat", "café au lait", "Straße im Schnee", "猫がソファで寝ている", "x" * 300]
    while len(out) < n:
        out.append(" ".join(rng.choice(WORDS, size=int(rng.integers(1, 12)))))
    return out


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64).reshape(len(a), -1)
    b = b.astype(np.float64).reshape(len(b), -1)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def line(name: str, values: np.ndarray) -> str:
    return (f"{name:<34} n={len(values):>4}  worst {values.min():.6f}  p1 {np.percentile(values, 1):.6f}  "
            f"median {np.median(values):.7f}  below {MIN_COSINE}: {int((values < MIN_COSINE).sum())}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, action="append", default=[])
    parser.add_argument("--clip", default="tiny-random-clip")
    parser.add_argument("--face", default="test-scrfd25g-r512")
    parser.add_argument("--device", default="openvino:CPU")
    parser.add_argument("--max-photos", type=int, default=0, help="0 = every photo")
    parser.add_argument("--phrases", type=int, default=300)
    args = parser.parse_args()
    device = resolve_device(args.device)
    low = native_low_precision(device)
    if low == "f32":
        raise SystemExit(f"{device.id} has no lower precision than f32")
    caches = [*args.cache_dir, SHARED / "models"]
    photos = sorted(p for p in (SHARED / "photos").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    if args.max_photos:
        photos = photos[:: max(1, len(photos) // args.max_photos)][: args.max_photos]
    print(f"{device.description}: {low} against f32; check needs {CHECK_COSINE} on its samples, the guarantee is {MIN_COSINE}")
    with tempfile.TemporaryDirectory() as work, \
            Engine(caches, device, precision="f32", work_dir=Path(work)) as exact, \
            Engine(caches, device, precision=low, work_dir=Path(work)) as fast:
        for name, e in (("f32", exact), (low, fast)):
            print(f"  {name}: " + ", ".join(f"{m['type']} {m['precision']}" for m in [
                {"type": t, "precision": e.get_model(task, t, n).session.precision}  # type: ignore[union-attr]
                for task, t, n in (("clip", "visual", args.clip), ("clip", "textual", args.clip),
                                   ("facial-recognition", "recognition", args.face))]))
        v32, vlo = exact.clip_visual(args.clip), fast.clip_visual(args.clip)
        t32, tlo = exact.clip_textual(args.clip), fast.clip_textual(args.clip)
        r32, rlo = exact.get_model("facial-recognition", "recognition", args.face), fast.get_model("facial-recognition", "recognition", args.face)
        assert v32.session and vlo.session and t32.session and tlo.session and r32.session and rlo.session
        print(line("CLIP image, the check's samples", cosines(v32._calibrate(v32.session), vlo._calibrate(vlo.session))))
        print(line("CLIP text, the check's samples", cosines(t32._calibrate(t32.session), tlo._calibrate(tlo.session))))
        print(line("faces, the check's samples", cosines(r32._calibrate(r32.session), rlo._calibrate(rlo.session))))  # type: ignore[attr-defined]
        images, faces = [], []
        for path in photos:
            try:
                data = preview_jpeg(path)
            except OSError:
                continue
            image = Image.open(io.BytesIO(data)).convert("RGB")
            pixels = v32.transform(image)[None]
            images.append(cosines(v32.embed(pixels), vlo.embed(pixels))[0])
            found = exact.faces(args.face, data, 0.5)
            if found:
                from immich_ml_desktop.models.images import to_bgr

                crops = r32.crops(to_bgr(image), {"landmarks": np.stack([f.landmarks for f in found])})  # type: ignore[attr-defined]
                faces.extend(cosines(r32.embed_crops(crops), rlo.embed_crops(crops)))  # type: ignore[attr-defined]
        texts = phrases(args.phrases)
        text_cos = cosines(np.stack([t32.encode_text(t) for t in texts]), np.stack([tlo.encode_text(t) for t in texts]))
        print(line(f"CLIP image, {len(images)} photos not sampled", np.array(images)))
        print(line(f"CLIP text, {len(texts)} phrases not sampled", text_cos))
        if faces:
            print(line(f"faces, {len(faces)} faces not sampled", np.array(faces)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
