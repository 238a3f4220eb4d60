"""`search TEXT --library FILE`: the library's photos ranked by how well they match a phrase (CLIP)."""

from __future__ import annotations

import argparse
from typing import Any

from immich_ml_desktop.cli.common import (
    add_engine_options,
    add_json_option,
    add_library_options,
    library_settings_from_args,
    open_library,
    print_json,
)
from immich_ml_desktop.errors import InvalidInputError


def register(sub: Any) -> None:
    p = sub.add_parser("search", help="find photos in the library by a phrase")
    p.add_argument("text", help="what to look for, e.g. 'a dog on the beach'")
    p.add_argument("--limit", type=int, default=20, help="how many results (default 20)")
    p.add_argument("--language", help="language code for multilingual models (e.g. de)")
    add_library_options(p, faces=False)
    add_engine_options(p)
    add_json_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from immich_ml_desktop.library.search import ClipSearch
    from immich_ml_desktop.app_engine import build_engine

    if args.limit < 1:
        raise InvalidInputError("--limit must be at least 1.")
    settings = library_settings_from_args(args)
    with open_library(settings, create=False) as store:
        models = store.clip_models()
        if settings.clip_model not in models:
            hint = f"search with --clip-model {models[0]}" if models else "index some folders first"
            raise InvalidInputError(
                f"The library {store.path} has no CLIP vectors of {settings.clip_model}; {hint}."
            )
        with build_engine(settings) as engine:
            hits = ClipSearch(store, engine, settings.clip_model).search(args.text, args.limit, args.language)
    results = [{"path": h.asset.key, "source": h.asset.source, "asset_id": h.asset.id, "score": round(h.score, 6)}
               for h in hits]
    if args.json:
        print_json({"query": args.text, "model": settings.clip_model, "results": results})
    else:
        for r in results:
            print(f"{r['score']:.4f}  {r['path']}")
    return 0
