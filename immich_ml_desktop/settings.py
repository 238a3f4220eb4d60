"""The app's settings in one typed object, saved as JSON under the platform's config directory.

`IMMICH_ML_DESKTOP_CONFIG_DIR` and `IMMICH_ML_DESKTOP_CACHE_DIR` override the platform directories
(tests and portable installs use them).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

log = logging.getLogger(__name__)

APP_NAME = "immich-ml-desktop"
# OpenVINO inference precision. `auto`: the device's faster precision (bf16 on new CPUs, f16 on GPUs) for
# each model whose vectors stay interchangeable with Immich's (checked at first load), f32 for the others.
PRECISIONS = ("auto", "f32", "bf16", "f16")


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


@dataclass
class Settings:
    """Everything a user can set. Unknown keys in the saved file are ignored, missing ones defaulted."""

    device: str = "auto"                 # auto, cpu, cuda, directml, coreml, openvino:CPU, openvino:GPU, ...
    precision: str = "auto"              # OpenVINO inference precision: auto, f32, bf16, f16 (docs/engine.md)
    threads: int = 0                     # intra-op threads per model; 0 = runtime default (all cores)
    model_cache_dir: str = field(default_factory=lambda: str(default_model_cache_dir()))
    extra_model_dirs: list[str] = field(default_factory=list)  # read-only Immich caches used in place
    allow_downloads: bool = True
    model_ttl: float = 300.0             # seconds before an idle model is unloaded; 0 = never
    clip_model: str = "ViT-B-32__openai"
    face_model: str = "buffalo_l"
    face_min_score: float = 0.7
    library_path: str = field(default_factory=lambda: str(default_library_path()))
    library_folders: list[str] = field(default_factory=list)
    server_host: str = "127.0.0.1"
    server_port: int = 3003
    server_allow: list[str] = field(default_factory=list)
    server_preload: list[str] = field(default_factory=list)
    forward_url: str = ""
    immich_url: str = ""

    def validate(self) -> "Settings":
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.threads < 0:
            raise ValueError("threads must be 0 (automatic) or a positive number")
        return self

    @classmethod
    def path(cls) -> Path:
        return config_dir() / "settings.json"

    @classmethod
    def load(cls) -> "Settings":
        path = cls.path()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as e:
            log.warning("Ignoring unreadable settings file %s (%s); using defaults", path, e)
            return cls()
        known = {f.name for f in dataclasses.fields(cls)}
        settings = cls(**{k: v for k, v in raw.items() if k in known})
        try:
            return settings.validate()
        except ValueError as e:
            log.warning("Ignoring invalid settings in %s (%s); using defaults", path, e)
            return cls()

    def save(self) -> None:
        """Write atomically: a crash mid-save never leaves a half-written settings file."""
        path = self.path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".settings-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(dataclasses.asdict(self), f, indent=2)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
