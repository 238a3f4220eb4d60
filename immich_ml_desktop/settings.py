"""The app's settings in one typed object, saved as JSON under the platform's config directory
(`paths.py` says where, and which environment variables move it)."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import tempfile
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from immich_ml_desktop.models.precision import PRECISIONS
from immich_ml_desktop.paths import APP_NAME, app_cache_dir, config_dir, default_library_path, default_model_cache_dir

log = logging.getLogger(__name__)

# Re-exported: callers read the precisions and the app's folders from here too.
__all__ = ["APP_NAME", "PRECISIONS", "Settings", "app_cache_dir", "config_dir", "default_library_path", "default_model_cache_dir"]


# The library's own face passes after Immich's (services/face_passes.py), in the order they run.
FACE_PASSES = ("padded", "bright", "rotated")


@dataclass
class Settings:
    """Everything a user can set. Unknown keys in the saved file are ignored, missing ones defaulted, and a
    value of the wrong type or out of range is ignored with a warning (the rest of the file still counts)."""

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
    # which of FACE_PASSES indexing runs on photos where Immich's detection finds nothing; the rotated pass
    # costs up to 2 more detector calls on every photo without a face (docs/faces.md)
    face_passes: list[str] = field(default_factory=lambda: list(FACE_PASSES))
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
        """Raises ValueError naming the first field whose range (and type) is wrong."""
        for name in _CHECKS:
            problem = self.problem(name)
            if problem:
                raise ValueError(problem)
        return self

    def problem(self, name: str) -> str | None:
        """Why the value of field `name` cannot be used (its type, then its range), or None."""
        value = getattr(self, name)
        expected = _field_types()[name]
        if not _has_type(value, expected):
            return f"{name} must be {_TYPE_WORDS.get(expected, str(expected))}, not {json.dumps(value)}"
        check = _CHECKS.get(name)
        return check(value) if check else None

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
        if not isinstance(raw, dict):
            log.warning("Ignoring settings file %s: it holds %s, not an object of settings; using defaults",
                        path, type(raw).__name__)
            return cls()
        known = [f.name for f in dataclasses.fields(cls) if f.name in raw]
        settings = cls(**{k: raw[k] for k in known})
        default = cls()
        for name in known:
            problem = settings.problem(name)
            if problem:  # one bad field never costs the others (nor locks the user out of the app)
                log.warning("Ignoring the setting %s in %s: %s; using the default, %s",
                            name, path, problem, json.dumps(getattr(default, name)))
                setattr(settings, name, getattr(default, name))
        return settings

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


# Each field's range (its type is checked first, from the annotation); the answer says what is allowed.
_CHECKS: dict[str, Any] = {
    "precision": lambda v: None if v in PRECISIONS else f"precision must be one of {', '.join(PRECISIONS)}, not {v!r}",
    "answer_cache_mb": lambda v: None if v >= 0 else
    "answer_cache_mb must be 0 (no answer cache) or a positive size in MB",
    "threads": lambda v: None if v >= 0 else "threads must be 0 (automatic) or a positive number",
    "face_min_score": lambda v: None if 0 <= v <= 1 else f"face_min_score must be between 0 and 1, not {v}",
    "face_passes": lambda v: None if set(v) <= set(FACE_PASSES) else
    f"face_passes may hold {', '.join(FACE_PASSES)}, not {', '.join(sorted(set(v) - set(FACE_PASSES)))}",
    "model_ttl": lambda v: None if v >= 0 else "model_ttl must be 0 (never unload) or a positive number of seconds",
    "server_port": lambda v: None if 0 <= v <= 65535 else f"server_port must be a port number (0-65535), not {v}",
}
_TYPE_WORDS: dict[Any, str] = {
    str: "a string", int: "a whole number", float: "a number", bool: "true or false", list[str]: "a list of strings",
}


@functools.cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Settings)


def _has_type(value: Any, expected: Any) -> bool:
    """JSON's types against a field's annotation: a bool is no number, an int is a float."""
    if expected is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if expected is float:
        return isinstance(value, int | float)
    if expected in (int, str):
        return isinstance(value, expected)
    if typing.get_origin(expected) is list:
        (item,) = typing.get_args(expected)
        return isinstance(value, list) and all(_has_type(v, item) for v in value)
    return isinstance(value, expected)
