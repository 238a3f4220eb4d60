"""Idle unloading gives the memory back and never pulls a model from under a call (issue 13, item 2).

Every session the models open goes through `base.make_session`; the tests keep a weak reference to each
(real ONNX Runtime sessions on the shared packs, nothing stubbed) and check that none survives an unload,
for face detection and recognition, OCR detection and recognition, and CLIP's single and batch sessions."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import CLIP_PACK, FACE_PACK, photo
from immich_ml_desktop.models import base
from immich_ml_desktop.models.base import ModelTask, ModelType
from immich_ml_desktop.models.engine import Engine
from immich_ml_desktop.models.images import DecodedImage

OCR_MODEL = "PP-OCRv6_small"  # ships inside the rapidocr wheel
FACE_PHOTO = "face_recognition/examples/obama.jpg"
TEXT_PHOTO = "immich_test_assets/albums/text/handwritten-notes.jpg"


@pytest.fixture
def sessions(monkeypatch: pytest.MonkeyPatch) -> list[weakref.ref]:
    """Weak references to every session a model opens from here on."""
    opened: list[weakref.ref] = []
    real = base.make_session

    def recording(*args, **kwargs):
        session = real(*args, **kwargs)
        opened.append(weakref.ref(session))
        return session

    monkeypatch.setattr(base, "make_session", recording)
    return opened


def _alive(refs: list[weakref.ref]) -> int:
    gc.collect()
    return sum(r() is not None for r in refs)


def _use_every_kind(engine: Engine) -> None:
    face = photo(FACE_PHOTO).read_bytes()
    assert engine.faces(FACE_PACK, face), "the test photo has a face"
    visual = engine.clip_visual(CLIP_PACK)
    assert visual.encode_images([face, face]).shape[0] == 2  # two at once: the batch session too
    assert engine.clip_text(CLIP_PACK, "a dog").shape == (512,)
    entries = {"ocr": {"detection": {"modelName": OCR_MODEL, "options": {"minScore": 0.5, "maxResolution": 736}},
                       "recognition": {"modelName": OCR_MODEL, "options": {"minScore": 0.8}}}}
    answer = engine.predict_entries(entries, image=DecodedImage.from_bgr(cv2.imread(str(photo(TEXT_PHOTO)))))
    assert len(answer["ocr"]["text"]) > 0


def test_unload_frees_every_session_of_faces_ocr_and_clip(models_dir: Path, tmp_path: Path, sessions) -> None:
    with Engine(models_dir, "cpu", work_dir=tmp_path, model_ttl=0) as engine:
        _use_every_kind(engine)
        kinds = {(m["task"], m["type"]) for m in engine.loaded_models()}
        assert kinds == {("facial-recognition", "detection"), ("facial-recognition", "recognition"),
                         ("clip", "visual"), ("clip", "textual"), ("ocr", "detection"), ("ocr", "recognition")}
        assert _alive(sessions) >= 6  # one per model at least (a batch session where a model has no batch axis)
        engine.unload_all()
        assert engine.loaded_models() == []
        assert _alive(sessions) == 0, "a model kept a session after unloading"
        _use_every_kind(engine)  # and everything loads again on demand


def test_the_reaper_unloads_idle_models_only(models_dir: Path, tmp_path: Path) -> None:
    """A model a call is using (between load and run, or a long run) stays loaded however long the call
    takes; once no call uses it and the idle time has passed, it is unloaded."""
    ttl = 0.2
    with Engine(models_dir, "cpu", work_dir=tmp_path, model_ttl=ttl) as engine:
        model = engine.get_model(ModelTask.SEARCH, ModelType.TEXTUAL, CLIP_PACK)
        with model.in_use():
            deadline = time.monotonic() + 10 * ttl
            while time.monotonic() < deadline:  # the reaper looks every ttl/2
                assert model.loaded and model.session is not None
                time.sleep(ttl / 4)
            assert model.encode_text("still here").shape == (512,)
        deadline = time.monotonic() + 30
        while model.loaded and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not model.loaded and model.session is None


def test_calls_racing_the_reaper_all_succeed(models_dir: Path, tmp_path: Path) -> None:
    """With a reaper that unloads as soon as a model is idle, concurrent callers each get an answer
    (a model reloads for its next call instead of failing half-way)."""
    face = DecodedImage.from_bgr(cv2.imread(str(photo(FACE_PHOTO))))
    errors: list[BaseException] = []
    with Engine(models_dir, "cpu", work_dir=tmp_path, model_ttl=0.01) as engine:
        expected = engine.faces(FACE_PACK, face)

        def work() -> None:
            try:
                for _ in range(6):
                    found = engine.faces(FACE_PACK, face)
                    assert len(found) == len(expected)
                    assert np.allclose(found[0].embedding, expected[0].embedding, atol=1e-5)
                    time.sleep(0.03)  # idle gaps for the reaper
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
