"""OCR: Immich's `ocr` task on real PaddleOCR weights (the ones shipped in the RapidOCR wheel), real photos.

The four text photos are sent as Immich sends them (a 1440 px JPEG preview), through `predict_entries`
exactly as the ML server and the `predict` command run them.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from conftest import CLIP_PACK, FACE_PACK, photo
from immich_ml_desktop.errors import DownloadError, InvalidInputError, ModelNotFoundError
from immich_ml_desktop.model_store.fetcher import ModelFetcher, fetch_verified
from immich_ml_desktop.models import registry
from immich_ml_desktop.models.base import ModelTask, ModelType
from immich_ml_desktop.models.ocr import (
    WHEEL_MODELS,
    OcrTextDetector,
    OcrTextRecognizer,
    model_file,
    reading_order,
    shipped_models,
)
from immich_ml_desktop.models.predict import to_json

OCR_MODEL = "PP-OCRv6_small"  # ships inside the rapidocr wheel: real weights, no download


def ocr_entries(name: str = OCR_MODEL, box_score: float = 0.5, text_score: float = 0.8, max_res: int = 736) -> dict:
    """Immich's own OCR request (its defaults), with the model name swapped for the offline one."""
    return {
        "ocr": {
            "detection": {"modelName": name, "options": {"minScore": box_score, "maxResolution": max_res}},
            "recognition": {"modelName": name, "options": {"minScore": text_score}},
        }
    }


def preview(rel: str) -> bytes:
    """The JPEG Immich would send: shorter side 1440 px."""
    image = Image.open(photo(rel))
    image.draft("RGB", (1440, 1440))
    image = image.convert("RGB")
    scale = 1440 / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


TEXT = "immich_test_assets/albums/text/"
# Words a person reads in each photo; each must appear in what OCR returns (case-insensitive).
EXPECTED_WORDS = {
    "book-beside-flowers.jpg": ["dost", "Yanında", "kalplere", "Sevgili Dost", "Ali Ural", "Posta"],
    "craft-beer.jpg": ["MAIN STAY", "SEASONAL", "BARREL AGED", "RODEO CLOWN", "Session IPA", "F.U.N."],
    "handwritten-notes.jpg": ["progress", "feedback", "IMPORTANT", "REMEMBER THIS", "complete", "code"],
    "japanese-shop.jpg": ["KIRIN", "一番搾り"],
}
MIXED = {
    "clip": {"visual": {"modelName": CLIP_PACK}},
    "facial-recognition": {
        "detection": {"modelName": FACE_PACK, "options": {"minScore": 0.7}},
        "recognition": {"modelName": FACE_PACK},
    },
    **ocr_entries(),
}


@pytest.fixture(scope="module")
def answers(cpu_engine) -> dict[str, dict]:
    """One Immich OCR request per text photo; craft-beer (a face and text) goes in the mixed request."""
    result = {}
    for name in EXPECTED_WORDS:
        entries = MIXED if name == "craft-beer.jpg" else ocr_entries()
        result[name] = json.loads(to_json(cpu_engine.predict_entries(entries, image=preview(TEXT + name))))
    return result


@pytest.mark.parametrize("name", list(EXPECTED_WORDS))
def test_text_photos_give_the_words_a_person_reads(answers: dict, name: str) -> None:
    ocr = answers[name]["ocr"]
    found = "\n".join(ocr["text"]).lower()
    missing = [w for w in EXPECTED_WORDS[name] if w.lower() not in found]
    assert not missing, f"{name}: {missing} not in {ocr['text']}"


@pytest.mark.parametrize("name", list(EXPECTED_WORDS))
def test_answer_has_immichs_shape_with_normalised_corners(answers: dict, name: str) -> None:
    answer = answers[name]
    ocr = answer["ocr"]
    n = len(ocr["text"])
    assert set(ocr) == {"box", "boxScore", "text", "textScore"}
    assert len(ocr["box"]) == 8 * n and len(ocr["boxScore"]) == n and len(ocr["textScore"]) == n
    boxes = np.array(ocr["box"]).reshape(-1, 4, 2)
    assert boxes.min() >= 0.0 and boxes.max() <= 1.0
    assert (boxes.max(axis=1) - boxes.min(axis=1) > 0).all(), "every region has a width and a height"
    assert all(s > 0.8 for s in ocr["textScore"]) and all(s >= 0.5 for s in ocr["boxScore"])
    assert min(answer["imageWidth"], answer["imageHeight"]) == 1440


