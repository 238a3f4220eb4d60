"""Options shared by every command and the helpers that turn them into an Engine or Settings."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from immich_ml_desktop.settings import PRECISIONS, Settings


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("models and device")
    g.add_argument("--cache-dir", type=Path, help="model cache in Immich's layout (<cache>/<task>/<name>/...)")
    g.add_argument("--device", help="auto, cpu, cuda, directml, coreml, openvino:CPU, openvino:GPU, ... (see `devices`)")
    g.add_argument("--precision", choices=PRECISIONS, help="OpenVINO inference precision (default auto: the device's "
                   "faster precision for models whose vectors stay interchangeable with Immich's, f32 for the rest)")
    g.add_argument("--threads", type=int, help="threads per model (0 = all cores)")
    g.add_argument("--no-download", action="store_true", help="never download missing models")


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The saved settings with the command's options applied. The file is read once per command (a copy
    each call), so a bad field's warning is said once however many parts of the command ask."""
    loaded = getattr(args, "_saved_settings", None)
    if loaded is None:
        loaded = Settings.load()
        args._saved_settings = loaded
    settings = dataclasses.replace(loaded)
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
    from immich_ml_desktop.app_engine import build_engine

    return build_engine(settings_from_args(args), **overrides)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def add_library_options(parser: argparse.ArgumentParser, *, clip: bool = True, faces: bool = True) -> None:
    """`--library FILE` and the models a library is indexed with (defaults from the settings)."""
    g = parser.add_argument_group("library")
    g.add_argument("--library", type=Path, help="the library file (default: the one in the settings)")
    if clip:
        g.add_argument("--clip-model", help="CLIP model name, e.g. ViT-B-32__openai (default: from the settings)")
    if faces:
        g.add_argument("--face-model", help="face model name, e.g. buffalo_l (default: from the settings)")


def add_task_option(parser: argparse.ArgumentParser) -> None:
    """`--task TASK=MODEL` (repeatable): another task to store per photo, e.g. ocr=PP-OCRv5_mobile."""
    parser.add_argument(
        "--task", dest="tasks", action="append", default=[], metavar="TASK=MODEL",
        help="also run and store another task a model class serves, e.g. ocr=PP-OCRv5_mobile "
             "(repeatable; see `models list --classes`, read back with `results TASK`)",
    )


def task_specs_from_args(args: argparse.Namespace) -> list:  # -> list[TaskSpec] (import kept lazy)
    from immich_ml_desktop.services.index import TaskSpec

    return [TaskSpec.parse(t) for t in getattr(args, "tasks", [])]


def library_settings_from_args(args: argparse.Namespace) -> Settings:
    """`settings_from_args` plus `--library`, `--clip-model` and `--face-model`."""
    settings = settings_from_args(args)
    if getattr(args, "library", None):
        settings.library_path = str(args.library)
    if getattr(args, "clip_model", None):
        settings.clip_model = args.clip_model
    if getattr(args, "face_model", None):
        settings.face_model = args.face_model
    return settings


def open_library(settings: Settings, *, create: bool = True):  # -> LibraryStore (import kept lazy)
    """The library in `settings`; `create` False: an error when there is none (a mistyped --library)."""
    from immich_ml_desktop.library.store import LibraryStore

    return LibraryStore(settings.library_path, create=create)
