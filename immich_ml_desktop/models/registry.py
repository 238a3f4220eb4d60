"""Which InferenceModel subclass serves which (task, type). New models register here."""

from __future__ import annotations

from immich_ml_desktop.models.base import InferenceModel, ModelTask, ModelType
from immich_ml_desktop.models.clip import ClipTextualEncoder, ClipVisualEncoder
from immich_ml_desktop.models.facial_recognition import FaceDetector, FaceRecognizer

_MODELS: dict[tuple[ModelTask, ModelType], type[InferenceModel]] = {}


def register(cls: type[InferenceModel]) -> type[InferenceModel]:
    """Register a model class under its `identity`; usable as a class decorator."""
    model_type, task = cls.identity
    _MODELS[(task, model_type)] = cls
    return cls


for _cls in (ClipVisualEncoder, ClipTextualEncoder, FaceDetector, FaceRecognizer):
    register(_cls)


def _register_optional() -> None:
    try:  # OCR (RapidOCR) is optional at import time so a broken install only loses OCR
        from immich_ml_desktop.models import ocr  # noqa: F401  (registers itself)
    except ImportError:
        pass


def model_class(task: ModelTask, model_type: ModelType) -> type[InferenceModel] | None:
    if not _MODELS.get((task, model_type)):
        _register_optional()
    return _MODELS.get((task, model_type))


def served_tasks() -> list[tuple[str, str]]:
    _register_optional()
    return sorted((t.value, m.value) for t, m in _MODELS)
