"""OCR as Immich's ML service runs it: PaddleOCR text detection (DB) and recognition (CTC) through
RapidOCR's pre/post-processing, on this app's ONNX Runtime or OpenVINO sessions.

Names are Immich's (`PP-OCRv5_mobile`, `PP-OCRv5_server`, `LATIN__PP-OCRv5_mobile`): `[LANG__]<version>_<size>`
resolves, through RapidOCR's own model table, to the file RapidOCR would download and its SHA-256.
Files live in Immich's layout (`<cache>/ocr/<name>/detection/model.onnx`, `recognition/model.onnx` and
`recognition/dict.txt`); a file that ships inside the installed RapidOCR wheel is used from there, read-only.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version as package_version
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypedDict, cast

import cv2
import numpy as np
from PIL import Image

import rapidocr
from rapidocr.ch_ppocr_det.utils import DBPostProcess
from rapidocr.ch_ppocr_rec import TextRecInput
from rapidocr.ch_ppocr_rec import TextRecognizer as RapidTextRecognizer
from rapidocr.ch_ppocr_rec.main import RTL_LANGS
from rapidocr.ch_ppocr_rec.utils import CTCLabelDecode
from rapidocr.inference_engine.base import FileInfo, InferSession
from rapidocr.utils.model_resolver import normalize_lang, route_to_model_key
from rapidocr.utils.typings import EngineType, LangDet, LangRec, OCRVersion, TaskType
from rapidocr.utils.typings import ModelType as RapidModelType
from rapidocr.utils.utils import validate_rtl_dependency

from immich_ml_desktop.errors import InvalidInputError, ModelDamagedError, ModelNotFoundError
from immich_ml_desktop.models.base import FileSource, InferenceModel, ModelTask, ModelType
from immich_ml_desktop.models.images import ImageInput, decode_image
from immich_ml_desktop.models.runtime import Session

log = logging.getLogger(__name__)

WHEEL_MODELS = Path(rapidocr.__file__).resolve().parent / "models"
DICT_FILE = "dict.txt"
# Immich's defaults when a request gives no options.
DEFAULT_BOX_SCORE = 0.5
DEFAULT_MAX_RESOLUTION = 736
DEFAULT_TEXT_SCORE = 0.9
REC_BATCH = 6  # Immich's default `max_batch_size.text_recognition`
REC_IMAGE_SHAPE = [3, 48, 320]
LINE_GAP = 10  # px between top-left corners that starts a new line (RapidOCR's value)
MIN_SIDE = 32  # the DB network downsamples by 32: smaller images hold no detectable text


class TextDetectionOutput(TypedDict):
    boxes: np.ndarray  # (N, 4, 2) float32 corners in image pixels, reading order
    scores: np.ndarray  # (N,) float32


class TextRecognitionOutput(TypedDict):
    box: np.ndarray  # (N * 8,) corners divided by image width/height, flattened
    boxScore: np.ndarray
    text: list[str]
    textScore: np.ndarray


@dataclass(frozen=True)
class OcrModelFile:
    """One stage's ONNX file as RapidOCR publishes it."""

    url: str
    sha256: str

    @property
    def shipped(self) -> Path | None:
        """The same file inside the installed RapidOCR wheel, when it ships there (checked by hash)."""
        candidate = WHEEL_MODELS / self.url.rsplit("/", 1)[-1]
        return candidate if candidate.is_file() and _sha256(candidate) == self.sha256 else None


