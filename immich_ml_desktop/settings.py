"""The app's settings in one typed object, saved as JSON under the platform's config directory
(`paths.py` says where, and which environment variables move it)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from immich_ml_desktop.models.precision import PRECISIONS
from immich_ml_desktop.paths import APP_NAME, app_cache_dir, config_dir, default_library_path, default_model_cache_dir

log = logging.getLogger(__name__)

# Re-exported: callers read the precisions and the app's folders from here too.
__all__ = ["APP_NAME", "PRECISIONS", "Settings", "app_cache_dir", "config_dir", "default_library_path", "default_model_cache_dir"]


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
    answer_cache_mb: int = 2048          # answers kept for Immich's requests (server/answer_cache.py); 0 = none

    def validate(self) -> Settings:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.answer_cache_mb < 0:
            raise ValueError("answer_cache_mb must be 0 (no answer cache) or a positive size in MB")
        if self.threads < 0:
            raise ValueError("threads must be 0 (automatic) or a positive number")
        return self

    @classmethod
    def path(cls) -> Path:
        return config_dir() / "settings.json"

    @classmethod
    def load(cls) -> Settings:
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
