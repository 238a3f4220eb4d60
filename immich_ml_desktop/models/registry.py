"""Which InferenceModel subclass serves which (task, type, model name).

As in Immich's ML service (`get_model_class`, which picks the CLIP class by the model's name), a model is
chosen by its task, its type and its name: a class declares the names it serves (`model_names`: names, a
pattern, a check on the pack) and every other name keeps the class that serves "every other name" of
that (task, type), the built-in one. Claims that collide are refused when the class registers (the same
name, a name that the other's pattern matches, the same pattern, two classes for every name); claims
that only a pack can decide (two patterns, a check) are refused when a request names such a model.

Classes come from this package (CLIP, faces; OCR on first need), from `register()` (a class decorator)
and from other installed packages through the `immich_ml_desktop.models` entry-point group, loaded on
first use. A plugin that cannot load or register is left out with a warning (`plugin_problems()`);
everything else keeps working.
"""

from __future__ import annotations

import builtins
import logging
import threading
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Sequence

from immich_ml_desktop.errors import UserError
from immich_ml_desktop.models.base import InferenceModel, ModelNames, ModelTask, ModelType, clean_name, find_model_dir, value_of
from immich_ml_desktop.models.clip import ClipTextualEncoder, ClipVisualEncoder
from immich_ml_desktop.models.facial_recognition import FaceDetector, FaceRecognizer

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "immich_ml_desktop.models"
BUILT_IN = "built in"
EVERY_OTHER_NAME = "every other name"
_LAZY_TASKS = {ModelTask.OCR.value}  # built-in classes imported on first need (RapidOCR is slow to import)


class ModelRegistrationError(UserError):
    """A model class cannot be registered: its identity is malformed or it claims models another class serves."""


class ModelConflictError(UserError):
    """Two registered classes claim the same model (found when a request names it)."""


@dataclass(frozen=True)
class ModelClassInfo:
    """One registered class, as `models list` and the Server page show it."""

    task: str
    type: str
    cls: builtins.type[InferenceModel]  # `type` is a field here
    source: str  # "built in", "entry point NAME = VALUE (DIST VERSION)" or "module NAME"

    @property
    def name(self) -> str:
        return f"{self.cls.__module__}:{self.cls.__qualname__}"

    @property
    def names(self) -> str:
        """Which model names it serves, in words."""
        return str(self.cls.model_names) if self.cls.model_names is not None else EVERY_OTHER_NAME

    def as_dict(self) -> dict[str, str]:
        return {"task": self.task, "type": self.type, "class": self.name, "names": self.names, "source": self.source}