@lru_cache(maxsize=32)
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_name(model_name: str) -> tuple[LangRec, OCRVersion, RapidModelType]:
    """`LATIN__PP-OCRv5_mobile` -> (latin, PP-OCRv5, mobile); no prefix means Chinese+English (`ch`)."""
    prefix, _, base = model_name.rpartition("__")
    version, _, size = base.rpartition("_")
    try:
        lang = LangRec[prefix.upper()] if prefix else LangRec.CH
        return lang, OCRVersion(version), RapidModelType(size)
    except (KeyError, ValueError):
        raise ModelNotFoundError(
            f"{model_name!r} is not an OCR model name RapidOCR knows. Use Immich's names such as "
            f"PP-OCRv5_mobile, PP-OCRv5_server or LATIN__PP-OCRv5_mobile "
            f"(versions {', '.join(v.value for v in OCRVersion)}; sizes {', '.join(m.value for m in RapidModelType)})."
        ) from None


@lru_cache(maxsize=64)
def model_file(model_name: str, model_type: ModelType) -> OcrModelFile:
    """The file RapidOCR would download for this stage of an Immich OCR model name."""
    lang, version, size = split_name(model_name)
    task = TaskType.DET if model_type == ModelType.DETECTION else TaskType.REC
    # Immich detects with the `ch` detector whatever the language; only recognition is per language.
    stage_lang = LangDet.CH if task == TaskType.DET else lang
    try:
        # Checked first because RapidOCR logs an error banner for combinations it has no route for.
        if route_to_model_key(task, version, stage_lang, size) is None:
            raise ValueError(f"no {size.value} {task.value} model in {version.value}")
        entry = InferSession.get_model_url(FileInfo(EngineType.ONNXRUNTIME, version, task, stage_lang, size))
    except ValueError as e:
        raise ModelNotFoundError(
            f"RapidOCR {package_version('rapidocr')} has no {model_type.value} model for {model_name!r} ({e})."
        ) from None
    return OcrModelFile(str(entry["model_dir"]), str(entry["SHA256"]))


def shipped_models() -> list[str]:
    """Immich-style names whose detection and recognition files both ship in the installed wheel."""
    names = []
    for version in OCRVersion:
        for size in RapidModelType:
            name = f"{version.value}_{size.value}"
            try:
                files = [model_file(name, t) for t in (ModelType.DETECTION, ModelType.RECOGNITION)]
            except ModelNotFoundError:
                continue
            if all(f.shipped for f in files):
                names.append(name)
    return names


def character_list(model_path: Path) -> list[str]:
    """The recogniser's characters: `dict.txt` beside the model, else the list RapidOCR embeds in the ONNX."""
    dict_path = model_path.parent / DICT_FILE
    if dict_path.is_file():
        return CTCLabelDecode.read_character_file(dict_path)
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(model_path), load_external_data=False).metadata_props}
    if "character" not in meta:
        raise ModelDamagedError(
            f"OCR recognition model {model_path} has no character list (no {DICT_FILE} beside it and none "
            f"embedded). Download the model again."
        )
    return meta["character"].splitlines()


class PaddleOcrModel(InferenceModel):
    """File handling shared by both stages: Immich's layout, the wheel's copy, RapidOCR's download table."""

    def __init__(self, model_name: str, *args: Any, **kwargs: Any) -> None:
        self.full_name = model_name
        super().__init__(self.folder_name(model_name), *args, **kwargs)

    @staticmethod
    def folder_name(model_name: str) -> str:
        return model_name

    @property
    def source(self) -> OcrModelFile:
        return model_file(self.full_name, self.model_type)

    @property
    def model_path(self) -> Path:
        cached = self.model_dir / self.model_file
        if cached.is_file():
            return cached
        return self.source.shipped or cached

    def file_sources(self) -> list[FileSource]:
        """The file RapidOCR would download, into the primary cache in Immich's layout (none for a name
        RapidOCR does not know)."""
        try:
            source = self.source
        except ModelNotFoundError:
            return []
        dest = self.cache_dirs[0] / self.model_task.value / self.model_name / self.model_type.value / self.model_file
        return [FileSource(source.url, source.sha256, dest)]

    def files_fetched(self) -> None:
        if self.model_type == ModelType.RECOGNITION:
            dest = self.file_sources()[0].dest
            (dest.parent / DICT_FILE).write_text("\n".join(character_list(dest)) + "\n", encoding="utf-8")


