"""`immich send` against a real Immich 3.1 server (tests/immich_kit.py): what `immich index` computed
reaches Immich through its own ML jobs, with no model run, and its ML URLs are put back.

A fresh user uploads photos while Immich's ML URL points nowhere (so nothing is computed yet); their
assets are indexed, then sent: every asset with a preview gets its CLIP row and faces, the vectors Immich
stored are the library's, and the URLs are restored. A second user then uploads the same photos (again
with nothing computed) and our `serve` computes them without the answer cache: the same jobs on the same
previews give the same counts, and the time of each is printed. Finally a send killed half way is mended by `immich send --restore`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any
from collections.abc import Iterator

import numpy as np
import pytest

from conftest import PHOTOS, ROOT
from immich_kit import KIT, KitUnavailable, RealImmich, kit_sql
from test_real_immich import CATALOGUE_NAMES, FACES, OTHERS

pytestmark = [pytest.mark.real_immich, pytest.mark.timeout(1800)]
NOWHERE = "http://127.0.0.1:9"  # discard: refused at once


@pytest.fixture(scope="module")
def immich() -> Iterator[RealImmich]:
    if not os.environ.get("IMMICH_TEST_URL") and os.environ.get("IMMICH_KIT") != "1":
        pytest.skip("no real Immich server: set IMMICH_KIT=1 (../shared/immich-kit, built once) or "
                    "IMMICH_TEST_URL + IMMICH_TEST_API_KEY")
    try:
        server = RealImmich.get()
        kit_sql("SELECT 1")
    except KitUnavailable as e:
        pytest.skip(str(e))
    yield server
    server.close()


@pytest.fixture(scope="module")
def scene(immich: RealImmich, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    for rel in [*FACES, *OTHERS]:
        if not (PHOTOS / rel).is_file():
            pytest.skip(f"test photo {PHOTOS / rel} is absent")
    work = tmp_path_factory.mktemp("real-send")
    config = immich.json("GET", "/system-config")
    before = json.loads(json.dumps(config["machineLearning"]))
    config["machineLearning"]["urls"] = [NOWHERE]  # Immich's ML jobs after the uploads fail: nothing computed yet
    immich.json("PUT", "/system-config", json=config)
    try:
        users = {"A": upload_user(immich, "A")}
        cache = work / "models"
        subprocess.run([str(KIT / "ml-cache.sh"), str(cache)], check=True, capture_output=True)
        yield {"users": users, "cache": cache, "work": work, "library": work / "library.sqlite3",
               "urls_before": [NOWHERE],
               "env": {**os.environ, "IMMICH_ML_DESKTOP_CONFIG_DIR": str(work / "config"),
                       "IMMICH_ML_DESKTOP_CACHE_DIR": str(work / "app-cache"), "PYTHONPATH": str(ROOT),
                       "IMMICH_URL": immich.url}}
    finally:
        config = immich.json("GET", "/system-config")
        config["machineLearning"] = before
        immich.json("PUT", "/system-config", json=config)


def upload_user(immich: RealImmich, name: str) -> dict[str, Any]:
    """A fresh user with the photos uploaded and previewed, and Immich's ML jobs for them over (failed)."""
    user = immich.new_user(f"Sender {name}")
    ids = {rel: immich.upload(user.key, PHOTOS / rel) for rel in [*FACES, *OTHERS]}
    previews = immich.wait_for_previews(user.key, ids.values())
    immich.wait_for_queues(["smartSearch", "faceDetection", "facialRecognition"], timeout=300)
    return {"user": user, "ids": ids, "with_preview": [i for i, ok in previews.items() if ok]}


def app(scene: dict[str, Any], key: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "immich_ml_desktop", *args], env={**scene["env"], "IMMICH_API_KEY": key},
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"{' '.join(args)} -> {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def library_args(scene: dict[str, Any]) -> list[str]:
    return ["--library", str(scene["library"]), "--cache-dir", str(scene["cache"]),
            "--clip-model", CATALOGUE_NAMES["clip"], "--face-model", CATALOGUE_NAMES["faces"]]


def clip_rows(asset_ids: list[str]) -> dict[str, np.ndarray]:
    listed = ",".join(f"'{i}'" for i in asset_ids)
    return {a: np.asarray(json.loads(v), np.float32)
            for a, v in kit_sql(f'SELECT "assetId", embedding FROM smart_search WHERE "assetId" IN ({listed})')}


