"""`immich push` adds to Immich the faces of a reviewed group that only the library's own passes found
(`POST /faces`, with the group's person), never twice, and undo deletes them again; a face Immich's own
detection would find waits for it. Against the fake Immich (the real one: test_real_immich.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fake_immich import FakeImmich
from immich_ml_desktop.errors import ImmichError, ImmichPermissionError
from immich_ml_desktop.immich.client import ImmichClient
from immich_ml_desktop.services.push import LocalFace, PushPlan, PushRun, ReviewedPerson, build_plan

PHOTOS = ["face_recognition/examples/obama.jpg", "face_recognition/examples/obama2.jpg",
          "face_recognition/examples/biden.jpg"]


@pytest.fixture
def fake(photos_dir: Path):
    server = FakeImmich(photos_dir.parent / "immich" / "immich-openapi-specs.json")
    for rel in PHOTOS:
        server.add_asset(photos_dir / rel)
    server.start()
    yield server
    server.stop()
    assert server.spec_errors == []


def scene(fake: FakeImmich) -> tuple[list[ReviewedPerson], dict[str, str]]:
    """Ann: one face Immich has (unassigned), one only the padded pass found (Immich has none there), one
    Immich's own detection finds too but has not yet (its face detection has not run on that photo)."""
    a, b, c = list(fake.assets)
    immich_face = fake.add_face(a, (100, 100, 200, 220))
    sizes = {k: _size(fake, k) for k in (a, b, c)}
    ann = ReviewedPerson("Ann", [LocalFace(a, (101, 99, 201, 222), sizes[a]),
                                 LocalFace(b, (0, 0, sizes[b][0], sizes[b][1] - 3), sizes[b], "padded"),
                                 LocalFace(c, (50, 60, 150, 170), sizes[c], "detector")])
    return [ann], {"a": a, "b": b, "c": c, "immich_face": immich_face}


def _size(fake: FakeImmich, asset: str) -> tuple[int, int]:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(fake.previews[asset])) as im:
        return im.size


def manual_faces(fake: FakeImmich) -> list[dict]:
    return [f for f in fake.faces.values() if f["sourceType"] == "manual"]


def test_a_face_only_the_library_found_is_added_with_the_groups_person_and_undone(fake, tmp_path):
    people, ids = scene(fake)
    with ImmichClient(fake.url, fake.admin_key, backoff=0.01) as client:
        plan = build_plan(client, people)
        assert plan.counts() == {"create_person": 1, "reassign_face": 1, "create_face": 1}
        text = "\n".join(plan.describe())
        assert "1 faces Immich did not find to add" in text and "1 faces not found in Immich" in text
        plan.save(tmp_path / "push-1.json")
        PushRun(client, plan).apply()
        ann = plan.refs["new:0"]
        [added] = manual_faces(fake)
        assert (added["assetId"], added["personId"]) == (ids["b"], ann)
        assert (added["boundingBoxX1"], added["boundingBoxY2"]) == (0, _size(fake, ids["b"])[1] - 3)
        assert fake.faces[ids["immich_face"]]["personId"] == ann
        assert not any(f["assetId"] == ids["c"] for f in fake.faces.values())  # Immich's detection will find it

        again = build_plan(client, people)  # pushing again: the added face is Immich's now, nothing to add
        assert again.counts() == {}

        PushRun(client, PushPlan.load(plan.path)).revert()
        assert manual_faces(fake) == [] and ann not in fake.people
        assert fake.faces[ids["immich_face"]]["personId"] is None


def test_an_answer_lost_after_the_face_was_added_never_adds_it_twice(fake, tmp_path):
    people, ids = scene(fake)
    with ImmichClient(fake.url, fake.admin_key, backoff=0.01, retries=1) as client:
        plan = build_plan(client, people)
        plan.save(tmp_path / "push-1.json")
        fake.inject(operation="createFace", after=True, status=500)  # Immich added it, then the answer was lost
        with pytest.raises(ImmichError):
            PushRun(client, plan).apply()
        assert len(manual_faces(fake)) == 1
        resumed = PushPlan.load(plan.path)
        assert [s["status"] for s in resumed.steps if s["kind"] == "create_face"] == ["started"]
        PushRun(client, resumed).apply()
        assert len(manual_faces(fake)) == 1 and resumed.state == "applied"
        PushRun(client, PushPlan.load(plan.path)).revert()
        assert manual_faces(fake) == []


def test_a_key_that_may_not_add_faces_is_told_before_anything_changes(fake, tmp_path):
    people, _ = scene(fake)
    user = fake.admin_id
    perms = ["asset.read", "asset.view", "face.read", "face.update", "person.read", "person.create", "person.update",
             "person.merge", "person.delete", "person.reassign", "user.read"]
    key = fake.add_key(perms, user)
    before = {k: dict(v) for k, v in fake.faces.items()}
    with ImmichClient(fake.url, key, backoff=0.01) as client:
        plan = build_plan(client, people)
        plan.save(tmp_path / "push-1.json")
        with pytest.raises(ImmichPermissionError, match="face.create"):
            PushRun(client, plan).apply()
    assert fake.faces == before and len(fake.people) == 0
