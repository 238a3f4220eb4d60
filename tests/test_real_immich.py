"""The flows that talk to Immich, against a real Immich 3.1 server (tests/immich_kit.py).

Runs where a real server can be had: `IMMICH_TEST_URL` + `IMMICH_TEST_API_KEY` (an admin's key), or
`IMMICH_KIT=1` with the kit of ../shared/immich-kit built (it is started, and stopped again, here).
Skipped otherwise, with the reason. One module-wide scene: a fresh user uploads photos of real faces,
a HEIC Immich's build cannot preview and a motion photo; our `serve` is Immich's ML service for its
smartSearch, faceDetection and OCR jobs; then index, review, push (dry run, apply, undo), SIGKILLs at
every kind of push step with resume, a metadata edit followed by re-indexing, and unregister. The tests
run in file order and build on each other, as a user's session would.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import pytest

from conftest import PHOTOS, ROOT
from immich_kit import KIT, KitUnavailable, RealImmich

pytestmark = [pytest.mark.real_immich, pytest.mark.timeout(1800)]

FACES = {  # photo -> who (the labelled faces of ../shared/photos)
    "face_recognition/examples/obama.jpg": "Barack Obama",
    "face_recognition/examples/obama2.jpg": "Barack Obama",
    "face_recognition/tests/test_images/obama3.jpg": "Barack Obama",
    "face_recognition/examples/knn_examples/test/obama1.jpg": "Barack Obama",
    "face_recognition/examples/biden.jpg": "Joe Biden",
    "face_recognition/examples/knn_examples/train/biden/biden2.jpg": "Joe Biden",
    "face_recognition/examples/alex-lacamoire.png": "Alex Lacamoire",
    "face_recognition/examples/knn_examples/train/alex_lacamoire/img1.jpg": "Alex Lacamoire",
    "face_recognition/examples/knn_examples/train/kit_harington/john1.jpeg": "Kit Harington",
    "face_recognition/examples/knn_examples/train/kit_harington/john2.jpeg": "Kit Harington",
}
OTHERS = [
    "skimage/coffee.png", "immich_test_assets/albums/text/handwritten-notes.jpg",
    "immich_test_assets/formats/heic/IMG_2682.heic",  # HEVC: the kit's image library makes no preview of it
    "immich_test_assets/formats/motionphoto/samsung-one-ui-6.heic",  # plus its hidden video
]
CATALOGUE_NAMES = {"clip": "ViT-B-32__openai", "faces": "buffalo_l"}  # what Immich asks for (ml-cache.sh aliases)
OCR_MODEL = "PP-OCRv6_small"  # ships inside the rapidocr wheel (Immich's PP-OCRv5 needs a download)


@pytest.fixture(scope="module")
def immich() -> Iterator[RealImmich]:
    if not os.environ.get("IMMICH_TEST_URL") and os.environ.get("IMMICH_KIT") != "1":
        pytest.skip("no real Immich server: set IMMICH_KIT=1 (../shared/immich-kit, built once) or "
                    "IMMICH_TEST_URL + IMMICH_TEST_API_KEY")
    try:
        server = RealImmich.get()
    except KitUnavailable as e:
        pytest.skip(str(e))
    yield server
    server.close()


@pytest.fixture(scope="module")
def scene(immich: RealImmich, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A fresh user with the photos uploaded and their previews made; the cache our server reads."""
    for rel in [*FACES, *OTHERS]:
        if not (PHOTOS / rel).is_file():
            pytest.skip(f"test photo {PHOTOS / rel} is absent")
    work = tmp_path_factory.mktemp("real-immich")
    user = immich.new_user("Real Tester")
    ids = {rel: immich.upload(user.key, PHOTOS / rel) for rel in [*FACES, *OTHERS]}
    previews = immich.wait_for_previews(user.key, ids.values())
    cache = work / "models"
    subprocess.run([str(KIT / "ml-cache.sh"), str(cache)], check=True, capture_output=True)
    return {"user": user, "ids": ids, "previews": previews, "cache": cache, "work": work,
            "library": work / "library.sqlite3",
            "env": {**os.environ, "IMMICH_ML_DESKTOP_CONFIG_DIR": str(work / "config"),
                    "IMMICH_ML_DESKTOP_CACHE_DIR": str(work / "app-cache"), "PYTHONPATH": str(ROOT),
                    "IMMICH_URL": immich.url, "IMMICH_API_KEY": user.key}}


