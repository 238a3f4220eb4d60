"""`InferenceModel`: the base class every model inherits, shaped like Immich's own.

A model knows its identity (task, type, name), where its files live in an Immich-layout cache,
where to get them (`file_sources`, for the model store), how to load a session on the chosen device (`load`) and how to turn an
input into Immich's answer (`predict`). To add a model, subclass it, say which model names it serves
(`model_names`) and register it (`registry.register`, or an `immich_ml_desktop.models` entry point; see
README "Adding a new model").

`ModelTask` and `ModelType` hold Immich's tasks and types; registering a class that brings a new one
adds it (`ModelTask.extend`), so the engine and `/predict` accept it as they accept Immich's.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast
from collections.abc import Callable, Iterator

import numpy as np

from immich_ml_desktop.errors import ModelDamagedError, ModelNotFoundError
from immich_ml_desktop.models.precision import file_key
from immich_ml_desktop.models.runtime import Device, RuntimeOptions, Session, make_session

log = logging.getLogger(__name__)


_IDENTITY_VALUE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


_E = TypeVar("_E", bound="_OpenEnum")


class _OpenEnum(str, Enum):
    """A str enum that registered model classes may extend with values of their own.

    `extend(value)` adds a member that `Cls(value)` then finds, as it finds the built-in ones; iterating
    the enum still gives the built-in members only. Hand-written (aenum's `extend_enum` does the same)
    to keep a dependency out for a dozen lines; members are only ever added by `registry.register`, never
    from a request, so a client cannot grow the enum.
    """

    @classmethod
    def extend(cls: type[_E], value: str | _OpenEnum) -> _E:
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            pass
        if not isinstance(value, str) or not _IDENTITY_VALUE.fullmatch(value):
            raise ValueError(
                f"{value!r} cannot be a model {cls.__name__[5:].lower()}: use lower-case letters, digits, '-' or '_' "
                "(it is a key of Immich's `entries` and a folder of the model cache)."
            )
        member = str.__new__(cls, value)
        member._name_ = value.upper().replace("-", "_")
        member._value_ = value
        return cast(_E, cls._value2member_map_.setdefault(value, member))


class ModelTask(_OpenEnum):
    SEARCH = "clip"
    FACIAL_RECOGNITION = "facial-recognition"
    OCR = "ocr"


class ModelType(_OpenEnum):
    VISUAL = "visual"
    TEXTUAL = "textual"
    DETECTION = "detection"
    RECOGNITION = "recognition"


def value_of(item: str | Enum) -> str:
    """A task or type as the string Immich's `entries` spell it (`ModelTask.SEARCH` -> "clip")."""
    return item.value if isinstance(item, Enum) else str(item)


_CLEAN_NAME = str.maketrans(":\\/", "___", ".")


def clean_name(model_name: str) -> str:
    """Immich's folder name for a model: `org/ViT-B-32:x.y` -> `ViT-B-32_xy`."""
    return model_name.split("/")[-1].translate(_CLEAN_NAME)


def find_model_dir(cache_dirs: list[Path], task: ModelTask | str, model_name: str) -> Path:
    """The first cache that holds `<task>/<name>`, or the primary cache (where a download would go)."""
    name, folder = clean_name(model_name), value_of(task)
    for cache in cache_dirs:
        candidate = Path(cache) / folder / name
        if candidate.is_dir():
            return candidate
    return Path(cache_dirs[0]) / folder / name


class ModelNames:
    """Which model names a class serves for its (task, type): any of `names` (Immich's clean names, case
    ignored), names that `pattern` matches whole (`re.fullmatch` on the clean name), or packs for which
    `check(pack_dir)` is true (`pack_dir` is `<cache>/<task>/<name>`, when a cache holds it).

    A class without `model_names` serves every name no other class of its (task, type) claims, as the
    built-in CLIP, face and OCR classes do.
    """

    def __init__(self, *names: str, pattern: str | None = None, check: Callable[[Path], bool] | None = None) -> None:
        if not names and pattern is None and check is None:
            raise ValueError("ModelNames needs names, a pattern or a check")
        self.names = tuple(clean_name(n) for n in names)
        self.pattern = re.compile(pattern) if pattern is not None else None
        self.check = check
        self._folded = {n.casefold() for n in self.names}

    def has_name(self, name: str) -> bool:
        return clean_name(name).casefold() in self._folded

    def matches(self, name: str, pack_dir: Path | None = None) -> bool:
        """Whether this claims `name`; a check that raises counts as no (and is logged)."""
        if self.has_name(name) or (self.pattern is not None and self.pattern.fullmatch(clean_name(name))):
            return True
        if self.check is None or pack_dir is None or not pack_dir.is_dir():
            return False
        try:
            return bool(self.check(pack_dir))
        except Exception as e:  # noqa: BLE001 - a plugin's check must not take a request down
            log.warning("The model-name check %s failed on %s (%s: %s); not claiming it", self._check_name, pack_dir, type(e).__name__, e)
            return False

    @property
    def _check_name(self) -> str:
        return getattr(self.check, "__qualname__", repr(self.check))

    def __str__(self) -> str:
        parts = list(self.names)
        if self.pattern is not None:
            parts.append(f"names matching {self.pattern.pattern!r}")
        if self.check is not None:
            doc = (getattr(self.check, "__doc__", None) or "").strip().splitlines()
            parts.append(f"packs where {doc[0] if doc else self._check_name}")
        return ", ".join(parts)


@dataclass(frozen=True)
class FileSource:
    """One file a model fetches from its own address (not a catalogue pack), checked by SHA-256."""

    url: str
    sha256: str
    dest: Path


class InferenceModel:
    """Base of every model. Subclasses set `identity`, `depends` and implement `_load`/`_predict`.

    Thread-safety: `load()` is guarded by a lock; `predict()` may be called from many threads at once
    once loaded (sessions are thread-safe), so subclasses keep per-call state out of `self`.
    """

    identity: ClassVar[tuple[ModelType, ModelTask]]  # (type, task); plain strings bring a new type or task
    depends: ClassVar[list[tuple[ModelType, ModelTask]]] = []
    model_names: ClassVar[ModelNames | None] = None  # None: every name no other class claims
    model_file: ClassVar[str] = "model.onnx"

    def __init__(
        self,
        model_name: str,
        cache_dirs: list[Path],
        device: Device,
        runtime_options: RuntimeOptions | None = None,
        work_dir: Path | None = None,
        **options: Any,
    ) -> None:
        self.model_name = clean_name(model_name)
        self.cache_dirs = [Path(p) for p in cache_dirs]
        self.requested_device = device
        self.runtime_options = runtime_options or RuntimeOptions()
        self.work_dir = work_dir  # the app's own cache for derived artefacts; never the model pack
        self.options = options
        self.session: Session | None = None
        self.missing_hint = ""  # how to get missing files (the engine sets it from the model store)
        self.loaded = False
        self.last_used = time.monotonic()
        self._load_lock = threading.Lock()  # guards loading, unloading and the count of calls in use
        self._in_use = 0

    # identity -----------------------------------------------------------------------------------
    @property
    def model_type(self) -> ModelType:
        return ModelType.extend(self.identity[0])

    @property
    def model_task(self) -> ModelTask:
        return ModelTask.extend(self.identity[1])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_name!r}, {self.model_task.value}/{self.model_type.value})"

    # files --------------------------------------------------------------------------------------
    @property
    def cache_dir(self) -> Path:
        """`<cache>/<task>/<name>`: the model's folder in whichever configured cache holds it."""
        return find_model_dir(self.cache_dirs, self.model_task, self.model_name)

    @property
    def model_dir(self) -> Path:
        return self.cache_dir / self.model_type.value

    @property
    def model_path(self) -> Path:
        return self.model_dir / self.model_file

    def required_files(self) -> list[Path]:
        """Files that must exist before `load()`; subclasses add configs and tokenizers."""
        return [self.model_path]

    def missing_files(self) -> list[Path]:
        return [p for p in self.required_files() if not p.is_file() or p.stat().st_size == 0]

    @property
    def cached(self) -> bool:
        return not self.missing_files()

    def file_sources(self) -> list[FileSource] | None:
        """Where this model's files come from, for the model store: None for a pack of Immich's catalogue
        (fetched by name from Hugging Face), else the files to fetch (empty: nowhere known)."""
        return None

    def files_fetched(self) -> None:
        """Called by the model store once `file_sources` are downloaded (e.g. to derive a file from them)."""

    # loading ------------------------------------------------------------------------------------
    def load(self) -> None:
        with self._load_lock:
            if self.loaded:
                return
            missing = self.missing_files()
            if missing:
                rel = ", ".join(str(p) for p in missing)
                fix = f"{self.missing_hint} or point" if self.missing_hint else "Point"
                raise ModelNotFoundError(
                    f"Model {self.model_name!r} ({self.model_task.value} {self.model_type.value}) is not in the "
                    f"model cache: missing {rel}. {fix} --cache-dir at a folder that has it."
                )
            start = time.perf_counter()
            try:
                self.session = self._load()
            except (ModelDamagedError, ModelNotFoundError):
                raise
            except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
                raise ModelDamagedError(
                    f"Model {self.model_name!r} ({self.model_task.value} {self.model_type.value}) in "
                    f"{self.model_dir} cannot be loaded: {e}. Run `immich-ml-desktop models verify`."
                ) from e
            self.loaded = True
            self.last_used = time.monotonic()
            device = self.session.device.id if self.session is not None else "-"
            log.info("Loaded %r on %s in %.0f ms", self, device, (time.perf_counter() - start) * 1000)

    @contextmanager
    def in_use(self) -> Iterator[None]:
        """Loaded for the length of the block: the idle reaper never unloads a model a call is using."""
        with self._load_lock:
            self._in_use += 1
            loaded = self.loaded  # counted as in use: nothing unloads it from here on
        try:
            if not loaded:
                self.load()
            yield
        finally:
            with self._load_lock:
                self._in_use -= 1
                self.last_used = time.monotonic()

    def unload(self) -> None:
        """Drop every session and object that holds one (subclasses' `_release`), so the memory goes back."""
        with self._load_lock:
            self._unload_locked()

    def unload_if_idle(self, ttl: float) -> bool:
        """Unload if no call uses the model and none ended in the last `ttl` seconds; whether it did."""
        with self._load_lock:
            if not self.loaded or self._in_use or time.monotonic() - self.last_used <= ttl:
                return False
            self._unload_locked()
            return True

    def _unload_locked(self) -> None:
        self.session = None
        self.loaded = False
        self._release()

    def _release(self) -> None:
        """Subclasses drop here what they built on the session in `_load` (wrappers, batch sessions)."""

    def _make_session(self, path: Path, **kwargs: Any) -> Session:
        """A session for `path` (the pack's file or a derived copy of it) on the user's device. With
        `auto` precision, a model that implements `_calibrate` may run in the device's faster precision
        when that keeps its vectors interchangeable; others run in f32."""
        if self._calibrate is not None:
            kwargs.setdefault("calibration", self._calibrate)
            kwargs.setdefault("verdict_key", f"{self!r}|{file_key(self.model_path)}")
        return make_session(path, self.requested_device, self.runtime_options, **kwargs)

    # Subclasses whose output is a vector may define `_calibrate(self, session) -> np.ndarray`: run the
    # session on a few real inputs (see `samples.py`) and return one vector per input. It is only called
    # (with an f32 and a lower-precision session) when the precision is `auto` and the device has one.
    _calibrate: Callable[[Session], np.ndarray] | None = None

    def _load(self) -> Session:
        return self._make_session(self.model_path)

    # inference ----------------------------------------------------------------------------------
    def predict(self, *inputs: Any, **options: Any) -> Any:
        with self.in_use():
            return self._predict(*inputs, **options)

    def _predict(self, *inputs: Any, **options: Any) -> Any:
        raise NotImplementedError
