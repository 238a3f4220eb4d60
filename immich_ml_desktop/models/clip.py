"""CLIP visual and textual encoders, preprocessing exactly as Immich's ML service does.

Visual: RGB, shorter side to S with PIL bicubic, centre crop SxS, /255, (x-mean)/std, NCHW.
Textual: whitespace collapsed (SigLIP-style `canonicalize` also drops punctuation and lowercases),
`tokenizers` with the pad token padding to `context_length` and truncating; int32. Multilingual
M-CLIP models take `input_ids` + `attention_mask`; NLLB models get a language prefix.
"""

from __future__ import annotations

import json
import logging
import re
import string
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from PIL import Image

from immich_ml_desktop.models import samples
from immich_ml_desktop.models.base import InferenceModel, ModelTask, ModelType
from immich_ml_desktop.models.batching import batch_matches, batchable_copy, has_batch_axis
from immich_ml_desktop.models.images import ImageInput, decode_image, normalize_chw, resize_crop
from immich_ml_desktop.models.runtime import Session

log = logging.getLogger(__name__)


def serialize_embedding(vector: np.ndarray) -> str:
    """The JSON string Immich stores verbatim as a pgvector literal (orjson's float32 formatting)."""
    return orjson.dumps(np.ascontiguousarray(vector, dtype=np.float32), option=orjson.OPT_SERIALIZE_NUMPY).decode()


class _ClipModel(InferenceModel):
    @property
    def config_path(self) -> Path:
        return self.cache_dir / "config.json"

    @cached_property
    def model_cfg(self) -> dict[str, Any]:
        return json.loads(self.config_path.read_text(encoding="utf-8"))

    @property
    def embed_dim(self) -> int:
        return int(self.model_cfg["embed_dim"])

    def required_files(self) -> list[Path]:
        return [self.config_path, self.model_path]


class _IdleCoreHelper:
    """Lends a lone image request the core it would leave idle: while only one CLIP image is being
    prepared in this process, its resize runs in two bands (one on a helper thread); with more in flight
    each keeps to its own thread, so nothing is taken from throughput under load."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._pool: ThreadPoolExecutor | None = None

    @contextmanager
    def call(self):
        with self._lock:
            self._in_flight += 1
            alone = self._in_flight == 1 and (os.cpu_count() or 1) > 1
            if alone and self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clip-resize")
        try:
            yield self._pool if alone else None
        finally:
            with self._lock:
                self._in_flight -= 1


_idle_core = _IdleCoreHelper()


class ClipVisualEncoder(_ClipModel):
    identity = (ModelType.VISUAL, ModelTask.SEARCH)

    @property
    def preprocess_cfg_path(self) -> Path:
        return self.model_dir / "preprocess_cfg.json"

    def required_files(self) -> list[Path]:
        return [*super().required_files(), self.preprocess_cfg_path]

    def _load(self) -> Session:
        cfg = json.loads(self.preprocess_cfg_path.read_text(encoding="utf-8"))
        size = cfg["size"]
        self.size = int(size[0] if isinstance(size, list) else size)
        self.mean = np.array(cfg["mean"], dtype=np.float32)
        self.std = np.array(cfg["std"], dtype=np.float32)
        self._batch_session: Session | None = None
        self._batch_checked = False
        self._batch_lock = threading.Lock()
        session = self._make_session(self.model_path)
        self.input_name = session.get_inputs()[0].name
        return session

    def _release(self) -> None:
        self._batch_session, self._batch_checked = None, False

    def transform(self, image: Image.Image) -> np.ndarray:
        """One preprocessed image, CHW float32: Immich's resize, crop and normalisation, same pixels."""
        with _idle_core.call() as helper:
            image = resize_crop(image, self.size, helper)
        return normalize_chw(image, self.mean, self.std)

    def _calibrate(self, session: Session) -> np.ndarray:
        name = session.get_inputs()[0].name
        return np.concatenate([session.run(None, {name: self.transform(im)[np.newaxis]})[0] for im in samples.photos()])

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """Vectors for a preprocessed batch (N,3,S,S); batched in one call where the model allows."""
        with self.in_use():
            single = self.session
            assert single is not None
            if len(pixels) == 1:
                return single.run(None, {self.input_name: pixels})[0]
            session = self._batched_session()
            if session is None:
                return np.concatenate([single.run(None, {self.input_name: pixels[i : i + 1]})[0] for i in range(len(pixels))])
            return session.run(None, {self.input_name: pixels})[0]

    def _batched_session(self) -> Session | None:
        """A session that takes N images at once, checked against single runs; None if impossible."""
        with self._batch_lock:
            if self._batch_checked:
                return self._batch_session
            self._batch_checked = True
            assert self.session is not None
            if has_batch_axis(self.session.get_inputs()[0].shape):
                candidate: Session = self.session
            elif self.work_dir is None:
                return None
            else:
                try:
                    candidate = self._make_session(batchable_copy(self.model_path, self.work_dir))
                except Exception as e:  # noqa: BLE001
                    log.info("%r cannot take a batch axis (%s); one image per call", self, e)
                    return None
            rng = np.random.default_rng(0)
            samples = rng.standard_normal((2, 3, self.size, self.size), dtype=np.float32)
            if batch_matches(lambda x: candidate.run(None, {self.input_name: x})[0], samples):
                self._batch_session = candidate
                log.info("%r runs batches in one call", self)
            else:
                log.info("%r gives different vectors when batched; one image per call", self)
            return self._batch_session

    def encode_images(self, images: list[ImageInput]) -> np.ndarray:
        return self.embed(np.stack([self.transform(decode_image(im)) for im in images]))

    def _predict(self, inputs: ImageInput, **options: Any) -> str:
        image = decode_image(inputs)
        pixels = self.transform(image)[np.newaxis]
        assert self.session is not None
        return serialize_embedding(self.session.run(None, {self.input_name: pixels})[0][0])


