"""Where the app keeps its files: config, derived caches, the model cache and the library.

`IMMICH_ML_DESKTOP_CONFIG_DIR` and `IMMICH_ML_DESKTOP_CACHE_DIR` override the platform directories
(tests and portable installs use them); `MACHINE_LEARNING_CACHE_FOLDER` (Immich's own variable) the
model cache.
"""

from __future__ import annotations

import os
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


def default_library_path() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)) / "library.sqlite3"