def _label(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


class Registry:
    def __init__(self, *, built_ins: bool = True, plugins: bool = True) -> None:
        self._lock = threading.RLock()
        self._classes: dict[tuple[str, str], list[ModelClassInfo]] = {}
        self._claims: set[tuple[str, str]] = set()  # (task, type) with a class of its own names: lookups look closer
        self._lazy_done = not built_ins
        self._plugins_done = not plugins
        self._loading = False
        self._loaded_entry_points: dict[tuple[str, str], list[type]] = {}  # (name, value) -> its classes
        self._problems: list[str] = []
        if built_ins:
            for cls in (ClipVisualEncoder, ClipTextualEncoder, FaceDetector, FaceRecognizer):
                self.register(cls, source=BUILT_IN)

    # registering ---------------------------------------------------------------------------------
    def register(self, cls: type[InferenceModel], *, source: str | None = None) -> type[InferenceModel]:
        """Add a class under its `identity` for the names of its `model_names`; usable as a decorator.
        Raises ModelRegistrationError, saying which class already serves what, on a collision."""
        task, model_type = self._identity(cls)
        key = (task.value, model_type.value)
        if task.value in _LAZY_TASKS and source != BUILT_IN:
            self._register_lazy()  # the built-in OCR classes take part in the collision check
        with self._lock:
            current = self._classes.setdefault(key, [])
            # The same class again (a module that registers itself, named by an entry point too), or its
            # module imported anew: replace it, keeping the more telling source.
            again = next((i for i, info in enumerate(current) if _label(info.cls) == _label(cls)), None)
            if again is None:
                for info in current:
                    problem = _collision(cls, info.cls)
                    if problem:
                        raise ModelRegistrationError(
                            f"Cannot register {_label(cls)} for {key[0]}/{key[1]}: it claims {problem}, which "
                            f"{_label(info.cls)} ({info.source}) already serves. {_fix(cls, info.cls)}"
                        )
            cls.identity = (model_type, task)
            cls.depends = [(ModelType.extend(t), ModelTask.extend(k)) for t, k in cls.depends]
            if source is None:
                source = BUILT_IN if cls.__module__.startswith("immich_ml_desktop.") else f"module {cls.__module__}"
                if again is not None:
                    source = current[again].source
            info = ModelClassInfo(key[0], key[1], cls, source)
            if again is None:
                current.append(info)
            else:
                current[again] = info
            self._index(key)
        return cls

    def _identity(self, cls: Any) -> tuple[ModelTask, ModelType]:
        if not (isinstance(cls, type) and issubclass(cls, InferenceModel)):
            raise ModelRegistrationError(f"{cls!r} is not a subclass of InferenceModel, so it cannot serve models.")
        identity = getattr(cls, "identity", None)
        if not (isinstance(identity, tuple) and len(identity) == 2):
            raise ModelRegistrationError(
                f"{_label(cls)} has no identity: set `identity = (type, task)`, e.g. (ModelType.VISUAL, \"tags\")."
            )
        names = getattr(cls, "model_names", None)
        if names is not None and not isinstance(names, ModelNames):
            raise ModelRegistrationError(f"{_label(cls)}.model_names must be ModelNames(...), not {names!r}.")
        try:
            model_type, task = ModelType.extend(identity[0]), ModelTask.extend(identity[1])
            for dep in cls.depends:
                ModelType.extend(dep[0]), ModelTask.extend(dep[1])
        except (ValueError, TypeError, IndexError) as e:
            raise ModelRegistrationError(f"{_label(cls)} has a bad identity or depends: {e}") from None
        return task, model_type

    def _index(self, key: tuple[str, str]) -> None:
        if any(i.cls.model_names is not None for i in self._classes.get(key, [])):
            self._claims.add(key)
        else:
            self._claims.discard(key)

    def unregister(self, cls: type[InferenceModel]) -> None:
        """Take a class out again (tests, a plugin that turns itself off); an entry point that named it
        is loaded again by the next `load_plugins()`."""
        with self._lock:
            for key, infos in self._classes.items():
                infos[:] = [i for i in infos if i.cls is not cls]
                self._index(key)
            self._classes = {k: v for k, v in self._classes.items() if v}
            self._loaded_entry_points = {k: v for k, v in self._loaded_entry_points.items() if cls not in v}

    # plugins ---------------------------------------------------------------------------------------
    def load_plugins(self, eps: Iterable[EntryPoint] | None = None) -> list[str]:
        """Register the classes named by `immich_ml_desktop.models` entry points not loaded yet (an entry
        point names a class or a list of classes). Returns the problems of this call, also logged."""
        with self._lock:
            if self._loading:
                return []  # a plugin's import looked something up: it sees what is registered so far
            self._loading = True
            problems = []
            try:
                for ep in entry_points(group=ENTRY_POINT_GROUP) if eps is None else eps:
                    if (ep.name, ep.value) in self._loaded_entry_points:
                        continue
                    classes = self._loaded_entry_points[(ep.name, ep.value)] = []
                    dist = getattr(ep, "dist", None)
                    where = f"entry point {ep.name} = {ep.value}" + (f" ({dist.name} {dist.version})" if dist else "")
                    try:
                        loaded = ep.load()
                        for cls in list(loaded) if isinstance(loaded, (list, tuple)) else [loaded]:
                            classes.append(cls)
                            self.register(cls, source=where)
                    except ModelRegistrationError as e:
                        problems.append(f"Model plugin {where} was left out: {e}")
                    except Exception as e:  # noqa: BLE001 - a broken plugin must not stop the app
                        problems.append(f"Model plugin {where} cannot be loaded ({type(e).__name__}: {e}); fix or uninstall it.")
            finally:
                self._loading = False
                self._plugins_done = True
            for problem in problems:
                log.warning("%s", problem)
            self._problems.extend(problems)
            return problems

    def plugin_problems(self) -> list[str]:
        self._ensure_loaded()
        return list(self._problems)

    def _register_lazy(self) -> None:
        if self._lazy_done:
            return
        with self._lock:
            if self._lazy_done:
                return
            try:  # OCR (RapidOCR) is imported on first need, and a broken install only loses OCR
                from immich_ml_desktop.models.ocr import OcrTextDetector, OcrTextRecognizer

                for cls in (OcrTextDetector, OcrTextRecognizer):
                    self.register(cls, source=BUILT_IN)
            except ImportError as e:
                log.info("OCR is not available: %s", e)
            finally:
                self._lazy_done = True  # set last: other threads look without the lock

    def _ensure_loaded(self, task: str | None = None) -> None:
        if not self._plugins_done:
            self.load_plugins()
        if not self._lazy_done and (task is None or task in _LAZY_TASKS):
            self._register_lazy()

    # looking up ------------------------------------------------------------------------------------
    def model_class(
        self, task: ModelTask | str, model_type: ModelType | str, name: str | None = None, cache_dirs: Sequence[Path] = ()
    ) -> type[InferenceModel] | None:
        """The class that serves `name` for (task, type), or None if none does. Without a name: the class
        that serves every other name. `cache_dirs` let a check on the pack's files decide."""
        key = (value_of(task), value_of(model_type))
        self._ensure_loaded(key[0])
        infos = self._classes.get(key)
        if not infos:
            return None
        default = next((i.cls for i in infos if i.cls.model_names is None), None)
        if name is None or key not in self._claims:
            return default
        pack = find_model_dir(list(cache_dirs), key[0], name) if cache_dirs else None
        claiming = [i for i in infos if i.cls.model_names is not None and i.cls.model_names.matches(name, pack)]
        if len(claiming) > 1:
            who = " and ".join(f"{i.name} ({i.source}: {i.names})" for i in claiming)
            raise ModelConflictError(
                f"Model {clean_name(name)!r} for {key[0]}/{key[1]} is claimed by both {who}: uninstall one of them "
                "or narrow its model_names. See `immich-ml-desktop models list --classes`."
            )
        return claiming[0].cls if claiming else default

    def unserved_reason(self, task: ModelTask | str, model_type: ModelType | str, name: str) -> str:
        """Why no class serves `name` for (task, type), in a sentence."""
        key = (value_of(task), value_of(model_type))
        infos = self._classes.get(key)
        if not infos:
            return f"Task {key[0]!r} of type {key[1]!r} is not served by this app."
        serves = "; ".join(f"{i.cls.__qualname__} serves {i.names}" for i in infos)
        return f"No model class here serves {clean_name(name)!r} for {key[0]}/{key[1]} ({serves})."

    def served_tasks(self) -> list[tuple[str, str]]:
        self._ensure_loaded()
        return sorted(self._classes)

    def model_classes(self, task: str | None = None, model_type: str | None = None) -> list[ModelClassInfo]:
        """Every registered class (of one task/type, if given): built-in first, in registration order."""
        self._ensure_loaded(task)
        return [
            info
            for key in sorted(self._classes)
            if (task is None or key[0] == task) and (model_type is None or key[1] == model_type)
            for info in self._classes[key]
        ]


def _collision(new: type[InferenceModel], old: type[InferenceModel]) -> str:
    """What `new` claims that `old` already serves, or "" if their claims can live side by side."""
    a, b = new.model_names, old.model_names
    if a is None or b is None:
        return "every other name" if a is None and b is None else ""
    same = [n for n in a.names if b.has_name(n)]
    if same:
        return f"the name {same[0]!r}"
    for x, y in ((a, b), (b, a)):
        if x.pattern is not None:
            hit = next((n for n in y.names if x.pattern.fullmatch(n)), None)
            if hit:
                return f"the name {hit!r} (matched by {x.pattern.pattern!r})"
    if a.pattern is not None and b.pattern is not None and a.pattern.pattern == b.pattern.pattern:
        return f"the names matching {a.pattern.pattern!r}"
    return ""


def _fix(new: type[InferenceModel], old: type[InferenceModel]) -> str:
    if new.model_names is None:
        return (
            f"Say which models {new.__qualname__} serves with `model_names = ModelNames(...)` (a name, a pattern "
            f"or a check on the pack); every other name keeps {old.__qualname__}."
        )
    return f"Give {new.__qualname__} model names that {old.__qualname__} does not claim, or uninstall one of them."


REGISTRY = Registry()

register = REGISTRY.register
unregister = REGISTRY.unregister
model_class = REGISTRY.model_class
unserved_reason = REGISTRY.unserved_reason
served_tasks = REGISTRY.served_tasks
model_classes = REGISTRY.model_classes
load_plugins = REGISTRY.load_plugins
plugin_problems = REGISTRY.plugin_problems