_WHITESPACE = re.compile(r"\s+")
_PUNCTUATION = str.maketrans("", "", string.punctuation)

# Immich's language codes (Weblate) to FLORES-200 codes for NLLB text encoders (the common ones).
WEBLATE_TO_FLORES200 = {
    "af": "afr_Latn", "ar": "arb_Arab", "az": "azj_Latn", "be": "bel_Cyrl", "bg": "bul_Cyrl", "ca": "cat_Latn",
    "cs": "ces_Latn", "da": "dan_Latn", "de": "deu_Latn", "el": "ell_Grek", "en": "eng_Latn", "es": "spa_Latn",
    "et": "est_Latn", "fa": "pes_Arab", "fi": "fin_Latn", "fr": "fra_Latn", "he": "heb_Hebr", "hi": "hin_Deva",
    "hr": "hrv_Latn", "hu": "hun_Latn", "hy": "hye_Armn", "id": "ind_Latn", "it": "ita_Latn", "ja": "jpn_Hira",
    "ko": "kor_Hang", "lt": "lit_Latn", "lv": "lvs_Latn", "mn": "khk_Cyrl", "ms": "zsm_Latn", "nb_NO": "nob_Latn",
    "nl": "nld_Latn", "nn": "nno_Latn", "pl": "pol_Latn", "pt": "por_Latn", "pt_BR": "por_Latn", "ro": "ron_Latn",
    "ru": "rus_Cyrl", "sk": "slk_Latn", "sl": "slv_Latn", "sr_Cyrl": "srp_Cyrl", "sv": "swe_Latn", "ta": "tam_Taml",
    "te": "tel_Telu", "th": "tha_Thai", "tr": "tur_Latn", "uk": "ukr_Cyrl", "vi": "vie_Latn", "zh_Hans": "zho_Hans",
    "zh_Hant": "zho_Hant", "zh_SIMPLIFIED": "zho_Hans", "zh_TRADITIONAL": "zho_Hant",
}


def clean_text(text: str, canonicalize: bool = False) -> str:
    text = _WHITESPACE.sub(" ", text).strip()
    if canonicalize:
        text = text.translate(_PUNCTUATION).lower()
    return text


class ClipTextualEncoder(_ClipModel):
    identity = (ModelType.TEXTUAL, ModelTask.SEARCH)

    @property
    def tokenizer_path(self) -> Path:
        return self.model_dir / "tokenizer.json"

    @property
    def tokenizer_cfg_path(self) -> Path:
        return self.model_dir / "tokenizer_config.json"

    def required_files(self) -> list[Path]:
        return [*super().required_files(), self.tokenizer_path, self.tokenizer_cfg_path]

    def _load(self) -> Session:
        from tokenizers import Tokenizer

        text_cfg: dict[str, Any] = self.model_cfg.get("text_cfg", {})
        context_length = int(text_cfg.get("context_length", 77))
        tokenizer_cfg = json.loads(self.tokenizer_cfg_path.read_text(encoding="utf-8"))
        pad_token = tokenizer_cfg["pad_token"]
        if isinstance(pad_token, dict):  # some configs store AddedToken objects
            pad_token = pad_token["content"]
        self.canonicalize = text_cfg.get("tokenizer_kwargs", {}).get("clean") == "canonicalize"
        self.is_nllb = self.model_name.startswith("nllb")  # as Immich decides it
        tokenizer = Tokenizer.from_file(str(self.tokenizer_path))
        pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"pad token {pad_token!r} is not in {self.tokenizer_path.name}")
        tokenizer.enable_padding(length=context_length, pad_token=pad_token, pad_id=pad_id)
        tokenizer.enable_truncation(max_length=context_length)
        self.tokenizer = tokenizer
        session = self._make_session(self.model_path)
        self.input_names = [i.name for i in session.get_inputs()]
        return session

    def tokenize(self, text: str, language: str | None = None) -> dict[str, np.ndarray]:
        self.load()
        return self._feed(text, language, self.input_names)

    def _feed(self, text: str, language: str | None, input_names: list[str]) -> dict[str, np.ndarray]:
        text = clean_text(text, canonicalize=self.canonicalize)
        if self.is_nllb and language is not None:
            flores = WEBLATE_TO_FLORES200.get(language) or WEBLATE_TO_FLORES200.get(language.split("-")[0], "eng_Latn")
            text = f"{flores}{text}"
        tokens = self.tokenizer.encode(text)
        if "input_ids" in input_names:  # M-CLIP
            return {
                "input_ids": np.array([tokens.ids], dtype=np.int32),
                "attention_mask": np.array([tokens.attention_mask], dtype=np.int32),
            }
        return {input_names[0]: np.array([tokens.ids], dtype=np.int32)}

    def _calibrate(self, session: Session) -> np.ndarray:
        names = [i.name for i in session.get_inputs()]
        return np.concatenate([session.run(None, self._feed(p, None, names))[0] for p in samples.PHRASES])

    def encode_text(self, text: str, language: str | None = None) -> np.ndarray:
        with self.in_use():
            session = self.session
            assert session is not None
            return session.run(None, self.tokenize(text, language))[0][0]

    def _predict(self, inputs: str, language: str | None = None, **options: Any) -> str:
        return serialize_embedding(self.encode_text(inputs, language))
