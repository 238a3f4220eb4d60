"""`immich-ml-desktop predict` and `devices`: Immich's exact answer shapes, and one clear error for bad input."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CLIP_PACK, FACE_PACK, photo
from immich_ml_desktop.cli import main

CLIP_VISUAL = json.dumps({"clip": {"visual": {"modelName": CLIP_PACK}}})
CLIP_TEXT = json.dumps({"clip": {"textual": {"modelName": CLIP_PACK, "options": {"language": "en"}}}})
FACES = json.dumps(
    {
        "facial-recognition": {
            "detection": {"modelName": FACE_PACK, "options": {"minScore": 0.7}},
            "recognition": {"modelName": FACE_PACK},
        }
    }
)


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_clip_visual_shape(capsys, models_dir: Path) -> None:
    code, out, _ = run_cli(capsys, "predict", "--cache-dir", str(models_dir), "--device", "cpu",
                           "--entries", CLIP_VISUAL, "--image", str(photo("skimage/astronaut.png")))
    assert code == 0
    answer = json.loads(out)
    assert set(answer) == {"clip", "imageHeight", "imageWidth"}
    assert isinstance(answer["clip"], str)  # a JSON string holding the array, as Immich stores it
    vec = json.loads(answer["clip"])
    assert len(vec) == 512 and abs(np.linalg.norm(vec) - 1) < 1e-3
    assert (answer["imageWidth"], answer["imageHeight"]) == Image.open(photo("skimage/astronaut.png")).size


def test_clip_textual_shape(capsys, models_dir: Path) -> None:
    code, out, _ = run_cli(capsys, "predict", "--cache-dir", str(models_dir), "--entries", CLIP_TEXT, "--text", "a cat")
    assert code == 0
    answer = json.loads(out)
    assert set(answer) == {"clip"} and len(json.loads(answer["clip"])) == 512


def test_facial_recognition_shape(capsys, models_dir: Path) -> None:
    code, out, _ = run_cli(capsys, "predict", "--cache-dir", str(models_dir), "--device", "cpu",
                           "--entries", FACES, "--image", str(photo("insightface/t1.jpg")))
    assert code == 0
    answer = json.loads(out)
    assert set(answer) == {"facial-recognition", "imageHeight", "imageWidth"}
    faces = answer["facial-recognition"]
    assert len(faces) == 6
    for face in faces:
        assert set(face) == {"boundingBox", "embedding", "score"}
        assert set(face["boundingBox"]) == {"x1", "y1", "x2", "y2"}
        assert all(float(v).is_integer() for v in face["boundingBox"].values())  # rounded pixels
        assert isinstance(face["embedding"], str) and len(json.loads(face["embedding"])) == 512
        assert 0.7 <= face["score"] <= 1


def test_detection_only_shape(capsys, models_dir: Path) -> None:
    entries = json.dumps({"facial-recognition": {"detection": {"modelName": FACE_PACK}}})
    code, out, _ = run_cli(capsys, "predict", "--cache-dir", str(models_dir), "--entries", entries,
                           "--image", str(photo("insightface/t1.jpg")))
    assert code == 0
    det = json.loads(out)["facial-recognition"]
    assert set(det) == {"boxes", "scores", "landmarks"}
    assert len(det["boxes"]) == len(det["scores"]) == len(det["landmarks"]) == 6
    assert len(det["boxes"][0]) == 4 and np.array(det["landmarks"]).shape == (6, 5, 2)


def test_no_faces_gives_empty_list(capsys, models_dir: Path) -> None:
    code, out, _ = run_cli(capsys, "predict", "--cache-dir", str(models_dir), "--entries", FACES,
                           "--image", str(photo("skimage/coffee.png")))
    assert code == 0 and json.loads(out)["facial-recognition"] == []


def test_devices_json(capsys) -> None:
    code, out, _ = run_cli(capsys, "devices", "--json")
    data = json.loads(out)
    assert code == 0 and "cpu" in [d["id"] for d in data["devices"]] and data["auto"]


def _jpeg(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def bad_inputs(tmp_path: Path) -> dict[str, Path]:
    jpeg = _jpeg()
    files = {
        "corrupt": b"\xff\xd8\xff\xe0" + b"garbage" * 100,
        "truncated": jpeg[: len(jpeg) // 2],
        "empty": b"",
        "text": b"this is not an image at all",
    }
    out = {}
    for name, data in files.items():
        out[name] = tmp_path / f"{name}.jpg"
        out[name].write_bytes(data)
    return out


@pytest.mark.parametrize("kind, message", [("corrupt", "corrupt"), ("truncated", "truncated"), ("empty", "empty"), ("text", "not an image format")])
def test_bad_images_give_one_clear_error(capsys, models_dir: Path, bad_inputs, kind: str, message: str) -> None:
    code, out, err = run_cli(capsys, "predict", "--cache-dir", str(models_dir), "--entries", CLIP_VISUAL,
                             "--image", str(bad_inputs[kind]))
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


def test_unknown_model_names_what_is_missing(capsys, models_dir: Path, tmp_path: Path) -> None:
    entries = json.dumps({"clip": {"textual": {"modelName": "no-such-model"}}})
    code, _, err = run_cli(capsys, "predict", "--cache-dir", str(models_dir), "--no-download", "--entries", entries, "--text", "x")
    assert code != 0 and "no-such-model" in err and "not a model Immich knows" in err and "models list" in err
    # a catalogued model that is missing: the command that downloads it
    entries = json.dumps({"clip": {"textual": {"modelName": "ViT-B-32__openai"}}})
    code, _, err = run_cli(capsys, "predict", "--cache-dir", str(tmp_path), "--no-download", "--entries", entries, "--text", "x")
    assert code != 0 and "models download ViT-B-32__openai" in err


@pytest.fixture
def damaged_cache(models_dir: Path, tmp_path: Path) -> Path:
    """A copy of the CLIP pack with a truncated visual model and a missing textual model."""
    pack = tmp_path / "cache" / "clip" / CLIP_PACK
    shutil.copytree(models_dir / "clip" / CLIP_PACK, pack)
    model = pack / "visual" / "model.onnx"
    model.write_bytes(model.read_bytes()[:5000])
    (pack / "textual" / "model.onnx").unlink()
    return tmp_path / "cache"


@pytest.mark.parametrize("device", ["cpu", "openvino:CPU"])
def test_damaged_model_gives_clear_error(capsys, damaged_cache: Path, device: str) -> None:
    from immich_ml_desktop.models.runtime import openvino_available

    if device.startswith("openvino") and not openvino_available():
        pytest.skip("OpenVINO is not installed")
    code, _, err = run_cli(capsys, "predict", "--cache-dir", str(damaged_cache), "--device", device, "--no-download",
                           "--entries", CLIP_VISUAL, "--image", str(photo("skimage/astronaut.png")))
    assert code != 0 and "cannot load" in err.lower() and "verify" in err
    code, _, err = run_cli(capsys, "predict", "--cache-dir", str(damaged_cache), "--no-download",
                           "--entries", json.dumps({"clip": {"textual": {"modelName": CLIP_PACK}}}), "--text", "x")
    assert code != 0 and "textual/model.onnx" in err


def test_unsupported_device(capsys, models_dir: Path) -> None:
    code, _, err = run_cli(capsys, "predict", "--cache-dir", str(models_dir), "--device", "cuda",
                           "--entries", CLIP_TEXT, "--text", "x")
    if "cuda" in err or code != 0:
        assert code != 0 and "not available" in err and "Available:" in err
    else:  # pragma: no cover - only on a machine with CUDA
        assert code == 0


def test_malformed_entries(capsys, models_dir: Path) -> None:
    code, _, err = run_cli(capsys, "predict", "--cache-dir", str(models_dir), "--entries", "{not json", "--text", "x")
    assert code != 0 and "Invalid request format" in err


def test_console_script_exit_code_and_no_traceback(models_dir: Path, tmp_path: Path) -> None:
    """The real process: a corrupt image exits non-zero with one line on stderr, no traceback."""
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)
    proc = subprocess.run(
        [sys.executable, "-m", "immich_ml_desktop", "predict", "--cache-dir", str(models_dir),
         "--entries", CLIP_VISUAL, "--image", str(bad)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("error:")
