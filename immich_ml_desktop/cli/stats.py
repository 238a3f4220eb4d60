"""`stats --library FILE`: what the library holds (assets, indexed, failed, faces, clip, other tasks' results)
and why files failed."""

from __future__ import annotations

import argparse
from typing import Any

from immich_ml_desktop.cli.common import add_json_option, add_library_options, print_json, settings_from_args


def register(sub: Any) -> None:
    p = sub.add_parser("stats", help="library counts and failures with their reasons")
    add_library_options(p)
    add_json_option(p)
    p.set_defaults(func=run)


def _answer_cache(max_mb: int) -> dict[str, Any] | None:
    """What the answer cache holds (`immich send` answers Immich from it), without creating it."""
    from immich_ml_desktop.paths import answer_cache_path
    from immich_ml_desktop.server.answer_cache import AnswerCache

    path = answer_cache_path()
    if max_mb <= 0 or not path.is_file():
        return None
    cache = AnswerCache(path, max_bytes=max_mb * 2**20)
    try:
        held = cache.stats()
    finally:
        cache.close()
    return {"answers": held.answers, "index": held.by_origin.get("index", 0), "bytes": held.bytes,
            "max_bytes": held.max_bytes, "path": str(path)}


def run(args: argparse.Namespace) -> int:
    from immich_ml_desktop.library.store import LibraryStore

    settings = settings_from_args(args)  # read once: a bad field's warning is said once
    path = args.library or settings.library_path
    # Counts cover every model unless the user names one: a library may hold several.
    with LibraryStore(path, create=False) as store:  # a mistyped path is named, not created empty
        counts = store.stats(clip_model=args.clip_model, face_model=args.face_model)
        failures = [
            {"path": f.key, "source": f.source, "task": f.task, "model": f.model, "reason": f.reason}
            for f in store.failures()
            if (not args.clip_model or f.task != "clip" or f.model == args.clip_model)
            and (not args.face_model or f.task != "faces" or f.model == args.face_model)
        ]
        results = store.result_counts()  # other tasks (a model class's own, OCR): assets with a result per model
        models = {"clip": store.clip_models(), "faces": store.face_models(), **{t: sorted(m) for t, m in results.items()}}
    answers = _answer_cache(settings.answer_cache_mb)
    if args.json:
        print_json({**counts, "results": results, "models": models, "failures": failures, "library": str(path),
                    "answer_cache": answers})
        return 0
    print(f"library  {path}")
    for key, value in counts.items():
        print(f"{key:<8} {value}")
    for task, per_model in results.items():
        print(f"{task} results: " + ", ".join(f"{n} ({model})" for model, n in per_model.items()))
    for task, names in models.items():
        print(f"{task} models: {', '.join(names) or '-'}")
    if answers:
        print(f"answer cache {answers['answers']} answers for Immich's requests ({answers['index']} from indexing), "
              f"{answers['bytes'] / 2**20:.0f} of {answers['max_bytes'] / 2**20:.0f} MB, {answers['path']} "
              "(clearing it loses only time)")
    seen: set[str] = set()
    for f in failures:
        if f["path"] not in seen:  # one line per file, not per model
            seen.add(f["path"])
            print(f"failed   {f['path']}: {f['reason']}")
    return 0
