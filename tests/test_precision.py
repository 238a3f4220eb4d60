"""`auto` precision and throughput sessions on OpenVINO: a lower precision only where the vectors stay
interchangeable (cosine >= 0.99995 to f32 on the model's own calibration inputs: a margin above the 0.9999
guaranteed, for inputs that were not sampled), remembered per model; detectors always f32; the precision a
session reports is the one its compiled model computes in; sessions for several callers use OpenVINO streams."""

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
from immich_ml_desktop.models.samples import face_crops as samples_face_crops

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
        assert (verdict["precision"] == low) == (verdict["min_cosine"] >= precision_mod.CHECK_COSINE), key
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


def _calibration_with_cosine(cosine: float, calls: list[str]):
    """A calibration whose lower-precision vectors have exactly `cosine` to the f32 ones."""

    def run(session) -> np.ndarray:
        calls.append(session.precision)
        angle = 0.0 if session.precision == "f32" else float(np.arccos(cosine))
        return np.array([[np.cos(angle), np.sin(angle), 0.0], [1.0, 0.0, 0.0]])

    return run


def _low_label(path: Path, tmp_path: Path) -> str:
    """What this CPU really computes a bf16 session in (bf16 with bf16 arithmetic, else f32): the label a
    session chosen in the (patched-in) fast precision reports."""
    return make_session(path, _ov_cpu(), RuntimeOptions(precision="bf16", cache_dir=tmp_path / "probe")).precision


