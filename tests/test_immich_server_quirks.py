"""What the real Immich 3.1 server does that a naive client gets wrong, reproduced by the fake, and what
the app makes of each (tests/test_real_immich.py checks the same flows against a real server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fake_immich import FakeImmich
from immich_ml_desktop.errors import ImmichError, InvalidInputError
from immich_ml_desktop.immich.client import ImmichClient
from immich_ml_desktop.services.push import LocalFace, PushPlan, PushRun, ReviewedPerson, build_plan, pushes_dir

PHOTOS = ["face_recognition/examples/obama.jpg", "face_recognition/examples/biden.jpg",
          "skimage/astronaut.png", "skimage/coffee.png"]
BOX1, BOX2, BOX3 = (100, 100, 200, 220), (300, 100, 400, 220), (500, 100, 600, 220)


def jitter(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return (box[0] + 3, box[1] - 2, box[2] + 2, box[3] + 4)  # another detector run on the same preview


@pytest.fixture
def fake(photos_dir: Path):
    server = FakeImmich(photos_dir.parent / "immich" / "immich-openapi-specs.json")
    for rel in PHOTOS:
        server.add_asset(photos_dir / rel)
    server.start()
    yield server
    server.stop()
    assert server.spec_errors == []


@pytest.fixture
def client(fake: FakeImmich):
    with ImmichClient(fake.url, fake.admin_key, backoff=0.01, retries=1) as c:
        yield c


def plan_file(tmp_path: Path, plan: PushPlan) -> Path:
    return pushes_dir(tmp_path / "library.sqlite3") / f"push-{plan.id}.json"


# -- GET /people lists only some people --------------------------------------------------------------

def test_a_group_on_an_unlisted_immich_person_is_planned(fake: FakeImmich, client: ImmichClient):
    """Immich lists no unnamed person with fewer than 3 faces; the plan reads that person on its own
    (the dry run crashed with a KeyError)."""
    a, b, *_ = list(fake.assets)
    small = fake.add_person("")
    fake.add_face(a, BOX1, small)
    fake.add_face(b, BOX1, small)
    assert small not in {p["id"] for p in client.people()}
    plan = build_plan(client, [ReviewedPerson("Ann", [LocalFace(a, jitter(BOX1)), LocalFace(b, jitter(BOX1))])])
    assert plan.summary[0]["target"] == small and not plan.summary[0]["create"]
    assert plan.counts() == {"update_person": 1}  # named, nothing to move
    assert "Ann: use existing unnamed person" in "\n".join(plan.describe())


def test_a_named_person_with_no_faces_is_matched_by_name(fake: FakeImmich, client: ImmichClient):
    a, *_ = list(fake.assets)
    empty = fake.add_person("Ann")  # made in Immich's UI, no face yet: not listed
    face = fake.add_face(a, BOX1)
    assert empty not in {p["id"] for p in client.people()}
    plan = build_plan(client, [ReviewedPerson("Ann", [LocalFace(a, jitter(BOX1))])])
    assert plan.summary[0]["target"] == empty and plan.counts() == {"reassign_face": 1}
    assert [s["to"] for s in plan.steps] == [empty] and plan.steps[0]["face"] == face


def kill_scene(fake: FakeImmich) -> list[ReviewedPerson]:
    """Every kind of step: a new named person, a new unnamed one, a rename, a merge, face moves."""
    a, b, c, d = list(fake.assets)
    split = fake.add_person("")
    joe = fake.add_person("Joe")
    for asset, box, person in ((a, BOX1, None), (a, BOX2, split), (b, BOX1, split), (b, BOX2, joe), (c, BOX1, joe),
                               (c, BOX2, None), (d, BOX1, None), (d, BOX2, None), (d, BOX3, joe)):
        fake.add_face(asset, box, person)
    return [
        ReviewedPerson("Ann", [LocalFace(a, jitter(BOX1)), LocalFace(c, jitter(BOX2))]),
        ReviewedPerson("Joseph", [LocalFace(a, jitter(BOX2)), LocalFace(b, jitter(BOX1)), LocalFace(b, jitter(BOX2)),
                                  LocalFace(c, jitter(BOX1)), LocalFace(d, jitter(BOX3))]),
        ReviewedPerson("", [LocalFace(d, jitter(BOX1)), LocalFace(d, jitter(BOX2))]),
    ]


def test_a_crash_after_any_write_of_a_push_then_resume_never_makes_a_second_person(fake: FakeImmich,
                                                                                     client: ImmichClient, tmp_path: Path):
    """Immich commits the write, then the answer is lost (a crash at the worst moment), at every write of
    the push in turn; the resumed push ends as an uninterrupted one, with no person made twice, and undo
    leaves Immich as it was. (The real-server suite kills the process instead.)"""
    people = kill_scene(fake)
    before = fake.snapshot()
    clean = build_plan(client, people)
    writes = len(clean.steps) + sum(1 for s in clean.steps if s["kind"] == "merge_people")  # upper bound
    PushRun(client, _saved(clean, tmp_path)).apply()
    expected = fake.snapshot()
    PushRun(client, PushPlan.load(clean.path)).revert()
    assert fake.snapshot() == before
    kinds = {s["kind"] for s in clean.steps}
    assert kinds == {"create_person", "update_person", "merge_people", "reassign_face"}
    for n in range(writes):
        plan = _saved(build_plan(client, people), tmp_path / str(n))
        fault = fake.inject(methods={"POST", "PUT", "DELETE"}, skip=n, times=1, after=True, status=500)
        try:
            PushRun(client, plan).apply()
        except ImmichError:
            assert fault.fired == 1
            PushRun(client, PushPlan.load(plan.path)).apply()
        fake.faults.remove(fault)
        assert fake.snapshot() == expected, f"a crash after write {n} changed the outcome"
        PushRun(client, PushPlan.load(plan.path)).revert()
        assert fake.snapshot() == before, f"undo after a crash at write {n}"


def _saved(plan: PushPlan, folder: Path) -> PushPlan:
    plan.save(folder / f"push-{plan.id}.json")
    return plan


# -- another user's assets, validation errors --------------------------------------------------------

def test_another_users_key_is_told_it_cannot_see_the_faces(fake: FakeImmich, photos_dir: Path):
    a, b, *_ = list(fake.assets)
    fake.add_face(a, BOX1)
    fake.add_face(b, BOX1)
    bob = fake.add_key(["all"], fake.add_user("Bob"))
    people = [ReviewedPerson("Barack Obama", [LocalFace(a, jitter(BOX1)), LocalFace(b, jitter(BOX1))])]
    with ImmichClient(fake.url, bob, backoff=0.01) as theirs:
        with pytest.raises(InvalidInputError, match="None of the 2 faces.*another user's key"):
            build_plan(theirs, people)
    with ImmichClient(fake.url, fake.admin_key, backoff=0.01) as mine:
        bobs_asset = fake.add_asset(photos_dir / PHOTOS[0], owner=fake.keys[bob].user_id)
        mixed = [ReviewedPerson("Barack Obama", people[0].faces + [LocalFace(bobs_asset, BOX1)])]
        text = "\n".join(build_plan(mine, mixed).describe())
    assert "1 faces on assets this API key cannot see (deleted in Immich, or another user's)" in text
    assert "Immich already agrees" not in text


def test_validation_errors_say_which_field(fake: FakeImmich, client: ImmichClient):
    with pytest.raises(ImmichError) as info:
        client.update_people([{"id": "not-a-uuid", "name": "Ann"}])
    assert info.value.status == 400
    assert "Validation failed: people.0.id:" in str(info.value)
    assert len(fake.spec_errors) == 1  # the request this test sent on purpose
    fake.spec_errors.clear()


def test_a_real_validation_answer_is_shown_with_its_details():
    """Immich 3.1's exact answer to `PUT /people` with a bad id (seen on the real server)."""
    import httpx

    from immich_ml_desktop.immich.client import _message

    body = {"message": "Validation failed", "errors": [{"origin": "string", "code": "invalid_format", "format": "uuid",
                                                        "path": ["people", 0, "id"], "message": "Invalid UUID"}]}
    assert _message(httpx.Response(400, json=body)) == "Validation failed: people.0.id: Invalid UUID"


