"""The one engine that owns the loaded models and the execution device.

The GUI, the CLI and the ML server all call it. Models load lazily on first use, are shared by every
thread, and unload after `model_ttl` idle seconds. `predict_entries` answers exactly what Immich's
`/predict` answers for the same entries (see `predict.py`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from collections.abc import Callable

import numpy as np

from immich_ml_desktop.errors import ModelNotFoundError, UserError
from immich_ml_desktop.models.base import InferenceModel, ModelTask, ModelType, clean_name, value_of
from immich_ml_desktop.models.clip import ClipTextualEncoder, ClipVisualEncoder
from immich_ml_desktop.models.facial_recognition import FaceDetector, FaceRecognizer
from immich_ml_desktop.models.images import DecodedImage, ImageInput, decode_image
from immich_ml_desktop.models.registry import model_class, unserved_reason
from immich_ml_desktop.models.runtime import Device, RuntimeOptions, resolve_device
from immich_ml_desktop.models.predict import run_entries
from immich_ml_desktop.paths import app_cache_dir

log = logging.getLogger(__name__)

M = TypeVar("M", bound=InferenceModel)


class ModelDownloader(Protocol):
    """What the engine needs of the model store (`model_store.fetcher.ModelFetcher`) to get missing files."""

    def knows(self, model: InferenceModel) -> bool: ...

    def missing_hint(self, model: InferenceModel) -> str: ...

    def fetch(self, model: InferenceModel, progress: Callable[..., Any] | None = None) -> None: ...


class UnsupportedTaskError(UserError):
    """No model class serves this task/type here (the server may hand it on to another service)."""

    http_status = 422


@dataclass
class Face:
    """One detected face in image pixel coordinates, with its (unnormalised) embedding."""

    box: np.ndarray  # (4,) x1, y1, x2, y2 (rounded, unclamped)
    score: float
    landmarks: np.ndarray  # (5, 2)
    embedding: np.ndarray  # (D,)
    found_by: str = "detector"  # Immich's detection as is; the library's own passes name themselves


class Engine:
    def __init__(
        self,
        cache_dirs: list[Path] | Path | str,
        device: str | Device = "auto",
        *,
        precision: str = "auto",
        threads: int = 0,
        parallel: int = 1,
        work_dir: Path | None = None,
        model_ttl: float = 0.0,
        allow_downloads: bool = False,
        download_progress: Callable[..., None] | None = None,
        downloader: ModelDownloader | None = None,
    ) -> None:
        if isinstance(cache_dirs, (str, Path)):
            cache_dirs = [Path(cache_dirs)]
        self.cache_dirs = [Path(p) for p in cache_dirs]
        self.device = device if isinstance(device, Device) else resolve_device(device)
        self.work_dir = Path(work_dir) if work_dir else app_cache_dir()
        self.runtime_options = RuntimeOptions(
            threads=threads, precision=precision, parallel=max(1, parallel), cache_dir=self.work_dir / "openvino-cache"
        )
        self.parallel = self.runtime_options.parallel  # calls its users make at once (server/index workers)
        self.allow_downloads = allow_downloads and downloader is not None
        self.downloader = downloader  # knows where models come from, even when downloads are off
        self.download_progress = download_progress
        self.model_ttl = model_ttl
        self._models: dict[tuple[str, str, str], InferenceModel] = {}  # (task, type, clean name)
        self._lock = threading.Lock()
        self._download_locks: dict[str, threading.Lock] = {}
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        if model_ttl > 0:
            self._reaper = threading.Thread(target=self._reap_idle, name="model-reaper", daemon=True)
            self._reaper.start()

    # models -------------------------------------------------------------------------------------
    def get_model(self, task: ModelTask | str, model_type: ModelType | str, name: str, *, load: bool = True) -> InferenceModel:
        """The model of this task, type and name, made by the class the registry picks for the name."""
        key = (value_of(task), value_of(model_type), clean_name(name))
        with self._lock:
            model = self._models.get(key)
            if model is None:
                cls = model_class(key[0], key[1], name, self.cache_dirs)
                if cls is None:
                    raise UnsupportedTaskError(unserved_reason(key[0], key[1], name))
                model = cls(name, self.cache_dirs, self.device, self.runtime_options, work_dir=self.work_dir)
                if self.downloader is not None:
                    model.missing_hint = self.downloader.missing_hint(model)
                self._models[key] = model
        if load and not model.loaded:
            self._ensure_files(model)
            model.load()
        model.last_used = time.monotonic()
        return model

    def can_download(self, model: InferenceModel) -> bool:
        return self.downloader is not None and self.downloader.knows(model)

    def download(self, model: InferenceModel, progress: Callable[..., None] | None = None) -> None:
        """Fetch the model's missing files through the model store (one download per model at a time)."""
        if self.downloader is None:
            raise ModelNotFoundError(f"{model.model_name} is not in the model cache and this engine has no model store to fetch it.")
        with self._lock:
            lock = self._download_locks.setdefault(model.model_name, threading.Lock())
        with lock:
            if not model.cached:
                log.info("Downloading %s (missing: %s)", model.model_name, ", ".join(map(str, model.missing_files())))
                self.downloader.fetch(model, progress=progress or self.download_progress)

    def _ensure_files(self, model: InferenceModel) -> None:
        if model.cached or not self.allow_downloads or not self.can_download(model):
            return  # an unknown name: load() raises ModelNotFoundError naming what is missing
        self.download(model)

    def loaded_models(self) -> list[dict[str, Any]]:
        with self._lock:
            models = list(self._models.values())
        rows = []
        for m in models:
            session = m.session  # read once: the reaper may unload it meanwhile
            if m.loaded and session is not None:
                rows.append({
                    "task": m.model_task.value,
                    "type": m.model_type.value,
                    "name": m.model_name,
                    "device": session.device.id,
                    "precision": session.precision,
                    "idle_seconds": round(time.monotonic() - m.last_used, 1),
                })
        return rows

    def unload_all(self) -> None:
        with self._lock:
            models = list(self._models.values())
        for m in models:
            m.unload()

    def _reap_idle(self) -> None:
        interval = max(0.05, min(self.model_ttl / 2, 10.0))
        while not self._stop.wait(interval):
            now = time.monotonic()
            with self._lock:
                models = list(self._models.values())
            for m in models:
                idle = now - m.last_used
                if m.unload_if_idle(self.model_ttl):
                    log.info("Unloaded %r after %.0f s idle", m, idle)

    def close(self) -> None:
        self._stop.set()
        self.unload_all()

    # typed accessors and conveniences for the library and the GUI --------------------------------------
    def _typed(self, kind: type[M], task: ModelTask, model_type: ModelType, name: str) -> M:
        """The model for (task, type, name) as the class the caller works with: a class registered for one
        model name (a plugin) that is not one raises a clear error instead of failing deep in a call."""
        model = self.get_model(task, model_type, name)
        if not isinstance(model, kind):
            raise UnsupportedTaskError(
                f"{name} is served by {type(model).__qualname__} for {task.value}/{model_type.value}, which is not "
                f"a {kind.__name__}: this needs the built-in model class (or a subclass of it)."
            )
        return model

    def clip_visual(self, name: str) -> ClipVisualEncoder:
        return self._typed(ClipVisualEncoder, ModelTask.SEARCH, ModelType.VISUAL, name)

    def clip_textual(self, name: str) -> ClipTextualEncoder:
        return self._typed(ClipTextualEncoder, ModelTask.SEARCH, ModelType.TEXTUAL, name)

    def face_detector(self, name: str) -> FaceDetector:
        return self._typed(FaceDetector, ModelTask.FACIAL_RECOGNITION, ModelType.DETECTION, name)

    def face_recognizer(self, name: str) -> FaceRecognizer:
        return self._typed(FaceRecognizer, ModelTask.FACIAL_RECOGNITION, ModelType.RECOGNITION, name)

    def clip_image(self, name: str, image: ImageInput) -> np.ndarray:
        return self.clip_visual(name).encode_images([image])[0]

    def clip_text(self, name: str, text: str, language: str | None = None) -> np.ndarray:
        return self.clip_textual(name).encode_text(text, language)

    def faces(self, name: str, image: ImageInput, min_score: float = 0.7) -> list[Face]:
        detector, recognizer = self.face_detector(name), self.face_recognizer(name)
        decoded = image if isinstance(image, DecodedImage) else DecodedImage(decode_image(image))
        found = detector.detect_bgr(decoded.bgr, min_score)
        if found["boxes"].shape[0] == 0:
            return []
        embeddings = recognizer.embed_faces(decoded.bgr, found)
        return [
            Face(box=b, score=float(s), landmarks=marks, embedding=e)
            for b, s, marks, e in zip(found["boxes"], found["scores"], found["landmarks"], embeddings)
        ]

    def predict_entries(self, entries: Any, image: bytes | ImageInput | None = None, text: str | None = None) -> dict[str, Any]:
        return run_entries(self, entries, image=image, text=text)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

