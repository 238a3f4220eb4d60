"""`index FOLDER... --library FILE`: scan local folders and compute CLIP vectors and faces for new and
changed photos, with a progress bar on stderr and an optional JSON summary on stdout."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from immich_ml_desktop.cli.common import (
    add_engine_options,
    add_json_option,
    add_library_options,
    add_task_option,
    library_settings_from_args,
    open_library,
    print_json,
    task_specs_from_args,
)
from immich_ml_desktop.errors import InvalidInputError


def register(sub: Any) -> None:
    p = sub.add_parser("index", help="index local folders into the library (CLIP vectors and faces)")
    p.add_argument("folders", nargs="+", metavar="FOLDER", help="folders to scan recursively")
    add_library_options(p)
    p.add_argument("--min-score", type=float, help="face detection threshold (default: from the settings, 0.7)")
    p.add_argument("--face-passes", metavar="LIST",
                   help="the library's own passes where Immich's finds no face, comma-separated, of padded, bright, "
                        "rotated, or 'none' (default: from the settings, all three; rotated costs up to 2 detector "
                        "calls more on each photo without a face)")
    p.add_argument("--no-clip", action="store_true", help="compute faces only")
    p.add_argument("--no-faces", action="store_true", help="compute CLIP vectors only")
    add_task_option(p)
    p.add_argument("--retry-failed", action="store_true", help="try files that failed before again")
    p.add_argument("--workers", type=int, help="photos worked on at once (default: one per core, at most 4)")
    add_engine_options(p)
    add_json_option(p)
    p.set_defaults(func=run)


def _passes(text: str) -> list[str]:
    """`--face-passes`: 'none' or names separated by commas, each one of the library's passes."""
    from immich_ml_desktop.services.face_passes import check_passes

    names = [] if text.strip().lower() == "none" else [n.strip() for n in text.split(",") if n.strip()]
    return check_passes(names, what="--face-passes")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from immich_ml_desktop.library.folders import FolderSource
    from immich_ml_desktop.app_engine import build_engine
    from immich_ml_desktop.models.runtime import default_parallel
    from immich_ml_desktop.services.index import IndexJob, IndexProgress

    if args.min_score is not None and not 0.0 <= args.min_score <= 1.0:
        raise InvalidInputError(f"--min-score must be between 0 and 1 (the default is 0.7), not {args.min_score:g}.")
    if args.workers is not None and args.workers < 1:
        raise InvalidInputError(f"--workers must be at least 1, not {args.workers}.")
    passes = None if args.face_passes is None else _passes(args.face_passes)
    settings = library_settings_from_args(args)
    source = FolderSource(args.folders)
    bar = tqdm(total=0, unit="img", file=sys.stderr, disable=None, dynamic_ncols=True)

    def progress(p: IndexProgress) -> None:
        if bar.total != p.total:
            bar.total = p.total
        bar.n = p.done
        bar.set_description(p.state, refresh=False)
        bar.set_postfix_str(f"{p.failed} failed" if p.failed else "", refresh=False)
        bar.refresh()

    parallel = args.workers or default_parallel()
    with open_library(settings) as store, build_engine(settings, parallel=parallel) as engine:
        job = IndexJob(
            store, engine, source,
            clip_model=None if args.no_clip else settings.clip_model,
            face_model=None if args.no_faces else settings.face_model,
            face_min_score=settings.face_min_score if args.min_score is None else args.min_score,
            face_passes=settings.face_passes if passes is None else passes,
            progress=progress, workers=args.workers, retry_failed=args.retry_failed, tasks=task_specs_from_args(args),
        )
        previous = signal.signal(signal.SIGINT, lambda *_: job.cancel())  # Ctrl-C keeps what is done
        try:
            summary = job.run()
        finally:
            signal.signal(signal.SIGINT, previous)
            bar.close()
        stats = store.stats()
    if args.json:
        print_json({**summary.to_dict(), "library": str(store.path), "library_stats": stats})
    else:
        print(
            f"{summary.indexed} indexed, {summary.failed} failed, {summary.faces} faces"
            + (f", {summary.results} task results" if summary.results else "")
            + f" ({summary.new} new, {summary.changed} changed, {summary.removed} removed, {summary.unchanged} unchanged) "
            f"in {summary.seconds:.1f} s, {summary.images_per_second:.1f} images/s"
            + (" - cancelled" if summary.cancelled else "")
        )
        if summary.failed:
            print("see the reasons with: immich-ml-desktop stats --library " + str(store.path))
    return 130 if summary.cancelled else 0