def face_rows(asset_ids: list[str]) -> dict[str, list[tuple[tuple[int, ...], np.ndarray]]]:
    listed = ",".join(f"'{i}'" for i in asset_ids)
    rows: dict[str, list[tuple[tuple[int, ...], np.ndarray]]] = {a: [] for a in asset_ids}
    for asset, x1, y1, x2, y2, v in kit_sql(
            'SELECT f."assetId", f."boundingBoxX1", f."boundingBoxY1", f."boundingBoxX2", f."boundingBoxY2", s.embedding '
            f'FROM asset_face f JOIN face_search s ON s."faceId" = f.id WHERE f."assetId" IN ({listed}) '
            "AND f.\"deletedAt\" IS NULL"):
        rows[asset].append(((int(x1), int(y1), int(x2), int(y2)), np.asarray(json.loads(v), np.float32)))
    return rows


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_nothing_is_computed_before_the_send(scene: dict[str, Any]) -> None:
    a = scene["users"]["A"]["with_preview"]
    assert clip_rows(a) == {} and all(f == [] for f in face_rows(a).values())


def test_send_delivers_the_librarys_vectors_without_running_a_model(immich: RealImmich, scene: dict[str, Any]) -> None:
    user = scene["users"]["A"]
    indexed = json.loads(app(scene, user["user"].key, "immich", "index", *library_args(scene), "--json").stdout)
    assert (indexed["indexed"], indexed["failed"]) == (len(user["with_preview"]), 0)
    started = time.monotonic()
    out = json.loads(app(scene, immich.admin_key, "immich", "send", *library_args(scene), "--poll", "0.5", "--json").stdout)
    scene["send_seconds"] = time.monotonic() - started
    n = len(user["with_preview"])
    assert out["jobs"] == ["smartSearch", "faceDetection"] and not out["cancelled"]
    # Any other asset Immich still lacks answers for is queued too (the same photos of earlier runs: from the
    # library as well, their previews being the same bytes); none of them is computed.
    assert out["from_library"] >= 2 * n and (out["computed"], out["errors"]) == (0, 0), out
    assert out["urls_restored"] == scene["urls_before"] == immich.json("GET", "/system-config")["machineLearning"]["urls"]

    from immich_ml_desktop.library.store import LibraryStore

    clip, faces = clip_rows(user["with_preview"]), face_rows(user["with_preview"])
    assert set(clip) == set(user["with_preview"])  # every asset with a preview got its CLIP row
    with LibraryStore(scene["library"]) as store:
        face_ids, face_vectors = store.face_vectors(CATALOGUE_NAMES["faces"])
        vector_of = dict(zip(face_ids.tolist(), face_vectors))
        for asset_id in user["with_preview"]:
            asset = store.asset_by_key("immich", asset_id)
            assert _cos(clip[asset_id], store.clip_vector(asset.id, CATALOGUE_NAMES["clip"])) >= 0.9999
            mine = store.faces(asset_id=asset.id, model=CATALOGUE_NAMES["faces"])
            for box, vector in faces[asset_id]:  # each face Immich stored is one of the library's, same box
                match = [f for f in mine if tuple(int(v) for v in f.box) == box]
                assert match and _cos(vector, vector_of[match[0].id]) >= 0.9999, (asset_id, box)
    assert sum(map(len, faces.values())) >= len([r for r in FACES])  # every labelled photo has its face
    scene["sent_faces"] = {rel: len(faces[user["ids"][rel]]) for rel in FACES}
    print(f"\nimmich send: {n} assets, {out['from_library']} answers from the library in {scene['send_seconds']:.1f} s")


def test_computing_the_same_jobs_gives_the_same_counts(immich: RealImmich, scene: dict[str, Any]) -> None:
    """User B's identical assets through the same jobs, computed by our server without the answer cache."""
    from immich_ml_desktop.models.engine import Engine
    from immich_ml_desktop.models.runtime import default_parallel
    from immich_ml_desktop.server.ml_server import MlServer

    with immich.ml_config(urls=[NOWHERE]):
        user = scene["users"]["B"] = upload_user(immich, "B")
    with Engine(scene["cache"], "auto", work_dir=scene["work"] / "engine", parallel=default_parallel()) as engine, \
            MlServer(engine, port=0, workers=engine.parallel) as serve, \
            immich.ml_config(urls=[serve.url]):
        started = time.monotonic()
        immich.run_job("smartSearch")
        immich.run_job("faceDetection")
        immich.wait_for_queues(["smartSearch", "faceDetection", "facialRecognition"], timeout=900)
        seconds = time.monotonic() - started
        assert serve.stats.errors == 0 and serve.stats.from_cache == 0
    clip, faces = clip_rows(user["with_preview"]), face_rows(user["with_preview"])
    assert set(clip) == set(user["with_preview"])
    assert {rel: len(faces[user["ids"][rel]]) for rel in FACES} == scene["sent_faces"]
    print(f"\ncomputed by serve: {len(user['with_preview'])} assets in {seconds:.1f} s "
          f"(send from the library: {scene['send_seconds']:.1f} s, {seconds / scene['send_seconds']:.1f}x)")