def _number(options: dict[str, Any], key: str, default: float) -> float:
    value = options.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"OCR option {key} must be a number, not {value!r}.")
    return float(value)


class OcrTextDetector(PaddleOcrModel):
    identity = (ModelType.DETECTION, ModelTask.OCR)

    @staticmethod
    def folder_name(model_name: str) -> str:
        # Immich keeps one detector for all languages: `LATIN__PP-OCRv5_mobile` detects with `PP-OCRv5_mobile`.
        return model_name.split("__")[-1]

    def _load(self) -> Session:
        session = self._make_session(self.model_path)
        self._input = session.get_inputs()[0].name
        return session

    def _predict(self, inputs: ImageInput, **options: Any) -> TextDetectionOutput:
        min_score = _number(options, "minScore", DEFAULT_BOX_SCORE)
        max_resolution = _number(options, "maxResolution", DEFAULT_MAX_RESOLUTION)
        if max_resolution < MIN_SIDE:
            raise InvalidInputError(f"OCR option maxResolution must be at least {MIN_SIDE}, not {max_resolution:g}.")
        image = decode_image(inputs)
        w, h = image.size
        if w < MIN_SIDE or h < MIN_SIDE:
            return _no_text()
        assert self.session is not None
        out = self.session.run(None, {self._input: self.transform(image, max_resolution)})[0]
        # DBPostProcess keeps its threshold on the instance: one per call keeps concurrent requests apart.
        postprocess = DBPostProcess(
            thresh=0.3, box_thresh=min_score, max_candidates=1000, unclip_ratio=1.6, use_dilation=True, score_mode="fast"
        )
        boxes, scores = postprocess(out, (h, w))
        if len(boxes) == 0:
            return _no_text()
        order = reading_order(boxes)
        return {"boxes": boxes[order].astype(np.float32), "scores": np.asarray(scores, dtype=np.float32)[order]}

    @staticmethod
    def transform(image: Image.Image, max_resolution: float) -> np.ndarray:
        """Immich's detector input: shorter side down to at most `max_resolution`, sides rounded to
        multiples of 32, Lanczos, BGR, `(x - 0.5) / 127.5` (Immich's normalisation, kept for identical boxes)."""
        ratio = min(max_resolution / min(image.width, image.height), 1.0)
        resize_h = max(MIN_SIDE, int(round(int(image.height * ratio) / 32) * 32))
        resize_w = max(MIN_SIDE, int(round(int(image.width * ratio) / 32) * 32))
        resized = image.resize((resize_w, resize_h), resample=Image.Resampling.LANCZOS)
        array = cast(np.ndarray, cv2.cvtColor(np.asarray(resized, dtype=np.float32), cv2.COLOR_RGB2BGR))
        array -= 0.5
        array *= np.float32(1.0 / 127.5)
        return np.ascontiguousarray(array.transpose(2, 0, 1)[None])


def reading_order(boxes: np.ndarray) -> np.ndarray:
    """RapidOCR's `sorted_boxes` (top-left corners: lines top to bottom, then left to right) as indices,
    so each score stays with its box (RapidOCR and Immich sort the boxes but not their scores)."""
    y_order = np.argsort(boxes[:, 0, 1], kind="stable")
    lines = np.concatenate([[0], np.cumsum(np.diff(boxes[y_order, 0, 1]) >= LINE_GAP)])
    return y_order[np.lexsort((boxes[y_order, 0, 0], lines))]


def _no_text() -> TextDetectionOutput:
    return {"boxes": np.empty((0, 4, 2), np.float32), "scores": np.empty(0, np.float32)}