def app(scene: dict[str, Any], *args: str, key: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`immich-ml-desktop ARGS` as a user runs it (its own process)."""
    env = dict(scene["env"])
    if key:
        env["IMMICH_API_KEY"] = key
    proc = subprocess.run([sys.executable, "-m", "immich_ml_desktop", *args], env=env, capture_output=True,
                          text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


def library_args(scene: dict[str, Any]) -> list[str]:
    return ["--library", str(scene["library"]), "--cache-dir", str(scene["cache"]),
            "--clip-model", CATALOGUE_NAMES["clip"], "--face-model", CATALOGUE_NAMES["faces"]]


def push_args(scene: dict[str, Any]) -> list[str]:
    return ["--library", str(scene["library"]), "--face-model", CATALOGUE_NAMES["faces"]]


def test_uploads_have_previews_except_what_immich_cannot_decode(scene: dict[str, Any]) -> None:
    previews, ids = scene["previews"], scene["ids"]
    assert not previews[ids["immich_test_assets/formats/heic/IMG_2682.heic"]]
    assert all(previews[ids[rel]] for rel in FACES)


def test_check_reports_what_each_key_may_do(immich: RealImmich, scene: dict[str, Any]) -> None:
    admin = json.loads(app(scene, "immich", "check", "--json", key=immich.admin_key).stdout)
    assert admin["admin"] is True and admin["missing"] == {} and admin["version"].startswith("3.")
    user = json.loads(app(scene, "immich", "check", "--json").stdout)
    assert user["admin"] is False
    assert user["missing"] == {"register ML URL": ["admin account"], "run ML jobs": ["admin account"]}
    limited = immich.new_key(scene["user"].key, ["asset.read", "asset.view"])
    report = json.loads(app(scene, "immich", "check", "--json", key=limited).stdout)
    assert report["admin"] is None and "index assets" not in report["missing"]
    assert {"person.create", "face.update"} <= set(report["missing"]["push people"])


@pytest.fixture(scope="module")
def serve(scene: dict[str, Any]) -> Iterator[Any]:
    """Our ML server on loopback, on the same cache and names Immich asks for."""
    from immich_ml_desktop.models.engine import Engine
    from immich_ml_desktop.server.ml_server import MlServer

    with Engine(scene["cache"], "auto", work_dir=scene["work"] / "engine", parallel=2) as engine, \
            MlServer(engine, host="127.0.0.1", port=0, workers=2) as server:
        yield server


def test_immichs_ml_jobs_run_on_our_server(immich: RealImmich, scene: dict[str, Any], serve: Any) -> None:
    """register puts our URL first; Immich's smartSearch, faceDetection and OCR jobs then run against it
    with no error, and Immich stores what it answered."""
    before = immich.json("GET", "/system-config")["machineLearning"]
    scene["ml_before"] = before
    with immich.ml_config(ocr={**before["ocr"], "modelName": OCR_MODEL}):
        out = app(scene, "immich", "register", "--ml-url", serve.url, "--cache-dir", str(scene["cache"]),
                  key=immich.admin_key, check=False)
        assert out.returncode == 0, out.stdout + out.stderr  # every model Immich uses is present
        assert f"Immich's ML URLs are now {serve.url}" in out.stdout
        started = time.monotonic()
        app(scene, "immich", "jobs", "--start", "smartSearch", "faceDetection", "ocr", "--force",
            key=immich.admin_key)
        immich.wait_for_queues(["smartSearch", "faceDetection", "facialRecognition", "ocr"], timeout=900)
        print(f"\nImmich's ML jobs on our server: {time.monotonic() - started:.1f} s for {len(scene['ids'])} uploads")
        assert immich.json("GET", "/system-config")["machineLearning"]["urls"][0] == serve.url
        stats = serve.stats
        assert stats.errors == 0, stats
        key, ids = scene["user"].key, scene["ids"]
        with_preview = [i for i, ok in scene["previews"].items() if ok]
        # Smart search encodes the query on our server too.
        found = immich.json("POST", "/search/smart", key, json={"query": "a photo", "size": 1000})["assets"]["items"]
        assert {a["id"] for a in found} == set(with_preview)  # every asset with a preview got its CLIP row
    faces = {rel: immich.json("GET", "/faces", key, params={"id": ids[rel]}) for rel in FACES}
    assert all(len(f) >= 1 for f in faces.values()), {k: len(v) for k, v in faces.items()}
    ocr = immich.json("GET", f"/assets/{ids['immich_test_assets/albums/text/handwritten-notes.jpg']}/ocr", key)
    assert len(ocr) >= 1
    assert stats.per_task.get("facial-recognition/detection", 0) >= len(with_preview)


def test_index_sees_what_immichs_ml_sees(scene: dict[str, Any]) -> None:
    out = app(scene, "immich", "index", *library_args(scene), "--json").stdout
    summary = json.loads(out[out.index("{"):])
    with_preview = sum(scene["previews"].values())
    assert (summary["indexed"], summary["failed"]) == (with_preview, 0)  # no hidden video, nothing "failed"
    assert "IMG_2682.heic" in summary["no_preview"]
    text = app(scene, "immich", "index", *library_args(scene)).stdout
    assert "0 indexed, 0 failed" in text and "have no preview in Immich yet" in text


def _review(scene: dict[str, Any]) -> dict[str, int]:
    """What the user does on the People page, through the same API: name the groups of the labelled
    faces (each photo's largest face), hide Kit's group unnamed."""
    from immich_ml_desktop.library.people import People
    from immich_ml_desktop.library.store import LibraryStore

    who_by_id = {scene["ids"][rel]: who for rel, who in FACES.items()}
    groups = {}
    with LibraryStore(scene["library"]) as store:
        people = People(store, CATALOGUE_NAMES["faces"])
        people.recluster()
        for who in sorted(set(FACES.values())):
            largest = []
            for asset in store.assets("immich"):
                faces = store.faces(asset_id=asset.id) if who_by_id.get(asset.key) == who else []
                if faces:
                    largest.append(max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])).id)
            group = people.move_faces(largest)
            if who == "Kit Harington":
                people.set_hidden(group, True)
            else:
                people.rename(group, who)
            groups[who] = group
    return groups


def immich_state(immich: RealImmich, scene: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Who each face of the user's assets belongs to, and every person of those names (empty ones too:
    Immich lists no empty person, so they are found by name)."""
    key = scene["user"].key
    faces = {}
    for asset_id in scene["ids"].values():
        for f in immich.json("GET", "/faces", key, params={"id": asset_id}):
            faces[f["id"]] = (f["person"] or {}).get("name")
    people: dict[str, int] = {}
    for name in [*names, "immich-ml-desktop"]:
        for p in immich.json("GET", "/search/person", key, params={"name": name, "withHidden": "true"}):
            if p["name"] == name or p["name"].startswith("immich-ml-desktop"):
                people[p["id"]] = p["name"]
    return {"faces": faces, "people": sorted(people.values())}


def _split_obama_in_immich(immich: RealImmich, scene: dict[str, Any]) -> None:
    """Make Immich hold Obama's faces as two people (as its clustering sometimes splits a person), so the
    push has a merge to do as well."""
    key = scene["user"].key
    faces = [f for rel, who in FACES.items() if who == "Barack Obama"
             for f in immich.json("GET", "/faces", key, params={"id": scene["ids"][rel]})]
    largest = sorted(faces, key=lambda f: -(f["boundingBoxX2"] - f["boundingBoxX1"]))[:4]
    halves = [immich.json("POST", "/people", key, json={"name": ""}) for _ in range(2)]
    for i, face in enumerate(largest):
        immich.json("PUT", f"/faces/{halves[i % 2]['id']}", key, json={"id": face["id"]})


def test_review_then_push_dry_run_apply_undo(immich: RealImmich, scene: dict[str, Any]) -> None:
    scene["groups"] = _review(scene)
    _split_obama_in_immich(immich, scene)
    names = sorted(set(FACES.values()))
    before = immich_state(immich, scene, names)
    scene["state_before_push"] = before
    dry = app(scene, "immich", "push", *push_args(scene), "--dry-run").stdout
    assert "dry run: nothing was written to Immich" in dry and "Traceback" not in dry
    assert "Barack Obama: use existing unnamed person" in dry and "merge 1 Immich person" in dry, dry
    kinds = {s["kind"] for s in json.loads(app(scene, "immich", "push", *push_args(scene), "--dry-run", "--json").stdout)["steps"]}
    assert kinds == {"create_person", "update_person", "merge_people", "reassign_face"}, kinds
    assert immich_state(immich, scene, names) == before
    applied = app(scene, "immich", "push", *push_args(scene)).stdout
    assert " applied: " in applied
    after = immich_state(immich, scene, names)
    for who in ("Barack Obama", "Joe Biden", "Alex Lacamoire"):
        assert after["people"].count(who) == 1, after["people"]
    assert not any(n.startswith("immich-ml-desktop") for n in after["people"])
    scene["state_after_push"] = after
    undone = app(scene, "immich", "push", *push_args(scene), "--undo").stdout
    assert " reverted: " in undone
    assert immich_state(immich, scene, names) == before


def _latest_plan(folder: Path) -> Path | None:
    from immich_ml_desktop.services.push import PushPlan

    plan = PushPlan.latest(folder)
    return plan.path if plan is not None else None


def _journal(journal: Path) -> list[dict[str, Any]]:
    entries = []
    for line in journal.read_text().splitlines() if journal.exists() else []:
        try:
            entries.append(json.loads(line))
        except ValueError:
            break  # a line cut short by an earlier kill
    return entries


def _run_and_kill(scene: dict[str, Any], args: list[str], folder: Path, kill_after: int | None,
                  rng: random.Random) -> str | None:
    """Run `immich push ARGS`; with `kill_after`, SIGKILL it a few ms after its journal shows step
    `kill_after` started (applying), or after that many steps were undone (--undo). -> the kind of step it
    was killed in, or None when it finished first."""
    proc = subprocess.Popen([sys.executable, "-m", "immich_ml_desktop", "immich", "push", *push_args(scene), *args],
                            env=scene["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    undo = "--undo" in args
    start = len(_journal(_latest_plan(folder).with_suffix(".journal"))) if undo else 0
    known = set(folder.glob("push-*.json"))
    while kill_after is not None and proc.poll() is None:
        new = set(folder.glob("push-*.json")) - known  # the plan this run writes (or, resuming, the latest)
        plan = next(iter(new)) if new else (_latest_plan(folder) if args else None)
        entries = _journal(plan.with_suffix(".journal"))[start:] if plan else []
        if undo:
            done = [e["step"] for e in entries if e.get("status") in ("undone", "skipped")]
            hit = done[kill_after] if len(done) > kill_after else None
        else:
            hit = kill_after if any(e.get("step") == kill_after and e.get("status") == "started" for e in entries) else None
        if hit is not None:
            time.sleep(rng.uniform(0, 0.03))
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            return str(json.loads(plan.read_text())["steps"][hit]["kind"])
        time.sleep(0.002)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    return None


def test_sigkill_at_every_kind_of_push_step_then_resume_never_duplicates(immich: RealImmich,
                                                                          scene: dict[str, Any]) -> None:
    """20 SIGKILLs a few ms after a step started (every kind of step, while pushing and while undoing);
    each interrupted push is resumed and ends exactly as an uninterrupted one, with no person made twice,
    and each undo leaves Immich as it was."""
    from immich_ml_desktop.services.push import pushes_dir

    names = sorted(set(FACES.values()))
    before, expected = scene["state_before_push"], scene["state_after_push"]
    folder = pushes_dir(scene["library"])
    rng = random.Random(20261202)
    killed: list[str] = []
    rounds = 0
    started = time.monotonic()
    while len(killed) < 20:
        rounds += 1
        assert rounds <= 20, f"only {len(killed)} kills landed in {rounds - 1} rounds"
        plan = json.loads(app(scene, "immich", "push", *push_args(scene), "--dry-run", "--json").stdout)
        steps = len(plan["steps"])
        # Each round aims at a step of the next kind in turn, so every kind is interrupted.
        kinds = sorted({s["kind"] for s in plan["steps"]})
        aim = kinds[rounds % len(kinds)]
        target = rng.choice([s["n"] for s in plan["steps"] if s["kind"] == aim])
        kind = _run_and_kill(scene, [], folder, target, rng)
        if kind:
            killed.append(kind)
            if rng.random() < 0.5 and target + 1 < steps:  # killed again while resuming
                kind = _run_and_kill(scene, ["--resume"], folder, rng.randrange(target + 1, steps), rng)
                killed += [kind] if kind else []
            _run_and_kill(scene, ["--resume"], folder, None, rng)
        assert immich_state(immich, scene, names) == expected, f"round {rounds}: {killed}"
        if rng.random() < 0.4:  # killed while undoing, then the undo is run again
            kind = _run_and_kill(scene, ["--undo"], folder, rng.randrange(steps), rng)
            killed += [f"undo {kind}"] if kind else []
        _run_and_kill(scene, ["--undo"], folder, None, rng)
        assert immich_state(immich, scene, names) == before, f"undo of round {rounds}: {killed}"
    assert {"create_person", "update_person", "merge_people", "reassign_face"} <= set(killed), killed
    print(f"\n{len(killed)} SIGKILLs in {rounds} pushes ({time.monotonic() - started:.0f} s): "
          + ", ".join(f"{k} x{killed.count(k)}" for k in sorted(set(killed))))


def test_a_metadata_edit_does_not_index_again(immich: RealImmich, scene: dict[str, Any]) -> None:
    """Favourite, description, trash and restore bump `updatedAt`; the next index detects nothing again
    and the reviewed groups keep their faces."""
    from immich_ml_desktop.library.people import People
    from immich_ml_desktop.library.store import LibraryStore

    key = scene["user"].key
    asset = scene["ids"]["face_recognition/examples/obama.jpg"]
    stamp = immich.asset(key, asset)["updatedAt"]
    immich.json("PUT", f"/assets/{asset}", key, json={"isFavorite": True})
    immich.json("PUT", f"/assets/{asset}", key, json={"description": "at the White House"})
    immich.json("DELETE", "/assets", key, json={"ids": [asset]})  # to the trash ...
    immich.json("POST", "/trash/restore/assets", key, json={"ids": [asset]})  # ... and back
    assert immich.asset(key, asset)["updatedAt"] > stamp
    with LibraryStore(scene["library"]) as store:
        faces_before = [f.id for f in store.faces(asset_id=store.asset_by_key("immich", asset).id)]
    out = app(scene, "immich", "index", *library_args(scene), "--json").stdout
    summary = json.loads(out[out.index("{"):])
    assert (summary["changed"], summary["total"]) == (0, 0)
    with LibraryStore(scene["library"]) as store:
        people = People(store, CATALOGUE_NAMES["faces"])
        obama = next(g for g in people.groups("all") if g.name == "Barack Obama")
        local = store.asset_by_key("immich", asset).id
        assert [f.id for f in store.faces(asset_id=local)] == faces_before
        assert any(f.asset_id == local for f in people.group(obama.id).faces)


def test_another_users_key_is_told_it_cannot_see_the_faces(immich: RealImmich, scene: dict[str, Any]) -> None:
    other = immich.new_user("Someone Else")
    out = app(scene, "immich", "push", *push_args(scene), "--dry-run", key=other.key, check=False)
    assert out.returncode == 2 and "another user's key" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_unregister_puts_the_ml_urls_back(immich: RealImmich, scene: dict[str, Any], serve: Any) -> None:
    immich.json("PUT", "/system-config", json={**immich.json("GET", "/system-config"),
                                                "machineLearning": {**scene["ml_before"],
                                                                    "urls": [serve.url, *scene["ml_before"]["urls"]]}})
    out = app(scene, "immich", "unregister", "--ml-url", serve.url, key=immich.admin_key).stdout
    assert "unregistered" in out
    assert immich.json("GET", "/system-config")["machineLearning"]["urls"] == scene["ml_before"]["urls"]
