"""`predict`: print exactly the JSON Immich's `/predict` would answer for the given entries."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from immich_ml_desktop.cli.common import add_engine_options, engine_from_args
from immich_ml_desktop.errors import InvalidInputError
from immich_ml_desktop.models.predict import to_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="answer one /predict request locally and print the JSON")
    p.add_argument("--entries", required=True, help='JSON, e.g. \'{"clip":{"visual":{"modelName":"ViT-B-32__openai"}}}\'')
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", type=Path, help="image file (sent as Immich sends a preview)")
    src.add_argument("--text", help="search text (clip textual)")
    add_engine_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    image = None
    if args.image is not None:
        try:
            image = args.image.read_bytes()
        except OSError as e:
            raise InvalidInputError(f"Cannot read image {args.image}: {e.strerror or e}.") from None
    with engine_from_args(args, model_ttl=0) as engine:
        response = engine.predict_entries(args.entries, image=image, text=args.text)
    sys.stdout.buffer.write(to_json(response) + b"\n")
    return 0
