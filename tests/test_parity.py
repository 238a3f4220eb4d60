"""Interchangeable with Immich: our answers to the 73 fixed `/predict` requests of
`../shared/immich/reference-answers.json` (recorded from Immich's own ML service v3.1.0 on the test packs)
have every CLIP and face vector within cosine 0.9999 of Immich's, the same face counts, boxes and scores,
and the same image sizes, for the default device and precision and for f32.

The fixture names models as Immich's catalogue does (`ViT-B-32__openai`, `buffalo_l`, `buffalo_s`); its
`model_aliases` say which test pack each name is, and the requests are sent here under the packs' own
names, so the engines are the ones the rest of the suite already loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import SHARED, _need
from immich_ml_desktop.models.engine import Engine
from immich_ml_desktop.models.images import DecodedImage, decode_image
from immich_ml_desktop.models.predict import run_entries, to_json
from immich_ml_desktop.models.runtime import resolve_device

MIN_COSINE = 0.9999  # DESIGN.md: what interchangeable means
SCORE_TOLERANCE = 1e-4  # detector scores are float32 sigmoids; a box that moved would change them far more


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    return json.loads(_need(SHARED / "immich" / "reference-answers.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cases(reference: dict[str, Any], photos_dir: Path) -> list[dict[str, Any]]:
    """The reference cases with their entries renamed to our pack names and each photo decoded once."""
    aliases = {k.split("/")[1]: v.split("/")[1] for k, v in reference["model_aliases"].items()}
    decoded: dict[str, DecodedImage] = {}
    out = []
    for case in reference["cases"]:
        entries = json.loads(json.dumps(case["entries"]))
        for types in entries.values():
            for spec in types.values():
                spec["modelName"] = aliases[spec["modelName"]]
        if "photo" in case:
            path = photos_dir / case["photo"]
            if case["photo"] not in decoded:
                decoded[case["photo"]] = DecodedImage(decode_image(path.read_bytes()))
        out.append({**case, "entries": entries, "image": decoded.get(case.get("photo", ""))})
    assert len(out) == 73 and sum("photo" in c for c in out) == 57
    return out


@pytest.fixture(scope="module")
def default_engine(request: pytest.FixtureRequest) -> Engine:
    """The engine a user gets with no options: device `auto`, precision `auto` (shared with other tests)."""
    device = resolve_device("auto")
    if device.id == "openvino:CPU":
        return request.getfixturevalue("openvino_engine")
    if device.id == "cpu":
        return request.getfixturevalue("cpu_engine")
    pytest.skip(f"auto picks {device.id} here; this test knows the CPU engines only")


@pytest.fixture(scope="module")
def f32_engine(default_engine: Engine, models_dir: Path, work_dir: Path):
    with Engine(models_dir, default_engine.device, precision="f32", work_dir=work_dir) as engine:
        yield engine


def _vector(value: str) -> np.ndarray:
    return np.asarray(json.loads(value), dtype=np.float64)


def _cosine(a: str, b: str) -> float:
    x, y = _vector(a), _vector(b)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def _compare(engine: Engine, cases: list[dict[str, Any]], kinds: set[str]) -> dict[str, Any]:
    """Answers of `engine` against Immich's: worst cosine per kind, and every mismatch found."""
    worst = {kind: 1.0 for kind in kinds}
    mismatches: list[str] = []
    faces = 0
    for case in cases:
        is_text = "text" in case
        kind = "clip text" if is_text else ("clip image" if "clip" in case["entries"] else "faces")
        if kind not in kinds:
            continue
        assert case["status"] == 200
        answer = run_entries(engine, case["entries"], text=case["text"]) if is_text else run_entries(engine, case["entries"], image=case["image"])
        ours = json.loads(to_json(answer))  # byte for byte what the server sends
        theirs = case["answer"]
        where = case.get("photo") or repr(case["text"][:20])
        if not is_text and (ours["imageHeight"], ours["imageWidth"]) != (theirs["imageHeight"], theirs["imageWidth"]):
            mismatches.append(f"{where}: image size {ours['imageHeight']}x{ours['imageWidth']}")
        if kind != "faces":
            worst[kind] = min(worst[kind], _cosine(ours["clip"], theirs["clip"]))
            continue
        model = case["entries"]["facial-recognition"]["recognition"]["modelName"]
        mine, immich = ours["facial-recognition"], theirs["facial-recognition"]
        if len(mine) != len(immich):
            mismatches.append(f"{where} {model}: {len(mine)} faces, Immich {len(immich)}")
            continue
        for a, b in zip(mine, immich):
            faces += 1
            if a["boundingBox"] != b["boundingBox"]:
                mismatches.append(f"{where} {model}: box {a['boundingBox']} != {b['boundingBox']}")
            if abs(a["score"] - b["score"]) > SCORE_TOLERANCE:
                mismatches.append(f"{where} {model}: score {a['score']} != {b['score']}")
            cosine = _cosine(a["embedding"], b["embedding"])
            worst[kind] = min(worst[kind], cosine)
            if cosine < MIN_COSINE:
                mismatches.append(f"{where} {model}: face vector cosine {cosine:.6f}")
    return {"worst": worst, "mismatches": mismatches, "faces": faces}


def _face_precisions(engine: Engine, cases: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(device, precision) of every face model the cases use, loading them if needed."""
    found = set()
    for case in cases:
        for model_type, spec in case["entries"].get("facial-recognition", {}).items():
            session = engine.get_model("facial-recognition", model_type, spec["modelName"]).session
            assert session is not None
            found.add((session.device.id, session.precision))
    return found


def test_default_device_and_precision_answer_as_immich(default_engine: Engine, cases: list[dict[str, Any]]) -> None:
    result = _compare(default_engine, cases, {"clip image", "clip text", "faces"})
    assert result["mismatches"] == []
    assert result["faces"] == 176  # every face of the fixture was compared
    assert min(result["worst"].values()) >= MIN_COSINE, result["worst"]


def test_f32_answers_as_immich(default_engine: Engine, f32_engine: Engine, cases: list[dict[str, Any]]) -> None:
    """f32 on the default device. The face models run in f32 under `auto` too (detectors always; the
    recognizers' bf16 vectors fail the precision check): when the default engine's face models report f32 on
    the same device, their answers above are the f32 answers and are not computed a second time."""
    kinds = {"clip image", "clip text"}
    if _face_precisions(default_engine, cases) != {(f32_engine.device.id, "f32")}:
        kinds.add("faces")
    result = _compare(f32_engine, cases, kinds)
    assert result["mismatches"] == []
    assert min(result["worst"].values()) >= MIN_COSINE, result["worst"]
    assert {m["precision"] for m in f32_engine.loaded_models()} == {"f32"}
