"""Options shared by every command and the helpers that turn them into an Engine or Settings."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from immich_ml_desktop.settings import PRECISIONS, Settings


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("models and device")
    g.add_argument("--cache-dir", type=Path, help="model cache in Immich's layout (<cache>/<task>/<name>/...)")
    g.add_argument("--device", help="auto, cpu, cuda, directml, coreml, openvino:CPU, openvino:GPU, ... (see `devices`)")
    g.add_argument("--precision", choices=PRECISIONS, help="OpenVINO inference precision (default f32)")
    g.add_argument("--threads", type=int, help="threads per model (0 = all cores)")
    g.add_argument("--no-download", action="store_true", help="never download missing models")


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = Settings.load()
    if getattr(args, "cache_dir", None):
        settings.model_cache_dir = str(args.cache_dir)
    if getattr(args, "device", None):
        settings.device = args.device
    if getattr(args, "precision", None):
        settings.precision = args.precision
    if getattr(args, "threads", None) is not None:
        settings.threads = args.threads
    if getattr(args, "no_download", False):
        settings.allow_downloads = False
    return settings


def engine_from_args(args: argparse.Namespace, **overrides: Any):  # -> Engine (import kept lazy)
    from immich_ml_desktop.models.engine import Engine

    return Engine.from_settings(settings_from_args(args), **overrides)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")