class _RecognizerOnSession(RapidTextRecognizer):
    """RapidOCR's recogniser (width-sorted batches, 48-px-high resize, CTC decoding) on our session.

    RapidOCR's own `__init__` would open a second ONNX Runtime session on the CPU; the rest is unchanged."""

    def __init__(self, session: Session, character: list[str], lang: LangRec) -> None:
        if normalize_lang(lang) in RTL_LANGS:
            validate_rtl_dependency()
        name = session.get_inputs()[0].name
        self.session = lambda batch: session.run(None, {name: batch})[0]
        self.postprocess_op = CTCLabelDecode(character=list(character))
        self.rec_batch_num = REC_BATCH
        self.rec_image_shape = REC_IMAGE_SHAPE
        self.cfg = SimpleNamespace(lang_type=lang, font_path=None)  # type: ignore[assignment]  # read as attributes


class OcrTextRecognizer(PaddleOcrModel):
    identity = (ModelType.RECOGNITION, ModelTask.OCR)
    depends = [(ModelType.DETECTION, ModelTask.OCR)]
    recognizer: _RecognizerOnSession | None = None

    def _load(self) -> Session:
        session = self._make_session(self.model_path)
        lang = split_name(self.full_name)[0]
        try:
            self.recognizer = _RecognizerOnSession(session, character_list(self.model_path), lang)
        except ModuleNotFoundError as e:
            raise ModelNotFoundError(f"OCR in {lang.value} needs an extra package: {e}") from None
        return session

    def _release(self) -> None:
        self.recognizer = None  # RapidOCR's recogniser runs our session

    def _predict(self, inputs: ImageInput, texts: TextDetectionOutput, **options: Any) -> TextRecognitionOutput:
        min_score = _number(options, "minScore", DEFAULT_TEXT_SCORE)
        boxes, box_scores = texts["boxes"], texts["scores"]
        if boxes.shape[0] == 0:
            return _no_recognition()
        image = decode_image(inputs)
        recognizer = self.recognizer
        assert recognizer is not None  # loaded: _predict runs inside `in_use`
        result = recognizer(TextRecInput(img=crops(image, boxes)))
        if result.txts is None:
            return _no_recognition()
        keep = np.asarray(result.scores, dtype=np.float32) > min_score
        normalized = boxes / np.array([image.width, image.height], dtype=np.float32)
        return {
            "box": normalized.reshape(-1, 8)[keep].reshape(-1),
            "boxScore": box_scores[keep],
            "text": [t for t, k in zip(result.txts, keep) if k],
            "textScore": np.asarray(result.scores, dtype=np.float32)[keep],
        }


def _no_recognition() -> TextRecognitionOutput:
    empty = np.empty(0, np.float32)
    return {"box": empty, "boxScore": empty, "text": [], "textScore": empty}


def crops(image: Image.Image, boxes: np.ndarray) -> list[np.ndarray]:
    """Immich's perspective-corrected text crops (PIL bicubic), upright when taller than 1.5x their width, BGR."""
    widths = np.maximum(np.linalg.norm(boxes[:, 1] - boxes[:, 0], axis=1), np.linalg.norm(boxes[:, 2] - boxes[:, 3], axis=1))
    heights = np.maximum(np.linalg.norm(boxes[:, 0] - boxes[:, 3], axis=1), np.linalg.norm(boxes[:, 1] - boxes[:, 2], axis=1))
    out = []
    for box, w, h in zip(boxes, widths.astype(np.int32), heights.astype(np.int32)):
        target = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
        # PIL maps output pixels back to input pixels: the transform from the crop to the box.
        m = cv2.getPerspectiveTransform(target, box.astype(np.float32))
        m = m / m[2, 2]
        crop = image.transform(
            (int(w), int(h)), Image.Transform.PERSPECTIVE, tuple(m.flatten()[:8]), resample=Image.Resampling.BICUBIC
        )
        if crop.height / crop.width >= 1.5:
            crop = crop.rotate(90, expand=True)
        out.append(cv2.cvtColor(np.asarray(crop), cv2.COLOR_RGB2BGR))
    return out
