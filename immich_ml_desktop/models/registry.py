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
    try:  # OCR (RapidOCR) is imported on first need, and a broken install only loses OCR
        from immich_ml_desktop.models.ocr import OcrTextDetector, OcrTextRecognizer
    except ImportError:
        return
    for cls in (OcrTextDetector, OcrTextRecognizer):
        if (cls.identity[1], cls.identity[0]) not in _MODELS:
            register(cls)


def model_class(task: ModelTask, model_type: ModelType) -> type[InferenceModel] | None:
    if not _MODELS.get((task, model_type)):
        _register_optional()
    return _MODELS.get((task, model_type))


def served_tasks() -> list[tuple[str, str]]:
    _register_optional()
    return sorted((t.value, m.value) for t, m in _MODELS)