# -- Immich as a library source: what its ML would see, and what an edit changes -----------------------

def test_index_takes_what_immichs_ml_sees(fake: FakeImmich, client: ImmichClient, cpu_engine, tmp_path: Path,
                                          photos_dir: Path):
    from conftest import CLIP_PACK, FACE_PACK
    from immich_ml_desktop.library.immich_source import ImmichSource
    from immich_ml_desktop.library.store import LibraryStore
    from immich_ml_desktop.services.index import IndexJob

    video = fake.add_asset(photos_dir / "skimage/astronaut.png", kind="VIDEO", visibility="hidden")  # a motion photo's
    archived = fake.add_asset(photos_dir / "skimage/rocket.jpg", visibility="archive")
    waiting = fake.add_asset(photos_dir / "skimage/chelsea.png", name="IMG_2682.heic", preview=False)
    with LibraryStore(tmp_path / "library.sqlite3") as store:
        summary = IndexJob(store, cpu_engine, ImmichSource(client), clip_model=CLIP_PACK, face_model=FACE_PACK).run()
        keys = {a.key for a in store.assets("immich")}
    assert video not in keys and waiting not in keys and archived in keys
    assert (summary.indexed, summary.failed) == (5, 0)
    assert summary.no_preview == ["IMG_2682.heic"]
    assert fake.calls("viewAsset") == 5  # no download tried for the hidden video nor the asset without a preview