def test_boxes_come_in_reading_order(answers: dict) -> None:
    texts = answers["handwritten-notes.jpg"]["ocr"]["text"]
    lower = [t.lower() for t in texts]
    first = lambda word: next(i for i, t in enumerate(lower) if word in t)  # noqa: E731
    # Top of the page before the bottom; on one line, left before right.
    assert first("progress") < first("remember") < first("complete")
    boxes = np.array(answers["book-beside-flowers.jpg"]["ocr"]["box"]).reshape(-1, 4, 2)
    assert np.corrcoef(np.arange(len(boxes)), boxes[:, 0, 1])[0, 1] > 0.8


def test_reading_order_keeps_lines_and_their_scores_together() -> None:
    # Detection finds regions bottom-first (as findContours does); within 10 px is one line.
    corners = [(200, 305), (10, 300), (10, 200), (10, 100)]
    boxes = np.array([[[x, y], [x + 50, y], [x + 50, y + 20], [x, y + 20]] for x, y in corners], np.float32)
    order = reading_order(boxes)
    assert [tuple(boxes[i, 0]) for i in order] == [(10, 100), (10, 200), (10, 300), (200, 305)]
    assert order.tolist() == [3, 2, 1, 0]


def test_mixed_request_answers_clip_faces_and_ocr(answers: dict) -> None:
    answer = answers["craft-beer.jpg"]
    assert set(answer) == {"clip", "facial-recognition", "ocr", "imageHeight", "imageWidth"}
    assert len(json.loads(answer["clip"])) == 512
    faces = answer["facial-recognition"]
    assert len(faces) >= 1 and len(json.loads(faces[0]["embedding"])) == 512
    assert len(answer["ocr"]["text"]) >= 10


def test_score_filters_are_honoured(cpu_engine) -> None:
    image = Image.open(io.BytesIO(preview(TEXT + "japanese-shop.jpg")))
    det = cpu_engine.get_model("ocr", "detection", OCR_MODEL)
    rec = cpu_engine.get_model("ocr", "recognition", OCR_MODEL)
    found = {s: det.predict(image, minScore=s) for s in (0.3, 0.5, 0.7)}
    counts = [len(found[s]["scores"]) for s in (0.3, 0.5, 0.7)]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    for s, out in found.items():
        assert (out["scores"] >= s).all()
    loose = rec.predict(image, found[0.3], minScore=0.0)
    strict = rec.predict(image, found[0.3], minScore=0.95)
    assert len(strict["text"]) < len(loose["text"]) == len(found[0.3]["scores"])
    assert (strict["textScore"] > 0.95).all()
    assert set(strict["text"]) <= set(loose["text"])
    with pytest.raises(InvalidInputError):
        det.predict(image, minScore="high")


def test_photo_without_text_gives_empty_lists(cpu_engine) -> None:
    answer = json.loads(to_json(cpu_engine.predict_entries(ocr_entries(), image=photo("skimage/coffee.png").read_bytes())))
    assert answer["ocr"] == {"box": [], "boxScore": [], "text": [], "textScore": []}
    assert (answer["imageWidth"], answer["imageHeight"]) == (600, 400)


@pytest.mark.parametrize("size", [(31, 200), (200, 31), (8, 8)])
def test_image_smaller_than_32_px_gives_empty_lists(cpu_engine, size: tuple[int, int]) -> None:
    tiny = Image.new("RGB", size, "white")
    ImageDraw.Draw(tiny).text((1, 1), "Hi", fill="black")
    answer = json.loads(to_json(cpu_engine.predict_entries(ocr_entries(), image=tiny)))
    assert answer["ocr"] == {"box": [], "boxScore": [], "text": [], "textScore": []}
    assert (answer["imageWidth"], answer["imageHeight"]) == size


def hello_image() -> Image.Image:
    image = Image.new("RGB", (640, 200), "white")
    ImageDraw.Draw(image).text((30, 60), "Hello Immich 2024", fill="black", font=ImageFont.load_default(size=56))
    return image


