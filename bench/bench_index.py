"""End-to-end indexing speed (what `immich-ml-desktop index` does: scan, decode, CLIP, faces, store) next to
the model-only speed (CLIP visual + faces on pre-decoded previews), measured in the same run, and the ratio.

    python bench/bench_index.py                                   # tiny CLIP pack + SCRFD on ../shared/photos
    python bench/bench_index.py --cache-dir /work/bench-models --clip-model ViT-B-32__openai \
        --extra-cache ../shared/models --limit 60

Both figures use the same warm engine and the same images; medians over --repeats runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("IMMICH_ML_SHARED", ROOT.parent / "shared"))
sys.path.insert(0, str(ROOT))

from immich_ml_desktop.errors import ImageDecodeError  # noqa: E402
from immich_ml_desktop.library.folders import FolderSource, load_preview, scan_folder  # noqa: E402
from immich_ml_desktop.library.store import LibraryStore  # noqa: E402
from immich_ml_desktop.models.engine import Engine  # noqa: E402
from immich_ml_desktop.models.images import DecodedImage  # noqa: E402
from immich_ml_desktop.services.index import IndexJob  # noqa: E402


def photo_set(photos: Path, limit: int | None, work: Path) -> Path:
    """The decodable photos (up to `limit`), linked into one folder so both runs see exactly the same files."""
    folder = work / "photos"
    folder.mkdir()
    n = 0
    for f in sorted(scan_folder(photos), key=lambda f: f.key):
        try:
            load_preview(f.key, 64)
        except ImageDecodeError:
            continue
        target = folder / f"{n:05d}_{Path(f.key).name}"
        try:
            os.link(f.key, target)
        except OSError:
            shutil.copyfile(f.key, target)
        n += 1
        if limit and n >= limit:
            break
    return folder


def model_only(engine: Engine, images: list[DecodedImage], clip_model: str, face_model: str, batch: int,
               min_score: float) -> float:
    """Images/s of CLIP (preprocess + batched embed) and faces (detect + recognise) on decoded previews."""
    clip = engine.clip_visual(clip_model)
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        chunk = images[i : i + batch]
        clip.embed(np.stack([clip.transform(im.pil) for im in chunk]))
        for im in chunk:
            engine.faces(face_model, im, min_score)
    return len(images) / (time.perf_counter() - start)


def end_to_end(engine: Engine, folder: Path, work: Path, run: int, clip_model: str, face_model: str, batch: int,
               workers: int, min_score: float) -> tuple[float, int]:
    """Images/s of the index job on a fresh library (scan, decode, models, store), and images indexed."""
    with LibraryStore(work / f"library-{run}.sqlite3") as store:
        job = IndexJob(store, engine, FolderSource([folder]), clip_model=clip_model, face_model=face_model,
                       face_min_score=min_score, batch_size=batch, decode_workers=workers)
        start = time.perf_counter()
        summary = job.run()
        seconds = time.perf_counter() - start
    return summary.indexed / seconds, summary.indexed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, default=SHARED / "photos")
    ap.add_argument("--cache-dir", type=Path, default=SHARED / "models")
    ap.add_argument("--extra-cache", type=Path, action="append", default=[],
                    help="more model caches (e.g. the shared one for the face pack)")
    ap.add_argument("--clip-model", default="tiny-random-clip")
    ap.add_argument("--face-model", default="test-scrfd25g-r512")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--limit", type=int, help="index at most this many photos")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--decode-workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-score", type=float, default=0.7)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        work = Path(tmp)
        folder = photo_set(args.photos, args.limit, work)
        files = sorted(folder.iterdir())
        caches = [args.cache_dir, *args.extra_cache]
        with Engine(caches, args.device, work_dir=work / "engine") as engine:
            print(f"{len(files)} photos from {args.photos}; CLIP {args.clip_model}, faces {args.face_model}, "
                  f"device {engine.device.id}, batch {args.batch_size}, {args.decode_workers} decode workers, "
                  f"{os.cpu_count()} CPUs")
            t = time.perf_counter()
            images = [DecodedImage(load_preview(f)) for f in files]
            for im in images:
                im.bgr
            decode_rate = len(images) / (time.perf_counter() - t)
            model_only(engine, images[:2], args.clip_model, args.face_model, args.batch_size, args.min_score)  # warm-up
            e2e_rates, model_rates = [], []
            for run in range(args.repeats):
                model_rates.append(model_only(engine, images, args.clip_model, args.face_model, args.batch_size,
                                              args.min_score))
                rate, indexed = end_to_end(engine, folder, work, run, args.clip_model, args.face_model,
                                           args.batch_size, args.decode_workers, args.min_score)
                e2e_rates.append(rate)
                print(f"  run {run + 1}: model-only {model_rates[-1]:.2f} img/s, end-to-end {rate:.2f} img/s "
                      f"({indexed} indexed)")
        model, e2e = statistics.median(model_rates), statistics.median(e2e_rates)
        print(f"decode to preview alone (1 thread): {decode_rate:.2f} img/s")
        print(f"model-only (CLIP visual + faces on decoded previews): {model:.2f} img/s (median)")
        print(f"end-to-end index job (scan, decode, models, store):   {e2e:.2f} img/s (median)")
        print(f"ratio end-to-end / model-only: {e2e / model:.2f}")


if __name__ == "__main__":
    main()
