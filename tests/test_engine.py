"""The inference engine on the real model packs: parity with PyTorch/insightface, faces, batching,
devices, thread safety and idle unloading."""

from __future__ import annotations

import csv
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import CLIP_PACK, FACE_PACK, FACE_PACK_128, MODELS as SHARED_MODELS, PHOTOS, photo
from immich_ml_desktop.models.engine import Engine
from immich_ml_desktop.models.images import to_bgr, decode_image
from immich_ml_desktop.models.runtime import Device, RuntimeOptions, discover_devices, make_session, resolve_device
from immich_ml_desktop.errors import DeviceUnavailableError


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def reference(models_dir: Path) -> dict:
    return json.loads((models_dir / "clip" / CLIP_PACK / "reference.json").read_text())


@pytest.fixture(params=["cpu_engine", "openvino_engine"])
def engine(request: pytest.FixtureRequest) -> Engine:
    return request.getfixturevalue(request.param)


def test_clip_image_vectors_match_pytorch_reference(engine: Engine, reference: dict) -> None:
    for rel, expected in reference["images"].items():
        got = engine.clip_image(CLIP_PACK, photo(rel).read_bytes())
        assert got.shape == (512,)
        assert cosine(got, expected) >= 0.9999, rel


def test_clip_text_vectors_match_pytorch_reference(engine: Engine, reference: dict) -> None:
    for text, expected in reference["texts"].items():
        assert cosine(engine.clip_text(CLIP_PACK, text), expected) >= 0.9999, text


def test_clip_visual_batch_equals_single_images(engine: Engine, reference: dict) -> None:
    images = [photo(rel).read_bytes() for rel in reference["images"]]
    batched = engine.clip_visual(CLIP_PACK).encode_images(images)
    singles = np.stack([engine.clip_image(CLIP_PACK, im) for im in images])
    assert batched.shape == (3, 512)
    assert np.allclose(batched, singles, atol=1e-4)


@pytest.mark.parametrize(
    "rel, count",
    [
        ("cospectrum_scrfd/images/solvay_conference_1927.png", 29),
        ("insightface/t1.jpg", 6),
        ("skimage/astronaut.png", 1),
        ("skimage/coffee.png", 0),
    ],
)
def test_face_counts(engine: Engine, rel: str, count: int) -> None:
    faces = engine.faces(FACE_PACK, photo(rel).read_bytes(), min_score=0.7)
    assert len(faces) == count
    for f in faces:
        assert f.embedding.shape == (512,) and f.score >= 0.7 and f.landmarks.shape == (5, 2)


def test_min_score_filters_faces(cpu_engine: Engine) -> None:
    data = photo("cospectrum_scrfd/images/solvay_conference_1927.png").read_bytes()
    loose = cpu_engine.faces(FACE_PACK, data, min_score=0.5)
    strict = cpu_engine.faces(FACE_PACK, data, min_score=0.85)
    assert len(strict) < 29 <= len(loose)
    assert all(f.score >= 0.85 for f in strict)


def test_faces_equal_direct_insightface_run(cpu_engine: Engine, models_dir: Path) -> None:
    """Boxes, scores and vectors are those of insightface's RetinaFace + ArcFaceONNX on ONNX Runtime."""
    import onnxruntime as ort
    from insightface.model_zoo import ArcFaceONNX, RetinaFace
    from insightface.utils.face_align import norm_crop

    pack = models_dir / "facial-recognition" / FACE_PACK
    det = RetinaFace(session=ort.InferenceSession(str(pack / "detection/model.onnx"), providers=["CPUExecutionProvider"]))
    det.prepare(ctx_id=0, det_thresh=0.7, input_size=(640, 640))
    rec_path = str(pack / "recognition/model.onnx")
    rec = ArcFaceONNX(rec_path, session=ort.InferenceSession(rec_path, providers=["CPUExecutionProvider"]))
    for rel in ["insightface/t1.jpg", "skimage/astronaut.png"]:
        data = photo(rel).read_bytes()
        bgr = to_bgr(decode_image(data))
        boxes, kps = det.detect(bgr)
        expected = np.concatenate([rec.get_feat(norm_crop(bgr, k)) for k in kps])
        ours = cpu_engine.faces(FACE_PACK, data, min_score=0.7)
        assert len(ours) == len(boxes)
        for face, box, vec in zip(ours, boxes, expected):
            assert np.array_equal(face.box, box[:4].round())
            assert face.score == pytest.approx(float(box[4]), abs=1e-6)
            assert cosine(face.embedding, vec) > 0.99999
            assert np.allclose(face.embedding, vec, atol=1e-3 * np.abs(vec).max())


