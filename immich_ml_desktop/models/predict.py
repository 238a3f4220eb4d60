"""Immich's `/predict` contract: parse `entries`, run the models, build the exact answer.

Shared by the ML server and `immich-ml-desktop predict`, so the CLI prints byte for byte what the
server would answer. Embeddings are JSON strings; boxes are rounded, unclamped pixel coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from immich_ml_desktop.errors import EntriesFormatError, InvalidInputError
from immich_ml_desktop.models.base import InferenceModel, ModelType
from immich_ml_desktop.models.images import DecodedImage, decode_image
from immich_ml_desktop.models.registry import model_class


class ModelProvider(Protocol):
    """What answering entries needs: the loaded model for a (task, type, name) (the Engine), and the
    caches its models are in (a class may claim a model by its pack's files)."""

    cache_dirs: list[Path]

    def get_model(self, task: str, model_type: str, name: str) -> InferenceModel: ...

TEXT_TYPES = {ModelType.TEXTUAL.value}
# Options Immich sends whose value must be a number (face and OCR `minScore`, OCR `maxResolution`); checked
# here so a wrong type is a 422 that names the field, before any model is looked up.
NUMBER_OPTIONS = ("minScore", "maxResolution")


@dataclass(frozen=True)
class Entry:
    task: str
    type: str
    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def needs_text(self) -> bool:
        return self.type in TEXT_TYPES


def parse_entries(raw: str | bytes | dict[str, Any]) -> list[Entry]:
    """`{task: {type: {"modelName": str, "options": {...}}}}` -> entries; 422-type error if malformed."""
    try:
        request = orjson.loads(raw) if isinstance(raw, (str, bytes)) else raw
    except orjson.JSONDecodeError as e:
        raise EntriesFormatError(f"Invalid request format: entries is not valid JSON ({e}).") from None
    if not isinstance(request, dict) or not request:
        raise EntriesFormatError('Invalid request format: entries must be a JSON object like {"clip": {"visual": {"modelName": "ViT-B-32__openai"}}}.')
    entries: list[Entry] = []
    for task, types in request.items():
        if not isinstance(types, dict) or not types:
            raise EntriesFormatError(f"Invalid request format: entries[{task!r}] must be an object of model types.")
        for model_type, spec in types.items():
            if not isinstance(spec, dict) or not isinstance(spec.get("modelName"), str) or not spec["modelName"].strip():
                raise EntriesFormatError(f"Invalid request format: entries[{task!r}][{model_type!r}] needs a modelName string.")
            options = spec.get("options") or {}
            if not isinstance(options, dict):
                raise EntriesFormatError(f"Invalid request format: options of {task}/{model_type} must be an object.")
            _check_options(f"{task}/{model_type}", options)
            entries.append(Entry(str(task), str(model_type), spec["modelName"], options))
    return entries


def _check_options(where: str, options: dict[str, Any]) -> None:
    for key in NUMBER_OPTIONS:
        value = options.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise EntriesFormatError(
                f"Invalid request format: option {key} of {where} must be a number, not {_shown(value)}."
            )


def _shown(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return repr(value)


def _depends(entry: Entry, cache_dirs: list[Path]) -> list[tuple[str, str]]:
    cls = model_class(entry.task, entry.type, entry.name, cache_dirs)
    return [(t.value, k.value) for k, t in cls.depends] if cls else []


def run_entries(engine: ModelProvider, raw_entries: Any, image: Any = None, text: str | None = None,
                outputs: dict[tuple[str, str], Any] | None = None) -> dict[str, Any]:
    """The answer to `entries` for an image or a text; `outputs`, if given, receives each model's own
    output by (task, type) (e.g. the face detector's landmarks, which the answer leaves out)."""
    entries = raw_entries if isinstance(raw_entries, list) else parse_entries(raw_entries)
    if image is None and text is None:
        raise InvalidInputError("Either image or text must be provided.")
    payload: Any
    if image is not None:
        payload = image if isinstance(image, DecodedImage) else DecodedImage(decode_image(image))
    else:
        payload = text
    for entry in entries:
        if entry.needs_text and text is None:
            raise InvalidInputError(f"Task {entry.task} of type {entry.type} needs text, but only an image was sent.")
        if not entry.needs_text and image is None:
            raise InvalidInputError(f"Task {entry.task} of type {entry.type} needs an image, but only text was sent.")

    outputs = {} if outputs is None else outputs
    response: dict[str, Any] = {}
    deps = [_depends(e, engine.cache_dirs) for e in entries]
    ordered = [i for i, d in enumerate(deps) if not d] + [i for i, d in enumerate(deps) if d]  # without first
    for entry, depends in ((entries[i], deps[i]) for i in ordered):
        model = engine.get_model(entry.task, entry.type, entry.name)
        inputs: list[Any] = [payload]
        for dep in depends:
            if dep not in outputs:
                raise InvalidInputError(f"Task {entry.task} of type {entry.type} depends on output of {dep[1]}.")
            inputs.append(outputs[dep])
        output = model.predict(*inputs, **entry.options)
        outputs[(entry.task, entry.type)] = output
        response[entry.task] = output
    if isinstance(payload, DecodedImage):
        response["imageHeight"], response["imageWidth"] = payload.height, payload.width
    return response


def to_json(response: dict[str, Any]) -> bytes:
    """Serialise as Immich does (orjson with numpy support)."""
    return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
