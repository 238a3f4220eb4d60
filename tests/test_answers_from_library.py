"""`immich index` leaves the answers of Immich's own requests in the answer cache; `serve` answers those
requests from it byte for byte, with no model run; anything else is computed. Real ONNX sessions on the
test packs, the fake Immich and real ML servers on 127.0.0.1, a real SQLite answer cache."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import CLIP_PACK, FACE_PACK
from fake_immich import FakeImmich
from immich_ml_desktop.immich.client import ImmichClient
from immich_ml_desktop.library.immich_source import ImmichSource
from immich_ml_desktop.library.store import LibraryStore
from immich_ml_desktop.models.engine import Engine
from immich_ml_desktop.server.answer_cache import AnswerCache
from immich_ml_desktop.server.ml_server import MlServer
from immich_ml_desktop.services.index import IndexJob

PHOTOS = ["face_recognition/examples/obama.jpg", "face_recognition/examples/biden.jpg", "skimage/coffee.png"]
# Immich's requests, as its smartSearch and faceDetection jobs spell them (machine-learning.repository.ts).
CLIP = {"clip": {"visual": {"modelName": CLIP_PACK}}}
FACES = {"facial-recognition": {"detection": {"modelName": FACE_PACK, "options": {"minScore": 0.7}},
                                "recognition": {"modelName": FACE_PACK}}}


def predict(url: str, entries: dict, image: bytes) -> bytes:
    """As Immich posts it: multipart, `entries` a JSON string, the image a blob."""
    r = httpx.post(f"{url}/predict", data={"entries": json.dumps(entries)},
                   files={"image": ("blob", image, "application/octet-stream")}, timeout=120)
    assert r.status_code == 200, r.text
    return r.content


@pytest.fixture
def indexed(tmp_path: Path, photos_dir: Path, models_dir: Path, work_dir: Path, spec_path: Path):
    fake = FakeImmich(spec_path)
    for rel in PHOTOS:
        fake.add_asset(photos_dir / rel)
    fake.start()
    cache = AnswerCache(tmp_path / "answers.sqlite3")
    try:
        with Engine(models_dir, "cpu", work_dir=work_dir) as engine, \
                ImmichClient(fake.url, fake.admin_key, backoff=0.01) as client, \
                LibraryStore(tmp_path / "library.sqlite3") as store:
            summary = IndexJob(store, engine, ImmichSource(client), clip_model=CLIP_PACK, face_model=FACE_PACK,
                               answers=cache).run()
            assert (summary.indexed, summary.failed) == (3, 0)
            yield fake, cache, store
    finally:
        fake.stop()
        cache.close()


@pytest.fixture
def spec_path(photos_dir: Path) -> Path:
    return photos_dir.parent / "immich" / "immich-openapi-specs.json"


def test_serve_answers_immichs_requests_from_the_index_byte_for_byte_without_running_a_model(
        indexed, models_dir: Path, work_dir: Path, cpu_engine: Engine) -> None:
    fake, cache, store = indexed
    assert cache.stats().by_origin == {"index": 2 * len(PHOTOS)}  # a CLIP and a faces answer per preview
    # A fresh engine on the same packs, device and precision: it has loaded nothing yet.
    with Engine(models_dir, "cpu", work_dir=work_dir) as engine, \
            MlServer(engine, port=0, answers=cache) as from_library, MlServer(cpu_engine, port=0) as computing:
        for preview in fake.previews.values():
            for entries in (CLIP, FACES):
                assert predict(from_library.url, entries, preview) == predict(computing.url, entries, preview)
        assert from_library.stats.from_cache == 2 * len(PHOTOS)
        assert not any(m.loaded for m in engine._models.values())  # no model was run for those answers

        # The library holds the very values Immich gets: its vector is the answer's.
        asset = store.asset_by_key("immich", next(iter(fake.previews)))
        answer = json.loads(predict(from_library.url, CLIP, fake.previews[asset.key]))
        stored = store.clip_vector(asset.id, CLIP_PACK)
        assert stored is not None and np.array_equal(stored, np.asarray(json.loads(answer["clip"]), np.float32))
        faces = json.loads(predict(from_library.url, FACES, fake.previews[asset.key]))["facial-recognition"]
        kept = store.faces(asset_id=asset.id, model=FACE_PACK)
        assert len(kept) == len(faces) >= 1  # obama.jpg: Immich's pass finds him, so no padded pass


def test_other_options_another_model_or_other_bytes_are_computed_not_answered_from_the_cache(
        indexed, models_dir: Path, work_dir: Path) -> None:
    fake, cache, _ = indexed
    preview = next(iter(fake.previews.values()))
    lower = json.loads(json.dumps(FACES))
    lower["facial-recognition"]["detection"]["options"]["minScore"] = 0.5
    with Engine(models_dir, "cpu", work_dir=work_dir) as engine, MlServer(engine, port=0, answers=cache) as server:
        predict(server.url, lower, preview)
        predict(server.url, CLIP, preview + b"\0")  # the same picture, other bytes: not the preview Immich has
        assert server.stats.from_cache == 0
        predict(server.url, lower, preview)  # now the server remembers its own answer
        assert server.stats.from_cache == 1
    assert cache.stats().by_origin["server"] == 2


def test_another_precision_is_another_answer(indexed, models_dir: Path, work_dir: Path) -> None:
    """An answer made in f32 on the CPU runtime is never handed out by a server computing otherwise."""
    from immich_ml_desktop.models.runtime import openvino_available

    if not openvino_available():
        pytest.skip("OpenVINO is not installed on this machine")
    fake, cache, _ = indexed
    preview = next(iter(fake.previews.values()))
    with Engine(models_dir, "openvino:CPU", work_dir=work_dir) as engine, MlServer(engine, port=0, answers=cache) as server:
        predict(server.url, CLIP, preview)
        assert server.stats.from_cache == 0