def test_openvino_faces_match_onnxruntime(cpu_engine: Engine, openvino_engine: Engine) -> None:
    data = photo("insightface/t1.jpg").read_bytes()
    a = cpu_engine.faces(FACE_PACK, data)
    b = openvino_engine.faces(FACE_PACK, data)
    assert len(a) == len(b) == 6
    for fa, fb in zip(a, b):
        assert np.abs(fa.box - fb.box).max() <= 1.0
        assert cosine(fa.embedding, fb.embedding) > 0.9999


def _identity_faces(engine: Engine) -> list[tuple[str, np.ndarray]]:
    rows = list(csv.DictReader((PHOTOS / "face_identities.csv").open()))
    out = []
    for row in rows:
        faces = engine.faces(FACE_PACK, (PHOTOS / row["path"]).read_bytes(), min_score=0.5)
        if faces:  # the labelled face is the largest one
            largest = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
            out.append((row["identity"], largest.embedding))
    return out


def test_same_person_pairs_closer_than_different_person_pairs(cpu_engine: Engine) -> None:
    faces = _identity_faces(cpu_engine)
    assert len(faces) >= 12
    same, diff = [], []
    for i in range(len(faces)):
        for j in range(i + 1, len(faces)):
            d = 1 - cosine(faces[i][1], faces[j][1])
            (same if faces[i][0] == faces[j][0] else diff).append(d)
    assert same and diff
    assert np.median(same) < 0.5 < np.median(diff)
    assert np.mean(same) < np.mean(diff) - 0.3


def test_128d_pack_through_the_same_code(cpu_engine: Engine) -> None:
    faces = cpu_engine.faces(FACE_PACK_128, photo("insightface/t1.jpg").read_bytes())
    assert len(faces) == 6
    assert all(f.embedding.shape == (128,) for f in faces)


@pytest.mark.parametrize("pack", [FACE_PACK, FACE_PACK_128])
def test_recognition_batch_equals_face_by_face(cpu_engine: Engine, pack: str) -> None:
    """The r512 pack flattens to [1, -1]: batched it must still give per-face vectors."""
    from immich_ml_desktop.models.base import ModelTask, ModelType

    rec = cpu_engine.get_model(ModelTask.FACIAL_RECOGNITION, ModelType.RECOGNITION, pack)
    det = cpu_engine.get_model(ModelTask.FACIAL_RECOGNITION, ModelType.DETECTION, pack)
    bgr = to_bgr(decode_image(photo("insightface/t1.jpg").read_bytes()))
    crops = rec.crops(bgr, det.detect_bgr(bgr, 0.7))
    batched = rec.embed_crops(crops)
    singles = np.concatenate([rec.model.get_feat([c]) for c in crops])
    assert rec.can_batch, "a symbolic batch axis should make this pack batchable"
    assert batched.shape == singles.shape == (6, batched.shape[1])
    assert np.allclose(batched, singles, atol=1e-3 * np.abs(singles).max())


def test_model_packs_are_never_modified(models_dir: Path, tmp_path: Path) -> None:
    files = sorted(p for p in models_dir.rglob("*") if p.is_file())
    before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in files}
    with Engine(models_dir, "cpu", work_dir=tmp_path) as engine:
        engine.faces(FACE_PACK, photo("insightface/t1.jpg").read_bytes())
        engine.clip_visual(CLIP_PACK).encode_images([photo("skimage/astronaut.png").read_bytes()] * 2)
    assert {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in files} == before
    assert list((tmp_path / "batch-axis").glob("*.onnx")), "derived models belong in the app's work dir"