def test_an_edit_of_metadata_does_not_index_again_and_an_edit_of_the_image_keeps_decisions(
        fake: FakeImmich, client: ImmichClient, cpu_engine, tmp_path: Path, photos_dir: Path):
    from conftest import CLIP_PACK, FACE_PACK
    from immich_ml_desktop.library.immich_source import ImmichSource
    from immich_ml_desktop.library.people import People
    from immich_ml_desktop.library.store import LibraryStore
    from immich_ml_desktop.services.index import IndexJob

    obama = next(a for a, v in fake.assets.items() if v["originalFileName"] == "obama.jpg")
    with LibraryStore(tmp_path / "library.sqlite3") as store:
        def index():
            return IndexJob(store, cpu_engine, ImmichSource(client), clip_model=CLIP_PACK, face_model=FACE_PACK).run()

        index()
        people = People(store, FACE_PACK)
        people.recluster()
        asset = store.asset_by_key("immich", obama)
        [face] = store.faces(asset_id=asset.id)
        group = people.move_faces([face.id])  # into a new group of its own: a decision
        people.rename(group, "Barack Obama")
        for change in ({"isFavorite": True}, {"description": "at the White House"}, {"isFavorite": False}):
            client._json("updateAsset", "PUT", f"/assets/{obama}", json=change)  # as Immich's web app does
        assert fake.assets[obama]["updatedAt"] > fake.assets[obama]["createdAt"]  # Immich bumped it
        again = index()
        assert (again.changed, again.total) == (0, 0)
        assert [f.id for f in store.faces(asset_id=asset.id)] == [face.id]  # not detected again

        # The image itself changes (Immich's editor: same original checksum, a new preview, here smaller).
        from PIL import Image

        with Image.open(photos_dir / "face_recognition/examples/obama.jpg") as im:
            im.resize((im.width * 3 // 4, im.height * 3 // 4)).save(tmp_path / "obama-edited.jpg", quality=85)
        fake.edit_asset_photo(obama, tmp_path / "obama-edited.jpg")
        edited = index()
        assert (edited.changed, edited.indexed) == (1, 1)
        [new_face] = store.faces(asset_id=asset.id)
        assert new_face.id != face.id
        named = next(g for g in people.groups("all") if g.name == "Barack Obama")
        assert [f.face_id for f in people.group(named.id).faces] == [new_face.id]  # the decision followed the face


def test_a_library_made_by_the_earlier_version_is_not_indexed_again(fake: FakeImmich, client: ImmichClient,
                                                                  cpu_engine, tmp_path: Path):
    """Earlier versions keyed an Immich asset by checksum + updatedAt; the first run of this one takes the
    new key without detecting anything again."""
    from conftest import CLIP_PACK, FACE_PACK
    from immich_ml_desktop.library.immich_source import ImmichSource, updated_ns
    from immich_ml_desktop.library.store import LibraryStore
    from immich_ml_desktop.services.index import IndexJob

    with LibraryStore(tmp_path / "library.sqlite3") as store:
        IndexJob(store, cpu_engine, ImmichSource(client), clip_model=CLIP_PACK, face_model=FACE_PACK).run()
        with store.write() as conn:  # as the earlier version stored them
            for asset in fake.assets.values():
                conn.execute("UPDATE assets SET checksum = ?, mtime_ns = ? WHERE key = ?",
                             (asset["checksum"], updated_ns(asset["updatedAt"]), asset["id"]))
        again = IndexJob(store, cpu_engine, ImmichSource(client), clip_model=CLIP_PACK, face_model=FACE_PACK).run()
    assert (again.changed, again.unchanged, again.total) == (0, 4, 0)


def test_a_group_immich_has_no_face_of_says_so(fake: FakeImmich, client: ImmichClient):
    """Immich's face detection has not run on the asset: the plan neither claims Immich agrees nor makes
    an empty person (seen on the real server when Immich's jobs had failed unseen)."""
    a, *_ = list(fake.assets)
    plan = build_plan(client, [ReviewedPerson("Ann", [LocalFace(a, BOX1)])])
    text = "\n".join(plan.describe())
    assert "Ann: nothing to do; none of its 1 faces is in Immich (Immich has no face there yet" in text
    assert plan.steps == [] and "use existing" not in text
