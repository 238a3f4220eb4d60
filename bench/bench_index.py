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
from concurrent.futures import ThreadPoolExecutor
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
from immich_ml_desktop.models.runtime import default_parallel  # noqa: E402
from immich_ml_desktop.services.face_passes import detect_faces_with_fallback  # noqa: E402
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


def model_only(engine: Engine, images: list[DecodedImage], clip_model: str | None, face_model: str | None,
               min_score: float) -> float:
    """Images/s of the models alone on decoded previews: CLIP (preprocess + embed) and faces (detect +
    recognise, with the library's padded second pass), `engine.parallel` images at a time."""
    clip = engine.clip_visual(clip_model) if clip_model else None

    def one(im: DecodedImage) -> None:
        if clip is not None:
            clip.embed(clip.transform(im.pil)[np.newaxis])
        if face_model:
            detect_faces_with_fallback(engine, face_model, im, min_score)

    start = time.perf_counter()
    with ThreadPoolExecutor(engine.parallel) as pool:
        list(pool.map(one, images))
    return len(images) / (time.perf_counter() - start)


def end_to_end(engine: Engine, folder: Path, work: Path, run: int, clip_model: str | None, face_model: str | None,
               workers: int | None, min_score: float) -> tuple[float, int]:
    """Images/s of the index job on a fresh library (scan, decode, models, store), and images indexed."""
    with LibraryStore(work / f"library-{run}.sqlite3") as store:
        job = IndexJob(store, engine, FolderSource([folder]), clip_model=clip_model, face_model=face_model,
                       face_min_score=min_score, workers=workers)
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
    ap.add_argument("--clip-model", default="tiny-random-clip", help="'' for none")
    ap.add_argument("--face-model", default="test-scrfd25g-r512", help="'' for none")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--parallel", type=int, default=default_parallel(), help="engine's parallel calls")
    ap.add_argument("--workers", type=int, help="index job workers (default: the job's own)")
    ap.add_argument("--limit", type=int, help="index at most this many photos")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-score", type=float, default=0.7)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        work = Path(tmp)
        folder = photo_set(args.photos, args.limit, work)
        files = sorted(folder.iterdir())
        caches = [args.cache_dir, *args.extra_cache]
        clip_model, face_model = args.clip_model or None, args.face_model or None
        with Engine(caches, args.device, precision=args.precision, parallel=args.parallel,
                    work_dir=work / "engine") as engine:
            print(f"{len(files)} photos from {args.photos}; CLIP {clip_model}, faces {face_model}, "
                  f"device {engine.device.id}, precision {args.precision}, {engine.parallel} parallel calls, "
                  f"{os.cpu_count()} CPUs")
            t = time.perf_counter()
            images = [DecodedImage(load_preview(f)) for f in files]
            for im in images:
                _ = im.bgr  # decode now, not inside the timed run
            decode_rate = len(images) / (time.perf_counter() - t)
            model_only(engine, images[:4], clip_model, face_model, args.min_score)  # warm-up
            print("loaded:", ", ".join(f"{m['type']} {m['name']} {m['precision']}" for m in engine.loaded_models()))
            e2e_rates, model_rates = [], []
            for run in range(args.repeats):
                model_rates.append(model_only(engine, images, clip_model, face_model, args.min_score))
                rate, indexed = end_to_end(engine, folder, work, run, clip_model, face_model, args.workers,
                                           args.min_score)
                e2e_rates.append(rate)
                print(f"  run {run + 1}: model-only {model_rates[-1]:.2f} img/s, end-to-end {rate:.2f} img/s "
                      f"({indexed} indexed)")
        model, e2e = statistics.median(model_rates), statistics.median(e2e_rates)
        print(f"decode to preview alone (1 thread): {decode_rate:.2f} img/s")
        print(f"model-only (the same models on decoded previews):   {model:.2f} img/s (median)")
        print(f"end-to-end index job (scan, decode, models, store):   {e2e:.2f} img/s (median)")
        print(f"ratio end-to-end / model-only: {e2e / model:.2f}")


if __name__ == "__main__":
    main()