def test_concurrent_predictions_are_identical(cpu_engine: Engine) -> None:
    data = photo("skimage/astronaut.png").read_bytes()
    expected = cpu_engine.clip_image(CLIP_PACK, data)
    results: list[np.ndarray] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                results.append(cpu_engine.clip_image(CLIP_PACK, data))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 12
    assert all(np.allclose(r, expected, atol=1e-6) for r in results)


def test_idle_models_unload(models_dir: Path, tmp_path: Path) -> None:
    with Engine(models_dir, "cpu", work_dir=tmp_path, model_ttl=0.3) as engine:
        engine.clip_text(CLIP_PACK, "a dog")
        assert [m["name"] for m in engine.loaded_models()] == [CLIP_PACK]
        deadline = time.monotonic() + 5
        while engine.loaded_models() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.loaded_models() == []
        assert engine.clip_text(CLIP_PACK, "a dog").shape == (512,)  # loads again on demand


def test_discovered_devices_really_run_models(models_dir: Path) -> None:
    """Discovery lists only what this machine has: every CPU device it lists (ONNX Runtime's, OpenVINO's)
    loads and runs a model there, without falling back; `auto` is one of them and runs too; a device it
    does not list is refused with the list of those it does."""
    devices = discover_devices()
    ids = [d.id for d in devices]
    assert "cpu" in ids and len(ids) == len(set(ids))
    model = models_dir / "clip" / CLIP_PACK / "visual" / "model.onnx"
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), dtype=np.float32)
    outputs = {}
    for device in [d for d in devices if d.id in ("cpu", "openvino:CPU")]:
        session = make_session(model, device, RuntimeOptions(precision="f32"), fallback=False)
        assert session.device == device
        outputs[device.id] = session.run(None, {"image": x})[0][0]
    assert all(float(v @ outputs["cpu"] / np.linalg.norm(v) / np.linalg.norm(outputs["cpu"])) > 0.99999 for v in outputs.values())
    auto = resolve_device("auto")
    assert auto in devices
    if auto.id in outputs:
        assert make_session(model, auto, RuntimeOptions(precision="f32"), fallback=False).device == auto
    assert resolve_device("CPU").id == "cpu"  # ids are not case-sensitive
    with pytest.raises(DeviceUnavailableError) as refused:
        resolve_device("cuda:7")
    assert str(refused.value).endswith("Available: " + ", ".join(["auto", *ids]) + ".")


def test_failed_device_falls_back_to_cpu_with_a_warning(models_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A device that exists in name but cannot load the model (an OpenVINO device this machine lacks)."""
    from immich_ml_desktop.models.runtime import openvino_available

    if not openvino_available():
        pytest.skip("OpenVINO is not installed")
    ghost = Device("openvino:GPU.9", "openvino", "GPU.9", "a GPU that is not there")
    with caplog.at_level(logging.WARNING):
        session = make_session(models_dir / "clip" / CLIP_PACK / "visual/model.onnx", ghost, RuntimeOptions())
    assert session.device.id == "cpu"
    assert any("falling back to cpu" in r.getMessage() for r in caplog.records)


def test_auto_prefers_cuda_when_onnxruntime_offers_it__mocked_no_gpu_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """MOCK: this machine has no CUDA GPU, so ONNX Runtime's provider list is faked to include CUDA.
    Checks the ranking (`auto` takes CUDA first) and that a CUDA session asks for the CPU provider as
    its fallback for unsupported operators."""
    import onnxruntime as ort

    from immich_ml_desktop.models import runtime

    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    devices = runtime.discover_devices()
    assert devices[0].id == "cuda" and runtime.resolve_device("auto").id == "cuda"

    seen: list = []
    real_session = ort.InferenceSession

    def fake_session(path, sess_options=None, providers=None):
        seen.append(providers)
        if "CUDAExecutionProvider" in providers:
            raise RuntimeError("CUDA driver version is insufficient for CUDA runtime version")
        return real_session(path, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(ort, "InferenceSession", fake_session)
    model = SHARED_MODELS / "clip" / CLIP_PACK / "visual" / "model.onnx"
    if not model.exists():
        pytest.skip("shared model packs are absent")
    session = runtime.make_session(model, devices[0], RuntimeOptions())
    assert seen[0] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert session.device.id == "cpu"  # fell back, with a logged warning (see the OpenVINO test)