def test_auto_keeps_a_margin_above_the_guarantee(models_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Samples at exactly the guaranteed 0.9999 are not enough: an input that was not sampled may fall below
    (tiny CLIP's bf16 text encoder: samples 0.99994, 2 of 200 other phrases below 0.9999)."""
    monkeypatch.setattr(runtime, "native_low_precision", lambda device: "bf16")
    path = models_dir / "clip" / CLIP_PACK / "visual" / "model.onnx"
    options = RuntimeOptions(cache_dir=tmp_path)
    low = _low_label(path, tmp_path)
    calls: list[str] = []
    decided = {
        c: make_session(path, _ov_cpu(), options, calibration=_calibration_with_cosine(c, calls), verdict_key=str(c)).precision
        for c in (precision_mod.MIN_COSINE, 0.99994, precision_mod.CHECK_COSINE + 1e-6, 0.999999)
    }
    assert decided == {precision_mod.MIN_COSINE: "f32", 0.99994: "f32", precision_mod.CHECK_COSINE + 1e-6: low, 0.999999: low}
    assert precision_mod.CHECK_COSINE > precision_mod.MIN_COSINE


def test_auto_decides_by_the_calibration_and_remembers_it(models_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(runtime, "native_low_precision", lambda device: "bf16")
    path = models_dir / "clip" / CLIP_PACK / "visual" / "model.onnx"
    options = RuntimeOptions(cache_dir=tmp_path)
    calls: list[str] = []
    close = make_session(path, _ov_cpu(), options, calibration=_calibration(1e-4, calls), verdict_key="close")
    far = make_session(path, _ov_cpu(), options, calibration=_calibration(0.05, calls), verdict_key="far")
    low = _low_label(path, tmp_path)
    assert (close.precision, far.precision) == (low, "f32")
    assert sorted(calls) == sorted([low, low, "f32", "f32"])
    calls.clear()
    again = make_session(path, _ov_cpu(), options, calibration=_calibration(0.05, calls), verdict_key="close")
    assert again.precision == low and calls == []  # remembered: no second check
    assert make_session(path, _ov_cpu(), options).precision == "f32"  # nothing to check it with: exact


def test_a_failing_calibration_means_f32(models_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(runtime, "native_low_precision", lambda device: "bf16")

    def broken(session) -> np.ndarray:
        raise ValueError("the sample inputs do not fit this model")

    path = models_dir / "clip" / CLIP_PACK / "visual" / "model.onnx"
    session = make_session(path, _ov_cpu(), RuntimeOptions(cache_dir=tmp_path), calibration=broken)
    assert session.precision == "f32"
    assert not (tmp_path / "precision.json").exists()  # nothing remembered: it is tried again next time


def test_explicit_precisions_report_what_the_compiled_model_computes(models_dir: Path, tmp_path: Path) -> None:
    """The precision a session reports is read back from the compiled model, not copied from the request:
    a CPU computes bf16 only with bf16 instructions, and f16 natively only with f16 ones; without them
    OpenVINO's CPU plugin runs an f16 request in bf16 where it can (this AMD EPYC: AVX-512 bf16, no f16),
    else in f32. Sessions that say they compute alike give the very same vectors; f32 and bf16 do not."""
    capabilities = set(runtime._ov_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    bf16 = "bf16" if "BF16" in capabilities else "f32"
    expected = {"f32": "f32", "bf16": bf16, "f16": "f16" if "FP16" in capabilities else bf16}
    path = models_dir / "facial-recognition" / FACE_PACK / "recognition" / "model.onnx"
    crops = np.stack([np.transpose(c, (2, 0, 1)) for c in samples_face_crops()]).astype(np.float32) / 127.5 - 1
    sessions = {w: make_session(path, _ov_cpu(), RuntimeOptions(precision=w, cache_dir=tmp_path)) for w in expected}
    assert {w: s.precision for w, s in sessions.items()} == expected
    vectors = {w: s.run(None, {s.get_inputs()[0].name: crops[:1]})[0] for w, s in sessions.items()}
    for a in expected:
        for b in expected:
            assert np.array_equal(vectors[a], vectors[b]) == (expected[a] == expected[b]), (a, b)


def test_sessions_load_openvino_copies_written_once_and_hand_back_their_mapped_weights(models_dir: Path, tmp_path: Path) -> None:
    """Memory: an OpenVINO session compiles from an IR copy in the app's cache (f16 weights for bf16/f16),
    written once, never into the pack; once compiled, the pages mapped from those files are handed back."""
    path = models_dir / "clip" / CLIP_PACK / "visual" / "model.onnx"
    options = RuntimeOptions(precision="bf16", cache_dir=tmp_path)
    copy = runtime.ir_file(path, options, f16_weights=True)
    assert copy.suffix == ".xml" and copy.parent.parent == tmp_path and copy.with_suffix(".bin").is_file()
    assert copy.with_suffix(".bin").stat().st_size < 0.6 * path.stat().st_size  # f16: half the f32 weights
    exact_copy = runtime.ir_file(path, options, f16_weights=False)
    assert exact_copy != copy and exact_copy.with_suffix(".bin").stat().st_size > 0.9 * path.stat().st_size
    stamp = copy.stat().st_mtime_ns
    assert runtime.ir_file(path, options, f16_weights=True) == copy and copy.stat().st_mtime_ns == stamp
    assert runtime.ir_file(path, RuntimeOptions(precision="bf16"), f16_weights=True) == path  # no cache: the pack's file
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")  # the copy cannot be written: the original is compiled instead
    assert runtime.ir_file(path, RuntimeOptions(cache_dir=blocked), f16_weights=True) == path

    low = make_session(path, _ov_cpu(), options)
    exact = make_session(path, _ov_cpu(), RuntimeOptions(precision="f32", cache_dir=tmp_path))
    # f16 weights only where the CPU computes below f32 anyway; elsewhere bf16 runs in f32 on the exact weights
    assert low.path == (copy if runtime.computes_below_f32(_ov_cpu(), "bf16") else exact_copy)
    assert exact.path == exact_copy
    assert _resident_kb_mapped_from(tmp_path) <= 16  # a few pages at most, not the weights
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    ort = make_session(path, runtime.resolve_device("cpu"), RuntimeOptions(precision="f32"))
    assert _cos(exact.run(None, {"image": x})[0][0], ort.run(None, {"image": x})[0][0]) > 0.999999
    assert _cos(low.run(None, {"image": x})[0][0], ort.run(None, {"image": x})[0][0]) > 0.999


def _resident_kb_mapped_from(folder: Path) -> int:
    """Resident kB of this process's file mappings under `folder` (/proc/self/smaps)."""
    if not Path("/proc/self/smaps").exists():
        pytest.skip("no /proc/self/smaps on this system")
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:  # a mapping's header line
            inside = len(fields) >= 6 and fields[5].startswith(str(folder.resolve()))
        elif inside and fields[:1] == ["Rss:"]:
            total += int(fields[1])
    return total


def test_sessions_for_several_callers_use_streams(models_dir: Path, tmp_path: Path) -> None:
    path = models_dir / "clip" / CLIP_PACK / "visual" / "model.onnx"
    one = make_session(path, _ov_cpu(), RuntimeOptions(precision="f32", cache_dir=tmp_path))
    many = make_session(path, _ov_cpu(), RuntimeOptions(precision="f32", parallel=2, cache_dir=tmp_path))
    assert str(one._compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"
    assert str(many._compiled.get_property("PERFORMANCE_HINT")) == "THROUGHPUT"
    assert many._compiled.get_property("ENABLE_CPU_PINNING") is False  # our own threads share the cores
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    assert _cos(one.run(None, {"image": x})[0][0], many.run(None, {"image": x})[0][0]) > 0.99999
