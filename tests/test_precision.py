"""`auto` precision and throughput sessions on OpenVINO: a lower precision only where the vectors stay
interchangeable (cosine >= 0.9999 to f32 on the model's own calibration inputs), remembered per model;
detectors always f32; sessions for several callers use OpenVINO streams."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from immich_ml_desktop.models import precision as precision_mod
from immich_ml_desktop.models import runtime
from immich_ml_desktop.models.engine import Engine
from immich_ml_desktop.models.images import decode_image
from immich_ml_desktop.models.runtime import RuntimeOptions, make_session, native_low_precision, openvino_available

from conftest import CLIP_PACK, FACE_PACK, photo

pytestmark = pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed on this machine")


def _ov_cpu() -> runtime.Device:
    return runtime.resolve_device("openvino:CPU")


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_min_row_cosine() -> None:
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert precision_mod.min_row_cosine(a, a * 3) == pytest.approx(1.0)
    assert precision_mod.min_row_cosine(a, np.array([[1.0, 0.0], [2.0, 0.0]])) == pytest.approx(0.0)
    assert precision_mod.min_row_cosine(a, a[:1]) == -1.0  # a different number of vectors never passes


def test_auto_keeps_only_what_stays_interchangeable(models_dir: Path, tmp_path: Path) -> None:
    """Every model loaded with `auto` runs either in f32 or in the device's lower precision with a measured
    calibration cosine >= 0.9999; the face detector is always f32; vectors match the f32 ones."""
    low = native_low_precision(_ov_cpu())
    with Engine(models_dir, "openvino:CPU", work_dir=tmp_path) as auto, \
            Engine(models_dir, "openvino:CPU", precision="f32", work_dir=tmp_path / "f32") as exact:
        image = decode_image(photo("insightface/t1.jpg").read_bytes())
        a_faces, e_faces = auto.faces(FACE_PACK, image), exact.faces(FACE_PACK, image)
        assert [f.box.tolist() for f in a_faces] == [f.box.tolist() for f in e_faces]
        for a, e in zip(a_faces, e_faces):
            assert _cos(a.embedding, e.embedding) >= 0.9999
        assert _cos(auto.clip_image(CLIP_PACK, image), exact.clip_image(CLIP_PACK, image)) >= 0.9999
        assert _cos(auto.clip_text(CLIP_PACK, "a dog on a beach"), exact.clip_text(CLIP_PACK, "a dog on a beach")) >= 0.9999
        loaded = {(m["type"], m["name"]): m["precision"] for m in auto.loaded_models()}
        assert {m["precision"] for m in exact.loaded_models()} == {"f32"}
    assert loaded[("detection", FACE_PACK)] == "f32"  # boxes and landmarks feed the face vectors
    assert set(loaded.values()) <= {"f32", low}
    verdicts = json.loads((tmp_path / "openvino-cache" / "precision.json").read_text()) if low != "f32" else {}
    for key, verdict in verdicts.items():
        assert verdict["candidate"] == low
        assert (verdict["precision"] == low) == (verdict["min_cosine"] >= precision_mod.MIN_COSINE), key
    if low != "f32":  # the CLIP encoders and the face recognizer were each checked once
        assert len(verdicts) == 3


def _calibration(drift: float, calls: list[str]):
    """A calibration whose lower-precision vectors are off by `drift` (f32 sessions answer exactly)."""
    base = np.random.default_rng(0).standard_normal((4, 16))

    def run(session) -> np.ndarray:
        calls.append(session.precision)
        if session.precision == "f32":
            return base
        return base + drift * np.random.default_rng(1).standard_normal(base.shape)

    return run


def test_auto_decides_by_the_calibration_and_remembers_it(models_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(runtime, "native_low_precision", lambda device: "bf16")
    path = models_dir / "clip" / CLIP_PACK / "visual" / "model.onnx"
    options = RuntimeOptions(cache_dir=tmp_path)
    calls: list[str] = []
    close = make_session(path, _ov_cpu(), options, calibration=_calibration(1e-4, calls), verdict_key="close")
    far = make_session(path, _ov_cpu(), options, calibration=_calibration(0.05, calls), verdict_key="far")
    assert (close.precision, far.precision) == ("bf16", "f32")
    assert sorted(calls) == ["bf16", "bf16", "f32", "f32"]
    calls.clear()
    again = make_session(path, _ov_cpu(), options, calibration=_calibration(0.05, calls), verdict_key="close")
    assert again.precision == "bf16" and calls == []  # remembered: no second check
    assert make_session(path, _ov_cpu(), options).precision == "f32"  # nothing to check it with: exact


def test_a_failing_calibration_means_f32(models_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(runtime, "native_low_precision", lambda device: "bf16")

    def broken(session) -> np.ndarray:
        raise ValueError("the sample inputs do not fit this model")

    path = models_dir / "clip" / CLIP_PACK / "visual" / "model.onnx"
    session = make_session(path, _ov_cpu(), RuntimeOptions(cache_dir=tmp_path), calibration=broken)
    assert session.precision == "f32"
    assert not (tmp_path / "precision.json").exists()  # nothing remembered: it is tried again next time


def test_explicit_precisions_are_used_as_given(models_dir: Path, tmp_path: Path) -> None:
    path = models_dir / "facial-recognition" / FACE_PACK / "recognition" / "model.onnx"
    for wanted in ("f32", "bf16"):
        assert make_session(path, _ov_cpu(), RuntimeOptions(precision=wanted, cache_dir=tmp_path)).precision == wanted


def test_sessions_for_several_callers_use_streams(models_dir: Path, tmp_path: Path) -> None:
    path = models_dir / "clip" / CLIP_PACK / "visual" / "model.onnx"
    one = make_session(path, _ov_cpu(), RuntimeOptions(precision="f32", cache_dir=tmp_path))
    many = make_session(path, _ov_cpu(), RuntimeOptions(precision="f32", parallel=2, cache_dir=tmp_path))
    assert str(one._compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"
    assert str(many._compiled.get_property("PERFORMANCE_HINT")) == "THROUGHPUT"
    assert many._compiled.get_property("ENABLE_CPU_PINNING") is False  # our own threads share the cores
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    assert _cos(one.run(None, {"image": x})[0][0], many.run(None, {"image": x})[0][0]) > 0.99999