def test_openvino_reads_the_same_text_as_onnx_runtime(cpu_engine, openvino_engine) -> None:
    image = hello_image()
    cpu = cpu_engine.predict_entries(ocr_entries(), image=image)["ocr"]
    ov = openvino_engine.predict_entries(ocr_entries(), image=image)["ocr"]
    assert openvino_engine.get_model("ocr", "recognition", OCR_MODEL).session.device.runtime == "openvino"
    assert ov["text"] == cpu["text"] == ["Hello Immich 2024"]
    np.testing.assert_allclose(ov["box"], cpu["box"], atol=0.01)


def test_predict_command_prints_the_ocr_answer(models_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "hello.png"
    hello_image().save(path)
    run = subprocess.run(
        [sys.executable, "-m", "immich_ml_desktop", "predict", "--cache-dir", str(models_dir), "--device", "cpu",
         "--entries", json.dumps(ocr_entries()), "--image", str(path)],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert answer["ocr"]["text"] == ["Hello Immich 2024"] and len(answer["ocr"]["box"]) == 8
    assert (answer["imageWidth"], answer["imageHeight"]) == (640, 200)


# model names and files -------------------------------------------------------------------------

def test_ocr_classes_are_registered() -> None:
    assert registry.model_class(ModelTask.OCR, ModelType.DETECTION) is OcrTextDetector
    assert registry.model_class(ModelTask.OCR, ModelType.RECOGNITION) is OcrTextRecognizer
    assert OcrTextRecognizer.depends == [(ModelType.DETECTION, ModelTask.OCR)]


def test_immich_names_map_to_rapidocr_files() -> None:
    det = model_file("PP-OCRv5_mobile", ModelType.DETECTION)
    assert det.url.endswith("/ch_PP-OCRv5_det_mobile.onnx") and len(det.sha256) == 64
    assert model_file("PP-OCRv5_server", ModelType.RECOGNITION).url.endswith("/ch_PP-OCRv5_rec_server.onnx")
    latin = model_file("LATIN__PP-OCRv5_mobile", ModelType.RECOGNITION)
    assert latin.url.endswith("/latin_PP-OCRv5_rec_mobile.onnx")
    # One detector for every language, as Immich does.
    assert model_file("LATIN__PP-OCRv5_mobile", ModelType.DETECTION) == det
    for bad in ("PP-OCRv9_mobile", "KLINGON__PP-OCRv5_mobile", "PP-OCRv5_huge", "ViT-B-32__openai"):
        with pytest.raises(ModelNotFoundError):
            model_file(bad, ModelType.RECOGNITION)


def test_wheel_models_are_found_by_hash_and_used_in_place(tmp_path: Path) -> None:
    assert OCR_MODEL in shipped_models()
    assert model_file("PP-OCRv5_mobile", ModelType.DETECTION).shipped is None
    det = OcrTextDetector("LATIN__" + OCR_MODEL, [tmp_path], None)  # type: ignore[arg-type]
    assert det.model_name == OCR_MODEL and det.cached and det.model_path.parent == WHEEL_MODELS
    missing = OcrTextRecognizer("PP-OCRv5_mobile", [tmp_path], None)  # type: ignore[arg-type]
    assert missing.missing_files() == [tmp_path / "ocr" / "PP-OCRv5_mobile" / "recognition" / "model.onnx"]


def test_model_not_in_cache_is_a_clear_error(cpu_engine) -> None:
    with pytest.raises(ModelNotFoundError, match="PP-OCRv5_server"):
        cpu_engine.predict_entries(ocr_entries("PP-OCRv5_server"), image=hello_image())


class _FileServer(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = self.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def file_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FileServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _FileServer.files
    server.shutdown()
    server.server_close()


def test_download_keeps_only_a_file_with_the_right_sha256(file_server, tmp_path: Path) -> None:
    base, files = file_server
    expected = model_file(OCR_MODEL, ModelType.DETECTION)
    files["/det.onnx"] = (WHEEL_MODELS / "PP-OCRv6_det_small.onnx").read_bytes()
    files["/bad.onnx"] = b"not a model"
    dest = tmp_path / "ocr" / OCR_MODEL / "detection" / "model.onnx"
    seen: list[int] = []
    fetch_verified(f"{base}/det.onnx", expected.sha256, dest, lambda name, done, total: seen.append(done))
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == expected.sha256 and seen[-1] == dest.stat().st_size
    other = tmp_path / "other" / "model.onnx"
    with pytest.raises(DownloadError, match="SHA-256"):
        fetch_verified(f"{base}/bad.onnx", expected.sha256, other)
    with pytest.raises(DownloadError, match="404"):
        fetch_verified(f"{base}/missing.onnx", expected.sha256, other)
    assert list(other.parent.iterdir()) == [], "no half-written file is left behind"


def test_download_fills_immichs_layout_and_the_model_then_reads_text_local_server_instead_of_modelscope(
    file_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RapidOCR's host cannot be reached here: a local server serves the wheel's files in its place."""
    from immich_ml_desktop.models.engine import Engine
    from immich_ml_desktop.models.ocr import DICT_FILE, OcrModelFile, character_list

    base, files = file_server
    for cls, stage, wheel_name in (
        (OcrTextDetector, ModelType.DETECTION, "PP-OCRv6_det_small.onnx"),
        (OcrTextRecognizer, ModelType.RECOGNITION, "PP-OCRv6_rec_small.onnx"),
    ):
        files[f"/mirror/{stage.value}.onnx"] = (WHEEL_MODELS / wheel_name).read_bytes()
        served = OcrModelFile(f"{base}/mirror/{stage.value}.onnx", model_file(OCR_MODEL, stage).sha256)
        monkeypatch.setattr(cls, "source", property(lambda self, served=served: served))
    name = "EN__PP-OCRv5_mobile"
    with Engine(tmp_path, "cpu", work_dir=tmp_path / "work", downloader=ModelFetcher(tmp_path)) as engine:
        for model_type in ("detection", "recognition"):
            model = engine.get_model("ocr", model_type, name, load=False)
            assert not model.cached
            engine.download(model)
            assert model.cached and tmp_path in model.model_path.parents
        answer = engine.predict_entries(ocr_entries(name), image=hello_image())
    rec_dir = tmp_path / "ocr" / name / "recognition"
    assert (tmp_path / "ocr" / "PP-OCRv5_mobile" / "detection" / "model.onnx").is_file()
    assert (rec_dir / "model.onnx").is_file() and (rec_dir / DICT_FILE).is_file()
    assert character_list(rec_dir / "model.onnx") == character_list(WHEEL_MODELS / "PP-OCRv6_rec_small.onnx")
    assert answer["ocr"]["text"] == ["Hello Immich 2024"]


def test_concurrent_requests_with_different_thresholds_do_not_mix(cpu_engine) -> None:
    image = hello_image()
    expected = {s: json.loads(to_json(cpu_engine.predict_entries(ocr_entries(text_score=s), image=image))) for s in (0.5, 0.999)}
    results: dict[tuple[int, float], dict] = {}

    def run(i: int, s: float) -> None:
        results[(i, s)] = json.loads(to_json(cpu_engine.predict_entries(ocr_entries(text_score=s), image=image)))

    threads = [threading.Thread(target=run, args=(i, s)) for i in range(3) for s in (0.5, 0.999)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert expected[0.5]["ocr"]["text"] == ["Hello Immich 2024"] and expected[0.999]["ocr"]["text"] == []
    assert all(answer == expected[s] for (_, s), answer in results.items()) and len(results) == 6


def test_index_job_stores_ocr_per_photo(cpu_engine, tmp_path: Path) -> None:
    """Any task reaches the library the same way as a model plugin's (`index --task ocr=NAME`): the
    stored answer is what /predict answers for the same photo."""
    from immich_ml_desktop.library.folders import FolderSource
    from immich_ml_desktop.library.store import LibraryStore
    from immich_ml_desktop.services.index import IndexJob, TaskSpec

    folder = tmp_path / "photos"
    folder.mkdir()
    image = Image.open(io.BytesIO(preview(TEXT + "craft-beer.jpg")))
    image.save(folder / "craft-beer.png")
    with LibraryStore(tmp_path / "library.sqlite3") as store:
        summary = IndexJob(store, cpu_engine, FolderSource([folder]), clip_model=None, face_model=None,
                           tasks=[TaskSpec("ocr", OCR_MODEL)]).run()
        assert (summary.indexed, summary.results) == (1, 1)
        (row,) = store.task_results("ocr", OCR_MODEL)
    defaults = {"ocr": {"detection": {"modelName": OCR_MODEL}, "recognition": {"modelName": OCR_MODEL}}}
    expected = json.loads(to_json(cpu_engine.predict_entries(defaults, image=(folder / "craft-beer.png").read_bytes())))
    assert row.result == expected["ocr"]
    assert "RODEO CLOWN" in " ".join(row.result["text"]).upper()
