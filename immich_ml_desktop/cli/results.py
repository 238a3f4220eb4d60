"""`results TASK [--model NAME] --library FILE`: what another task (a model class's own task, OCR) returned
for each indexed photo, as /predict answered it; `--json` exports it whole."""

from __future__ import annotations

import argparse
import json
from typing import Any

from immich_ml_desktop.cli.common import add_json_option, add_library_options, print_json, settings_from_args
from immich_ml_desktop.errors import InvalidInputError


def register(sub: Any) -> None:
    p = sub.add_parser("results", help="what another task returned per photo (indexed with `index --task TASK=MODEL`)")
    p.add_argument("task", help="the task, e.g. ocr or a model plugin's task (`stats` lists those the library holds)")
    p.add_argument("--model", help="only this model's results (default: every model of the task)")
    add_library_options(p, clip=False, faces=False)
    add_json_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from immich_ml_desktop.library.store import LibraryStore

    path = args.library or settings_from_args(args).library_path
    with LibraryStore(path, create=False) as store:
        rows = store.task_results(args.task, args.model)
        held = store.result_counts()
    if not rows and args.task not in held:
        tasks = ", ".join(sorted(held)) or "none yet"
        raise InvalidInputError(
            f"The library {path} holds no {args.task!r} results (tasks it holds: {tasks}). "
            f"Index with `immich-ml-desktop index FOLDER --task {args.task}=MODEL` first."
        )
    if args.json:
        print_json([r.as_dict() for r in rows])
        return 0
    for r in rows:
        print(f"{r.key}\t{r.model}\t{json.dumps(r.result, ensure_ascii=False, separators=(',', ':'))}")
    return 0
