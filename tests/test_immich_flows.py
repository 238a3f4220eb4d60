"""End-to-end flows against the fake Immich server: push people (plan, apply, resume, undo), register
the ML URL, start jobs, index Immich assets into the library; with faults injected along the way."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from fake_immich import FakeImmich
from immich_ml_desktop.errors import ImmichError, ImmichPermissionError, InvalidInputError
from immich_ml_desktop.immich.client import ImmichClient
from immich_ml_desktop.services import immich_ml
from immich_ml_desktop.services.push import (
    LocalFace,
    PushPlan,
    PushRun,
    ReviewedPerson,
    build_plan,
    match_faces,
    pushes_dir,
)

PHOTOS = ["face_recognition/examples/obama.jpg", "face_recognition/examples/biden.jpg",
          "skimage/astronaut.png", "skimage/coffee.png"]


@pytest.fixture
def spec_path(photos_dir: Path) -> Path:
    return photos_dir.parent / "immich" / "immich-openapi-specs.json"


@pytest.fixture
def fake(spec_path: Path, photos_dir: Path):
    server = FakeImmich(spec_path)
    for rel in PHOTOS:
        server.add_asset(photos_dir / rel)
    server.start()
    yield server
    server.stop()
    assert server.spec_errors == []


@pytest.fixture
def client(fake: FakeImmich):
    with ImmichClient(fake.url, fake.admin_key, backoff=0.01, retries=2) as c:
        yield c


# -- push: a scene with unassigned faces, a person Immich split in two, and one to hide ----------------

class Scene:
    def __init__(self, fake: FakeImmich) -> None:
        a, b, c, d = list(fake.assets)
        self.x = fake.add_person("")          # Immich's split half of Joe, unnamed
        self.joe = fake.add_person("Joe")
        self.z = fake.add_person("")          # someone the user hides
        self.other = fake.add_person("Kim")   # not touched by the push
        box1, box2 = (100, 100, 200, 220), (300, 100, 400, 220)
        self.faces = {
            "a1": fake.add_face(a, box1), "a2": fake.add_face(a, box2, self.x),
            "b1": fake.add_face(b, box1, self.x), "b2": fake.add_face(b, box2, self.joe),
            "c1": fake.add_face(c, box1, self.joe), "c2": fake.add_face(c, box2),
            "d1": fake.add_face(d, box1, self.z), "d2": fake.add_face(d, box2, self.other),
        }

        def jitter(box):  # another detector run, same preview
            return box[0] + 3, box[1] - 2, box[2] + 2, box[3] + 4

        self.people = [
            ReviewedPerson("Ann", [LocalFace(a, jitter(box1)), LocalFace(c, jitter(box2)),
                                   LocalFace(d, (600, 600, 650, 650))]),  # the last one Immich never found
            ReviewedPerson("Joe", [LocalFace(a, jitter(box2)), LocalFace(b, jitter(box1)),
                                   LocalFace(b, jitter(box2)), LocalFace(c, jitter(box1))]),
            ReviewedPerson("", [LocalFace(d, jitter(box1))], hidden=True),
        ]


def expected_after_push(scene: Scene, fake: FakeImmich) -> None:
    names = {p["name"]: pid for pid, p in fake.people.items()}
    assert sorted(p["name"] for p in fake.people.values()) == ["", "Ann", "Joe", "Kim"]
    assert fake.faces_of(names["Ann"]) == {scene.faces["a1"], scene.faces["c2"]}
    assert fake.faces_of(scene.joe) == {scene.faces[k] for k in ("a2", "b1", "b2", "c1")}
    assert scene.x not in fake.people  # merged into Joe
    assert fake.people[scene.z]["isHidden"] is True
    assert fake.faces_of(scene.other) == {scene.faces["d2"]}


def saved_plan(client: ImmichClient, scene: Scene, tmp_path: Path) -> PushPlan:
    plan = build_plan(client, scene.people)
    plan.save(pushes_dir(tmp_path / "library.sqlite3") / f"push-{plan.id}.json")
    return plan


def test_faces_are_matched_by_overlap_one_to_one():
    remote = [{"id": "r1", "boundingBoxX1": 0, "boundingBoxY1": 0, "boundingBoxX2": 100, "boundingBoxY2": 100,
               "imageWidth": 1000, "imageHeight": 800},
              {"id": "r2", "boundingBoxX1": 90, "boundingBoxY1": 0, "boundingBoxX2": 190, "boundingBoxY2": 100,
               "imageWidth": 1000, "imageHeight": 800}]
    local = [LocalFace("a", (95, 2, 192, 98)), LocalFace("a", (2, 1, 99, 101)), LocalFace("a", (40, 0, 140, 100))]
    matched = match_faces(local, remote)
    assert {i: f["id"] for i, f in matched.items()} == {0: "r2", 1: "r1"}  # the straddling face matches nothing
    half = [LocalFace("a", (0, 0, 50, 50), image_size=(500, 400))]  # boxes of a half-size preview are scaled
    assert match_faces(half, remote)[0]["id"] == "r1"


def test_dry_run_shows_the_plan_and_writes_nothing(fake: FakeImmich, client: ImmichClient, tmp_path: Path):
    scene = Scene(fake)
    before = fake.snapshot()
    plan = build_plan(client, scene.people)
    text = "\n".join(plan.describe())
    assert "Ann: create; 2 faces to assign, 1 faces not found in Immich" in text
    assert "Joe: use existing 'Joe'; 0 faces to assign, merge 1 Immich person (unnamed)" in text
    assert re.search(r"\(unnamed\): use existing unnamed person [0-9a-f]{8}; 0 faces to assign, hide", text)
    assert plan.counts() == {"create_person": 1, "reassign_face": 2, "merge_people": 1, "update_person": 1}
    assert {op for op, _, _ in fake.log} <= {"getAllPeople", "getPerson", "searchPerson", "getFaces", "searchAssets"}  # reads only
    assert fake.snapshot() == before


def test_push_applies_with_progress_and_undo_restores(fake: FakeImmich, client: ImmichClient, tmp_path: Path):
    scene = Scene(fake)
    before = fake.snapshot()
    plan = saved_plan(client, scene, tmp_path)
    seen: list[tuple[int, int]] = []
    PushRun(client, plan, progress=lambda done, total, what: seen.append((done, total))).apply()
    expected_after_push(scene, fake)
    assert seen[-1] == (5, 5) and len(seen) == 5
    on_disk = PushPlan.load(plan.path)
    assert on_disk.state == "applied" and {s["status"] for s in on_disk.steps} == {"done"}
    merge = next(s for s in on_disk.steps if s["kind"] == "merge_people")
    assert {f["face"] for f in merge["source_faces"]} == {scene.faces["a2"], scene.faces["b1"]}

    PushRun(client, PushPlan.latest(plan.path.parent)).revert()
    assert fake.snapshot() == before  # names, hidden flags and every face's person as they were
    assert PushPlan.load(plan.path).state == "reverted"
    with pytest.raises(InvalidInputError, match="reverted"):
        PushRun(client, PushPlan.load(plan.path)).apply()


def test_a_person_immich_mixed_up_is_not_merged_wholesale(fake: FakeImmich, client: ImmichClient, tmp_path: Path):
    a, b, c, d = list(fake.assets)
    ann, mixed = fake.add_person("Ann"), fake.add_person("")
    box, other = (100, 100, 200, 220), (300, 100, 400, 220)
    mine = [fake.add_face(a, box, ann), fake.add_face(b, box, ann), fake.add_face(c, box, mixed)]
    strangers = {fake.add_face(a, other, mixed), fake.add_face(d, box, mixed)}  # Ann is on 1 of its 3 photos
    plan = build_plan(client, [ReviewedPerson("Ann", [LocalFace(x, box) for x in (a, b, c)])])
    assert plan.counts() == {"reassign_face": 1}
    plan.save(tmp_path / "push.json")
    PushRun(client, plan).apply()
    assert fake.faces_of(ann) == set(mine) and fake.faces_of(mixed) == strangers


def test_the_undo_log_survives_a_line_cut_short_by_a_crash(fake: FakeImmich, client: ImmichClient, tmp_path: Path):
    scene = Scene(fake)
    plan = saved_plan(client, scene, tmp_path)
    PushRun(client, plan).apply()
    with open(plan.journal_path, "a", encoding="utf-8") as f:
        f.write('{"step": 0, "stat')  # the machine died mid-write
    reloaded = PushPlan.load(plan.path)
    assert reloaded.state == "applied" and reloaded.refs == plan.refs
    assert [s["status"] for s in reloaded.steps] == ["done"] * 5
    assert json.loads(plan.path.read_text())["state"] == "planned"  # the plan itself is written once


def test_a_500_in_the_middle_of_a_push_then_resume_finishes_without_doing_anything_twice(
        fake: FakeImmich, client: ImmichClient, tmp_path: Path):
    scene = Scene(fake)
    plan = saved_plan(client, scene, tmp_path)
    fake.inject(methods={"PUT"}, skip=1, times=3, status=500)  # the 2nd write of a face, outlasting the retries
    with pytest.raises(ImmichError, match="HTTP 500.*Nothing was lost"):
        PushRun(client, plan).apply()
    interrupted = PushPlan.load(plan.path)
    assert interrupted.state == "applying"
    assert [s["status"] for s in interrupted.steps] == ["done", "done", "done", "started", "pending"]
    PushRun(client, interrupted).apply()
    expected_after_push(scene, fake)
    assert fake.calls("createPerson") == 1 and fake.calls("mergePerson") == 1


def test_a_crash_after_immich_committed_is_not_applied_twice(fake: FakeImmich, client: ImmichClient, tmp_path: Path):
    scene = Scene(fake)
    plan = saved_plan(client, scene, tmp_path)
    fake.inject(operation="createPerson", after=True, status=500)  # Immich created Ann, then the answer was lost
    with pytest.raises(ImmichError):
        PushRun(client, plan).apply()
    PushRun(client, PushPlan.load(plan.path)).apply()
    assert [p["name"] for p in fake.people.values()].count("Ann") == 1
    expected_after_push(scene, fake)


def test_a_crash_after_immich_committed_is_reverted_too(fake: FakeImmich, client: ImmichClient, tmp_path: Path):
    scene = Scene(fake)
    before = fake.snapshot()
    plan = saved_plan(client, scene, tmp_path)
    fake.inject(operation="createPerson", after=True, status=500)
    with pytest.raises(ImmichError):
        PushRun(client, plan).apply()
    PushRun(client, PushPlan.load(plan.path)).revert()
    assert fake.snapshot() == before  # Ann, created before the answer was lost, is gone again


def test_server_down_in_the_middle_of_a_push_then_resume(fake: FakeImmich, client: ImmichClient, tmp_path: Path):
    from immich_ml_desktop.errors import ImmichUnreachableError

    scene = Scene(fake)
    plan = saved_plan(client, scene, tmp_path)
    port = int(fake.url.rsplit(":", 1)[1])

    def stop_after_two(done: int, total: int, what: str) -> None:
        if done == 2:
            fake.stop()

    with pytest.raises(ImmichUnreachableError, match="Cannot reach Immich"):
        PushRun(client, plan, progress=stop_after_two).apply()
    fake.start(port)  # back up
    PushRun(client, PushPlan.load(plan.path)).apply()
    expected_after_push(scene, fake)
    assert fake.calls("createPerson") == 1


def test_an_interrupted_push_can_be_reverted(fake: FakeImmich, client: ImmichClient, tmp_path: Path):
    scene = Scene(fake)
    before = fake.snapshot()
    plan = saved_plan(client, scene, tmp_path)
    fake.inject(operation="reassignFacesById", skip=1, times=3, status=502)
    with pytest.raises(ImmichError):
        PushRun(client, plan).apply()
    PushRun(client, PushPlan.load(plan.path)).revert()
    assert fake.snapshot() == before


def test_undo_leaves_faces_the_user_moved_since_alone(fake: FakeImmich, client: ImmichClient, tmp_path: Path):
    scene = Scene(fake)
    plan = saved_plan(client, scene, tmp_path)
    PushRun(client, plan).apply()
    fake.faces[scene.faces["c2"]]["personId"] = scene.other  # the user fixed a face in Immich's UI
    PushRun(client, PushPlan.load(plan.path)).revert()
    assert fake.faces[scene.faces["c2"]]["personId"] == scene.other
    assert fake.faces[scene.faces["a1"]]["personId"] is None


def test_push_without_permission_says_which(fake: FakeImmich, tmp_path: Path):
    scene = Scene(fake)
    key = fake.add_key(["person.read", "face.read", "asset.read"])
    with ImmichClient(fake.url, key, backoff=0.01) as limited:
        plan = saved_plan(limited, scene, tmp_path)  # reading is allowed
        with pytest.raises(ImmichPermissionError, match="lacks face.update, person.create, person.delete, "
                                                        "person.merge, person.update.*nothing was changed"):
            PushRun(limited, plan).apply()
    assert PushPlan.load(plan.path).state == "planned"
    assert sorted(p["name"] for p in fake.people.values()) == ["", "", "Joe", "Kim"]


# -- Immich's ML: URL registration, model check, jobs -------------------------------------------------

def test_register_puts_our_url_first_and_unregister_takes_it_out(fake: FakeImmich, client: ImmichClient):
    ours = "http://192.168.1.20:3003"
    urls, changed = immich_ml.register_url(client, ours)
    assert changed and urls == [ours, "http://immich-machine-learning:3003"]
    assert fake.config["machineLearning"]["urls"] == urls
    assert immich_ml.register_url(client, ours + "/") == (urls, False)  # already first: nothing written
    assert fake.calls("updateConfig") == 1
    other_before = json.dumps({k: v for k, v in fake.config.items() if k != "machineLearning"}, sort_keys=True)
    urls, changed = immich_ml.unregister_url(client, ours)
    assert changed and urls == ["http://immich-machine-learning:3003"]
    assert json.dumps({k: v for k, v in fake.config.items() if k != "machineLearning"}, sort_keys=True) == other_before
    with pytest.raises(InvalidInputError, match="only ML URL"):
        immich_ml.unregister_url(client, "http://immich-machine-learning:3003")


def test_models_immich_uses_are_checked_in_our_cache(fake: FakeImmich, client: ImmichClient, cpu_engine):
    from conftest import CLIP_PACK, FACE_PACK

    ml = immich_ml.read_ml_config(client)
    assert (ml.clip_model, ml.face_model) == ("ViT-B-32__openai", "buffalo_l")
    missing = immich_ml.check_models(cpu_engine, ml)
    assert [(c.name, c.present) for c in missing] == [("ViT-B-32__openai", False), ("buffalo_l", False)]
    fake.config["machineLearning"]["clip"]["modelName"] = CLIP_PACK
    fake.config["machineLearning"]["facialRecognition"]["modelName"] = FACE_PACK
    present = immich_ml.check_models(cpu_engine, immich_ml.read_ml_config(client))
    assert [(c.name, c.present, c.missing) for c in present] == [(CLIP_PACK, True, []), (FACE_PACK, True, [])]


def test_jobs_start_and_queue_counts_give_an_eta(fake: FakeImmich, client: ImmichClient):
    counts = immich_ml.start_jobs(client, ["smartSearch", "faceDetection"], force=True)
    assert [(c.name, c.waiting) for c in counts] == [("smartSearch", 4), ("faceDetection", 4)]
    clock = iter([0.0, 10.0, 10.0])
    watch = immich_ml.QueueWatch(clock=lambda: next(clock))
    assert watch.eta(immich_ml.queue_counts(client, ("smartSearch",))[0]) is None  # no rate yet
    fake.process_jobs("smartSearch", 2)
    later = immich_ml.queue_counts(client, ("smartSearch",))[0]
    assert later.completed == 0  # Immich 3.1 removes finished jobs: the rate comes from what is left
    assert later.remaining == 2 and watch.eta(later) == pytest.approx(10.0)
    assert watch.rate(later) == pytest.approx(0.2)
    with pytest.raises(InvalidInputError, match="Unknown ML job"):
        immich_ml.start_jobs(client, ["thumbnailGeneration"])


def test_new_work_queued_is_not_counted_as_progress(fake: FakeImmich, client: ImmichClient):
    times = iter([0.0, 10.0, 20.0, 30.0])
    watch = immich_ml.QueueWatch(clock=lambda: next(times))
    counts = lambda: immich_ml.queue_counts(client, ("ocr",))[0]  # noqa: E731
    immich_ml.start_jobs(client, ["ocr"], force=True)  # OCR is one of Immich 3.1's ML queues
    assert watch.rate(counts()) is None and counts().waiting == 4
    fake.process_jobs("ocr", 1)
    assert watch.rate(counts()) == pytest.approx(0.1)
    immich_ml.start_jobs(client, ["ocr"], force=True)  # 4 more queued: remaining rises, no progress lost
    assert watch.rate(counts()) == pytest.approx(1 / 20)
    fake.process_jobs("ocr", 3)
    assert watch.eta(counts()) == pytest.approx(counts().remaining / (4 / 30))


def test_jobs_need_an_admin(fake: FakeImmich):
    user = fake.add_user("Ann")
    with ImmichClient(fake.url, fake.add_key(["all"], user), backoff=0.01) as c:
        with pytest.raises(ImmichPermissionError, match="runQueueCommandLegacy: it needs an admin account"):
            immich_ml.start_jobs(c, ["smartSearch"])
        assert c.check_key().missing == {"register ML URL": ["admin account"], "run ML jobs": ["admin account"]}


# -- Immich as a library source, then a push of real faces ---------------------------------------------

FACE_PHOTOS = {"face_recognition/examples/obama.jpg": "Barack Obama", "face_recognition/examples/obama2.jpg": "Barack Obama",
               "face_recognition/examples/biden.jpg": "Joe Biden", "skimage/coffee.png": None}


@pytest.fixture
def face_fake(spec_path: Path, photos_dir: Path):
    server = FakeImmich(spec_path)
    server.identity = {server.add_asset(photos_dir / rel): who for rel, who in FACE_PHOTOS.items()}
    server.start()
    yield server
    server.stop()
    assert server.spec_errors == []


def index_job(store, engine, client, **kw):
    from conftest import CLIP_PACK, FACE_PACK
    from immich_ml_desktop.library.immich_source import ImmichSource
    from immich_ml_desktop.services.index import IndexJob

    return IndexJob(store, engine, ImmichSource(client), clip_model=CLIP_PACK, face_model=FACE_PACK, **kw)


def test_index_from_immich_then_only_new_or_changed_assets(face_fake: FakeImmich, cpu_engine, tmp_path: Path,
                                                           photos_dir: Path):
    from immich_ml_desktop.library.store import LibraryStore

    with ImmichClient(face_fake.url, face_fake.admin_key, backoff=0.01) as client, \
            LibraryStore(tmp_path / "library.sqlite3") as store:
        first = index_job(store, cpu_engine, client).run()
        assert (first.new, first.indexed, first.failed) == (4, 4, 0)
        assert {a.key for a in store.assets("immich")} == set(face_fake.assets)  # keyed by Immich asset id
        obama = store.asset_by_key("immich", next(k for k, v in face_fake.identity.items() if v == "Barack Obama"))
        assert len(store.faces(asset_id=obama.id)) >= 1
        assert (obama.width, obama.height) == Image.open(io.BytesIO(face_fake.previews[obama.key])).size
        assert face_fake.calls("viewAsset") == 4

        again = index_job(store, cpu_engine, client).run()
        assert (again.new, again.changed, again.unchanged, again.total) == (0, 0, 4, 0)
        assert face_fake.calls("viewAsset") == 4  # nothing downloaded again

        face_fake.add_asset(photos_dir / "skimage/astronaut.png", kind="VIDEO")  # a video's preview frame
        face_fake.replace_asset_photo(obama.key, photos_dir / "face_recognition/examples/obama-1080p.jpg")
        third = index_job(store, cpu_engine, client).run()
        assert (third.new, third.changed, third.unchanged, third.indexed) == (1, 1, 3, 2)
        assert face_fake.calls("viewAsset") == 6


def test_a_dropped_preview_download_is_retried_during_indexing(face_fake: FakeImmich, cpu_engine, tmp_path: Path):
    from immich_ml_desktop.library.store import LibraryStore

    face_fake.inject(operation="viewAsset", drop=True, skip=1, times=1)
    with ImmichClient(face_fake.url, face_fake.admin_key, backoff=0.01) as client, \
            LibraryStore(tmp_path / "library.sqlite3") as store:
        summary = index_job(store, cpu_engine, client).run()
    assert (summary.indexed, summary.failed) == (4, 0)
    assert [s for op, _, s in face_fake.log if op == "viewAsset"].count(599) == 1


def test_server_going_down_while_indexing_stops_cleanly_and_a_rerun_finishes(
        face_fake: FakeImmich, cpu_engine, tmp_path: Path):
    from immich_ml_desktop.errors import SourceUnavailableError
    from immich_ml_desktop.library.store import LibraryStore

    outage = face_fake.inject(operation="viewAsset", drop=True, skip=2, times=10_000)
    with ImmichClient(face_fake.url, face_fake.admin_key, backoff=0.01, retries=1) as client, \
            LibraryStore(tmp_path / "library.sqlite3") as store:
        with pytest.raises(SourceUnavailableError, match="connection to Immich.*broke"):
            index_job(store, cpu_engine, client, workers=1).run()
        assert store.failures() == []  # no asset is blamed for the outage
        outage.times = 0  # the server is back
        rerun = index_job(store, cpu_engine, client).run()
        assert rerun.failed == 0 and rerun.indexed == rerun.total <= 4
        assert store.stats()["indexed"] == 4


def test_index_review_then_push_real_faces_from_the_command_line(face_fake: FakeImmich, cpu_engine, tmp_path: Path,
                                                                    models_dir: Path, capsys):
    """Immich's faces come from the same detector on the same preview (as when our server is its ML
    service), so every face the user reviewed locally finds its Immich face."""
    from conftest import CLIP_PACK, FACE_PACK
    from immich_ml_desktop.library.people import People
    from immich_ml_desktop.library.store import LibraryStore

    for asset_id, data in face_fake.previews.items():
        for face in cpu_engine.faces(FACE_PACK, data):
            face_fake.add_face(asset_id, tuple(float(v) for v in face.box))
    library = tmp_path / "library.sqlite3"
    common = ["--server", face_fake.url, "--api-key", face_fake.admin_key, "--library", str(library)]
    assert cli("immich", "index", *common, "--cache-dir", str(models_dir), "--device", "cpu",
               "--clip-model", CLIP_PACK, "--face-model", FACE_PACK) == 0
    assert "4 indexed, 0 failed" in capsys.readouterr().out
    assert cli("immich", "push", *common, "--dry-run") == 2  # nothing reviewed yet
    assert "No reviewed face groups" in capsys.readouterr().err

    with LibraryStore(library) as store:  # the review the user does on the People page
        people = People(store, FACE_PACK)
        for who in ("Barack Obama", "Joe Biden"):
            largest = []
            for asset in store.assets("immich"):
                faces = store.faces(asset_id=asset.id) if face_fake.identity[asset.key] == who else []
                if faces:
                    largest.append(max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])).id)
            group = people.move_faces(largest)
            people.rename(group, who)
            if who == "Joe Biden":
                people.set_hidden(group, True)

    assert cli("immich", "push", *common, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "Barack Obama: create; 2 faces to assign" in out and "Joe Biden: create; 1 faces to assign" in out
    assert "not found" not in out and face_fake.people == {}
    assert cli("immich", "push", *common) == 0
    assert "applied: 5/5 steps" in capsys.readouterr().out
    named = {p["name"]: p for p in face_fake.people.values()}
    assert sorted(named) == ["Barack Obama", "Joe Biden"] and named["Joe Biden"]["isHidden"]
    assert len(face_fake.faces_of(named["Barack Obama"]["id"])) == 2
    assert len(face_fake.faces_of(named["Joe Biden"]["id"])) == 1
    assert cli("immich", "push", *common, "--resume") == 0
    assert "was already applied: nothing to do" in capsys.readouterr().out
    assert cli("immich", "push", *common, "--undo") == 0
    assert "reverted: 5/5 steps undone" in capsys.readouterr().out and face_fake.people == {}
    assert cli("immich", "push", *common, "--undo") == 0  # again: says so, changes nothing
    assert "was already reverted: nothing to do" in capsys.readouterr().out and face_fake.people == {}


# -- the command line ---------------------------------------------------------------------------------

def cli(*argv: str) -> int:
    from immich_ml_desktop.cli import main

    return main(list(argv))


def test_cli_check_reads_server_and_key_from_the_environment(fake: FakeImmich, monkeypatch, capsys):
    monkeypatch.setenv("IMMICH_URL", fake.url + "/api")
    monkeypatch.setenv("IMMICH_API_KEY", fake.admin_key)
    assert cli("immich", "check") == 0
    out = capsys.readouterr().out
    assert f"Immich 3.1.0 at {fake.url}/api; key 'test key' (admin)" in out
    assert "push people      ok" in out
    limited = fake.add_key(["asset.read", "asset.view"], fake.add_user("Ann"))
    assert cli("immich", "check", "--api-key", limited, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["admin"] is None and "index assets" not in report["missing"]
    assert "person.create" in report["missing"]["push people"]


@pytest.mark.parametrize("fault, message", [
    ("wrong key", "error: Immich at .* rejected the API key"),
    ("old server", r"error: Immich 1\.118\.2 .* too old"),
    ("server down", "error: Cannot reach Immich at"),
])
def test_cli_errors_are_one_clear_line(fake: FakeImmich, capsys, fault: str, message: str):
    key, url = fake.admin_key, fake.url
    if fault == "wrong key":
        key = "wrong"
    elif fault == "old server":
        fake.version = (1, 118, 2)
    else:
        fake.stop()
    assert cli("immich", "check", "--server", url, "--api-key", key) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.match(message, err), err


def test_cli_register_jobs_unregister(fake: FakeImmich, capsys, models_dir: Path):
    from conftest import CLIP_PACK, FACE_PACK

    fake.config["machineLearning"]["clip"]["modelName"] = CLIP_PACK
    fake.config["machineLearning"]["facialRecognition"]["modelName"] = FACE_PACK
    common = ["--server", fake.url, "--api-key", fake.admin_key]
    assert cli("immich", "register", *common, "--ml-url", "http://10.0.0.5:3003", "--cache-dir", str(models_dir),
               "--device", "cpu") == 0
    out = capsys.readouterr().out
    assert "registered: Immich's ML URLs are now http://10.0.0.5:3003, http://immich-machine-learning:3003" in out
    assert f"clip model {CLIP_PACK}: present" in out
    assert cli("immich", "jobs", *common, "--start", "all", "--force") == 0
    out = capsys.readouterr().out
    assert re.search(r"smartSearch +waiting +4", out) and re.search(r"faceDetection +waiting +4", out)
    assert cli("immich", "unregister", *common, "--ml-url", "http://10.0.0.5:3003/", "--json") == 0
    assert json.loads(capsys.readouterr().out)["urls"] == ["http://immich-machine-learning:3003"]


def test_cli_push_resume_and_undo_use_the_saved_plan(fake: FakeImmich, client: ImmichClient, capsys, tmp_path: Path):
    scene = Scene(fake)
    before = fake.snapshot()
    library = tmp_path / "library.sqlite3"
    plan = build_plan(client, scene.people)
    plan.save(pushes_dir(library) / f"push-{plan.id}.json")
    fake.inject(operation="mergePerson", status=500)  # the first write fails: nothing is applied yet
    common = ["--server", fake.url, "--api-key", fake.admin_key, "--library", str(library)]
    with pytest.raises(ImmichError):
        PushRun(client, plan).apply()
    assert cli("immich", "push", *common, "--resume") == 0
    out = capsys.readouterr().out
    assert f"push {plan.id} applied: 5/5 steps" in out
    expected_after_push(scene, fake)
    assert cli("immich", "push", *common, "--undo", "--json") == 0
    assert json.loads(capsys.readouterr().out)["state"] == "reverted"
    assert fake.snapshot() == before


def test_the_latest_plan_is_the_one_made_last_even_within_the_same_second(tmp_path: Path):
    """Plan ids are second + random hex: a name sort picked an older plan (seen: `--resume` of a reverted
    push after two pushes in one second)."""
    folder = pushes_dir(tmp_path / "library.sqlite3")
    for plan_id, created in (("20261202-120000-ffffff", 1.0), ("20261202-120000-000000", 2.0)):
        PushPlan(id=plan_id, server="http://x/api", created_at=created, steps=[], people_before=[],
                 summary=[]).save(folder / f"push-{plan_id}.json")
    assert PushPlan.latest(folder).id == "20261202-120000-000000"
    assert PushPlan.latest(tmp_path / "nothing-here") is None
