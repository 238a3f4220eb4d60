"""Where the app keeps its files: config, derived caches, the model cache and the library.

`IMMICH_ML_DESKTOP_CONFIG_DIR` and `IMMICH_ML_DESKTOP_CACHE_DIR` override the platform directories
(tests and portable installs use them); `MACHINE_LEARNING_CACHE_FOLDER` (Immich's own variable) the
model cache.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import platformdirs

APP_NAME = "immich-ml-desktop"


def config_dir() -> Path:
    env = os.environ.get("IMMICH_ML_DESKTOP_CONFIG_DIR")
    return Path(env) if env else Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def app_cache_dir() -> Path:
    """Where the app keeps what it derives (compiled models, batch-axis copies, thumbnails)."""
    env = os.environ.get("IMMICH_ML_DESKTOP_CACHE_DIR")
    return Path(env) if env else Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def default_model_cache_dir() -> Path:
    """The model cache in Immich's layout (`<cache>/<task>/<name>/...`)."""
    env = os.environ.get("MACHINE_LEARNING_CACHE_FOLDER")  # the variable Immich's own service reads
    return Path(env) if env else app_cache_dir() / "models"


def answer_cache_path() -> Path:
    """The answers kept for Immich's `/predict` requests (derived: clearing it loses only time)."""
    return app_cache_dir() / "answers.sqlite3"


def default_library_path() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "library.sqlite3"



def clear_derived_caches(keep: Sequence[Path | str] = ()) -> tuple[int, list[str]]:
    """Empty the app's cache folder (`app_cache_dir()`: OpenVINO's compiled models and the precision
    verdicts beside them, batch-axis copies of models, anything else the app derived): all of it is
    rebuilt when next needed, so only time is lost. Model caches, the library and the settings are kept,
    also when they live inside the cache folder (the default model cache does: `<cache>/models`), as is
    everything in `keep`. Files are deleted and folders left in place, so a running engine that writes
    into them next finds them. Returns (bytes freed, what could not be removed: files in use on Windows)."""
    base = app_cache_dir()
    if not base.is_dir():
        return 0, []
    protected = [Path(p).resolve() for p in (*keep, default_model_cache_dir(), default_library_path(), config_dir())]
    freed, kept = 0, []
    for root, dirs, files in os.walk(base):
        folder = Path(root).resolve()
        dirs[:] = [d for d in dirs if (folder / d).resolve() not in protected]  # never walk into a kept folder
        for name in files:
            path = folder / name
            if path.resolve() in protected:
                continue
            try:
                size = path.lstat().st_size
                path.unlink()
                freed += size
            except FileNotFoundError:
                pass
            except OSError as e:
                kept.append(f"{path}: {e.strerror or e}")
    return freed, kept