def test_a_send_killed_half_way_is_mended_by_restore(immich: RealImmich, scene: dict[str, Any]) -> None:
    before = immich.json("GET", "/system-config")["machineLearning"]["urls"]
    env = {**scene["env"], "IMMICH_API_KEY": immich.admin_key}
    proc = subprocess.Popen([sys.executable, "-m", "immich_ml_desktop", "immich", "send", *library_args(scene),
                             "--force", "--poll", "5"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while immich.json("GET", "/system-config")["machineLearning"]["urls"] == before:
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert immich.json("GET", "/system-config")["machineLearning"]["urls"] != before
    out = app(scene, immich.admin_key, "immich", "send", "--restore").stdout
    assert "back as they were" in out
    assert immich.json("GET", "/system-config")["machineLearning"]["urls"] == before
    immich.wait_for_queues(["smartSearch"], timeout=600)  # what the killed send queued goes to those URLs


def test_a_tight_crop_only_the_library_finds_is_pushed_to_its_person_and_undone(immich: RealImmich,
                                                                               scene: dict[str, Any]) -> None:
    """A face filling the frame: Immich's detection (answered from the library, as Immich's own would)
    finds none there; the library's padded pass does; after review and push the person is on that photo in
    Immich too, and undo deletes the face again."""
    from PIL import Image

    from immich_ml_desktop.library.people import People
    from immich_ml_desktop.library.store import LibraryStore

    user = scene["users"]["A"]
    face_model = CATALOGUE_NAMES["faces"]
    obama = "face_recognition/examples/obama.jpg"
    with LibraryStore(scene["library"]) as store:
        asset = store.asset_by_key("immich", user["ids"][obama])
        box = max(store.faces(asset_id=asset.id, model=face_model), key=lambda f: f.box[2] - f.box[0]).box
    with Image.open(PHOTOS / obama) as im:  # the preview is the photo scaled: back to the photo's pixels
        scale = im.width / asset.width
        crop = im.convert("RGB").crop(tuple(round(v * scale) for v in box))
    tight = scene["work"] / "obama-tight.jpg"
    crop.save(tight, quality=92)
    with immich.ml_config(urls=[NOWHERE]):
        crop_id = immich.upload(user["user"].key, tight)
        assert immich.wait_for_previews(user["user"].key, [crop_id])[crop_id]
        immich.wait_for_queues(["smartSearch", "faceDetection", "facialRecognition"], timeout=300)
    app(scene, user["user"].key, "immich", "index", *library_args(scene))
    app(scene, immich.admin_key, "immich", "send", *library_args(scene), "--poll", "0.5")
    assert immich.json("GET", "/faces", user["user"].key, params={"id": crop_id}) == []  # Immich's pass: none

    with LibraryStore(scene["library"]) as store:
        people = People(store, face_model)
        people.recluster()
        crop_faces = store.faces(asset_id=store.asset_by_key("immich", crop_id).id, model=face_model)
        assert len(crop_faces) == 1
        found_by = store.connection().execute("SELECT found_by FROM faces WHERE id = ?", (crop_faces[0].id,)).fetchone()[0]
        assert found_by == "padded"
        largest = max(store.faces(asset_id=asset.id, model=face_model), key=lambda f: f.box[2] - f.box[0])
        group = people.move_faces([largest.id, crop_faces[0].id])
        people.rename(group, "Tight Obama")
    push = ["--library", str(scene["library"]), "--face-model", face_model]
    plan = app(scene, user["user"].key, "immich", "push", *push, "--dry-run").stdout
    assert "1 faces Immich did not find to add" in plan, plan
    app(scene, user["user"].key, "immich", "push", *push)
    [added] = immich.json("GET", "/faces", user["user"].key, params={"id": crop_id})
    assert added["person"]["name"] == "Tight Obama" and added["sourceType"] == "manual"
    app(scene, user["user"].key, "immich", "push", *push, "--undo")
    assert immich.json("GET", "/faces", user["user"].key, params={"id": crop_id}) == []
