"""People review on a real SQLite library: groups, decisions, undo/redo across reopening, re-clustering that
keeps decisions, the `cluster` command's JSON, and the padded detection pass on real photos."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from immich_ml_desktop.errors import LibraryError
from immich_ml_desktop.library.people import People
from immich_ml_desktop.library.store import AssetResult, LibraryStore

from conftest import FACE_PACK, photo
from conftest import FaceRow as _Face

MODEL = "test-faces"
DIM = 128  # high enough that random people are far apart, as with real 512-d vectors




def _person(rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    return rng.standard_normal(dim)


def build_library(path: Path, photos: list[list[np.ndarray]]) -> LibraryStore:
    """A library whose photo i holds faces with the given vectors, stored at length 1 (a made-up vector's
    length means nothing, while a real ArcFace vector's length tells how much face it saw: short ones are
    weak, clustering.GroupingParams.weak_norm); returns the open store."""
    store = LibraryStore(path)
    results = []
    for i, vectors in enumerate(photos):
        asset_id, _ = store.upsert_asset("folder", f"/photos/{i:03d}.jpg", size=1, mtime_ns=1)
        faces = [_Face(np.array([10.0 * j, 0, 10.0 * j + 8, 8]), 0.9 - 0.01 * j, np.zeros((5, 2)), v / np.linalg.norm(v))
                 for j, v in enumerate(vectors)]
        results.append(AssetResult(asset_id, 100, 100, None, faces))
    store.record_results(results, clip_model=None, face_model=MODEL)
    return store


@pytest.fixture
def library(tmp_path: Path) -> tuple[Path, dict[str, list[int]]]:
    """Three people A (6 photos), B (5), C (4) with one photo of A and B together, and one stranger.
    Returns the file and the face ids of each person, in photo order."""
    rng = np.random.default_rng(7)
    a, b, c, stranger = (_person(rng) for _ in range(4))

    def face(centre: np.ndarray) -> np.ndarray:
        return centre + 0.25 * rng.standard_normal(centre.shape)

    photos = [[face(a)] for _ in range(5)] + [[face(a), face(b)]] + [[face(b)] for _ in range(4)]
    photos += [[face(c)] for _ in range(4)] + [[stranger]]
    path = tmp_path / "library.sqlite3"
    store = build_library(path, photos)
    ids = [f.id for f in store.faces(model=MODEL)]
    store.close()
    who = ["A"] * 5 + ["A", "B"] + ["B"] * 4 + ["C"] * 4 + ["S"]
    people: dict[str, list[int]] = {}
    for fid, w in zip(ids, who):
        people.setdefault(w, []).append(fid)
    return path, people


def _group_of(people: People, face_id: int) -> int | None:
    for g in people.groups("all") + people.groups("hidden"):
        if face_id in {f.face_id for f in people.group(g.id).faces}:
            return g.id
    return None


def test_default_grouping_finds_the_three_people(library) -> None:
    path, who = library
    with LibraryStore(path) as store:
        people = People(store)
        result = people.recluster()
        groups = people.groups()
        assert [g.face_count for g in groups] == [6, 5, 4]  # largest first
        assert all(not g.confirmed and g.name is None for g in groups)
        members = [sorted(f.face_id for f in people.group(g.id).faces) for g in groups]
        assert members == [sorted(who["A"]), sorted(who["B"]), sorted(who["C"])]
        assert [f.face_id for f in people.unassigned_faces()] == who["S"] == result.unassigned
        detail = people.group(groups[0].id)
        assert detail.faces[0].path is not None and detail.faces[0].path.name.endswith(".jpg")
        assert len(detail.faces[0].box) == 4


def test_review_actions_undo_redo_survive_reopening(library) -> None:
    path, who = library
    with LibraryStore(path) as store:
        people = People(store)
        people.recluster()
        ga, gb, gc = (_group_of(people, who[p][0]) for p in "ABC")
        people.rename(ga, "Alice")
        people.merge_groups(gb, [gc])  # wrong on purpose: B and C are different people
        moved = who["A"][0]
        new_group = people.move_faces([moved])
        people.reject_faces([who["A"][1]])  # not this person
        people.reject_faces([who["S"][0]], not_a_face=True)
        people.set_hidden(new_group, True)
        assert people.group(gb).group.face_count == 9
        assert _group_of(people, who["A"][1]) is None
        assert [g.id for g in people.groups("hidden")] == [new_group]
        assert [g.name for g in people.groups("named")] == ["Alice"]
        assert people.can_undo() == "Hide group"

    with LibraryStore(path) as store:  # a restart
        people = People(store)
        assert people.undo() == "Hide group"
        assert people.undo() == "Reject 1 face (not a face)"
        assert people.undo() == "Reject 1 face (not this person)"
        assert _group_of(people, who["A"][1]) == ga
        assert people.undo() == "Move 1 face to a new group"
        assert _group_of(people, moved) == ga
        assert people.undo() == "Merge 2 groups"
        assert _group_of(people, who["C"][0]) == gc and people.group(gb).group.face_count == 5
        assert people.can_redo() == "Merge 2 groups"

    with LibraryStore(path) as store:
        people = People(store)
        assert people.redo() == "Merge 2 groups"
        assert people.redo() == "Move 1 face to a new group"
        assert _group_of(people, moved) not in (None, ga)
        with pytest.raises(LibraryError):
            people.group(gc)  # merged away again
        people.undo()
        people.undo()
        people.rename(gb, "Bob")  # a new action: the redo history is gone
        assert people.can_redo() is None
        assert people.group(gc).group.face_count == 4


def test_reclustering_keeps_every_decision(library) -> None:
    path, who = library
    with LibraryStore(path) as store:
        people = People(store)
        people.recluster()
        ga, gb = _group_of(people, who["A"][0]), _group_of(people, who["B"][0])
        rejected = who["A"][1]
        people.reject_faces([rejected])  # A's group is now confirmed and rejects this face
        odd = people.move_faces([who["C"][0]], gb)  # the user insists this C face is B
        people.rename(gb, "Bob")
        people.reject_faces([who["S"][0]], not_a_face=True)
        before = {g.id: sorted(f.face_id for f in people.group(g.id).faces) for g in people.groups("all")}

        for algorithm in ("default", "immich"):
            people.recluster(algorithm)
            assert odd == gb and _group_of(people, who["C"][0]) == gb
            assert _group_of(people, rejected) != ga
            assert sorted(f.face_id for f in people.group(ga).faces) == before[ga]
            assert set(before[gb]) <= {f.face_id for f in people.group(gb).faces}
            assert people.group(gb).group.name == "Bob"
            assert who["S"][0] not in {f.face_id for f in people.unassigned_faces()}

        # Re-clustering itself is undoable.
        assert people.undo() == "Group faces (immich)"


def test_same_photo_faces_never_share_a_group(library) -> None:
    path, who = library
    with LibraryStore(path) as store:
        people = People(store)
        people.recluster()
        a_face, b_face = who["A"][5], who["B"][0]  # the photo of A and B together
        assert _group_of(people, a_face) != _group_of(people, b_face)


def test_suggestions_rank_dismiss_and_accept(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    a, c = _person(rng), _person(rng)
    # One person photographed in two looks (far enough apart to make two groups) and someone else. The
    # photos of a look are ~0.2 apart, as different photos are (much closer would make them copies of one
    # picture, which the separation rule counts once).
    look1, look2 = a + 0.9 * _person(rng), a + 0.9 * _person(rng)
    photos = [[look1 + 0.7 * rng.standard_normal(DIM)] for _ in range(4)]
    photos += [[look2 + 0.7 * rng.standard_normal(DIM)] for _ in range(4)]
    photos += [[c + 0.2 * rng.standard_normal(DIM)] for _ in range(4)]
    with build_library(tmp_path / "lib.sqlite3", photos) as store:
        people = People(store)
        people.recluster()
        assert len(people.groups()) == 3
        suggestions = people.suggestions()
        assert suggestions and all(s.similarity >= 0.3 for s in suggestions)
        assert suggestions == sorted(suggestions, key=lambda s: -s.similarity)
        top = suggestions[0]
        people.dismiss_suggestion(top.group_a, top.group_b)
        assert (top.group_a, top.group_b) not in {(s.group_a, s.group_b) for s in people.suggestions()}
        people.recluster()  # unconfirmed groups keep their ids, so the dismissal holds
        assert (top.group_a, top.group_b) not in {(s.group_a, s.group_b) for s in people.suggestions()}
        people.undo()
        people.undo()
        assert (top.group_a, top.group_b) in {(s.group_a, s.group_b) for s in people.suggestions()}
        kept = people.accept_suggestion(top.group_a, top.group_b)
        assert people.group(kept).group.face_count == 8 and len(people.groups()) == 2


def test_incremental_places_new_faces_without_reshuffling(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    a, b = _person(rng), _person(rng)
    photos = [[a + 0.25 * rng.standard_normal(DIM)] for _ in range(4)] + [[b + 0.25 * rng.standard_normal(DIM)] for _ in range(4)]
    path = tmp_path / "lib.sqlite3"
    with build_library(path, photos) as store:
        people = People(store)
        people.recluster()
        groups = {g.id: {f.face_id for f in people.group(g.id).faces} for g in people.groups()}
        asset, _ = store.upsert_asset("folder", "/photos/new.jpg", size=1, mtime_ns=1)
        store.record_result(AssetResult(asset, 100, 100, None, [_Face(np.zeros(4), 0.9, np.zeros((5, 2)), a)]),
                            clip_model=None, face_model=MODEL)
        new_face = store.faces(asset_id=asset)[0].id
        people.recluster(incremental=True)
        after = {g.id: {f.face_id for f in people.group(g.id).faces} for g in people.groups()}
        assert set(after) == set(groups)
        joined = [g for g in after if new_face in after[g]]
        assert len(joined) == 1 and after[joined[0]] - groups[joined[0]] == {new_face}


@dataclass
class _BrightFace(_Face):
    found_by: str = "bright"


def test_faces_of_the_bright_pass_join_groups_but_never_found_one(tmp_path: Path) -> None:
    """Faces stored as found by the bright pass are grouped as weak faces: two of them close together
    (dark faces of different people look alike) stay unassigned instead of making a mixed group, and one
    close to a person's group joins it."""
    rng = np.random.default_rng(9)
    a, dark = _person(rng), _person(rng)
    photos = [[a + 0.25 * rng.standard_normal(DIM)] for _ in range(3)]
    path = tmp_path / "lib.sqlite3"
    with build_library(path, photos) as store:
        bright = []
        for i, v in enumerate([dark + 0.2 * rng.standard_normal(DIM), dark + 0.2 * rng.standard_normal(DIM),
                               a + 0.25 * rng.standard_normal(DIM)]):
            asset, _ = store.upsert_asset("folder", f"/photos/dark{i}.jpg", size=1, mtime_ns=1)
            store.record_result(AssetResult(asset, 100, 100, None, [_BrightFace(np.zeros(4), 0.9, np.zeros((5, 2)), v / np.linalg.norm(v))]),
                                clip_model=None, face_model=MODEL)
            bright.append(store.faces(asset_id=asset)[0].id)
        people = People(store)
        people.recluster()
        groups = people.groups()
        assert len(groups) == 1  # the two dark look-alikes founded nothing
        members = {f.face_id for f in people.group(groups[0].id).faces}
        assert bright[2] in members and bright[0] not in members and bright[1] not in members
        assert len(members) == 4


def test_cluster_command_json(library) -> None:
    path, who = library
    out = subprocess.run(
        [sys.executable, "-m", "immich_ml_desktop", "cluster", "--library", str(path), "--algorithm", "immich",
         "--max-distance", "0.6", "--min-faces", "3", "--json"],
        check=True, capture_output=True, text=True,
    ).stdout
    data = json.loads(out)
    assert data["algorithm"] == "immich" and data["model"] == MODEL
    assert {"id", "name", "face_ids", "faces"} <= set(data["groups"][0])
    face = data["groups"][0]["faces"][0]
    assert {"face_id", "asset_id", "path", "box"} <= set(face) and len(face["box"]) == 4
    grouped = {f for g in data["groups"] for f in g["face_ids"]}
    assert grouped | {f["face_id"] for f in data["unassigned"]} == {f for ids in who.values() for f in ids}
    bad = subprocess.run([sys.executable, "-m", "immich_ml_desktop", "cluster", "--library", str(path.parent / "none.sqlite3"),
                          "--json"], capture_output=True, text=True)
    assert bad.returncode != 0 and "no faces" in bad.stderr


def test_padded_pass_finds_the_face_in_a_tight_crop(cpu_engine) -> None:
    from PIL import Image

    from immich_ml_desktop.services.face_passes import detect_faces_with_fallback

    image = Image.open(photo("face_recognition/examples/obama.jpg")).convert("RGB")
    faces = cpu_engine.faces(FACE_PACK, image)
    x1, y1, x2, y2 = [int(v) for v in max(faces, key=lambda f: f.box[2] - f.box[0]).box]
    crop = image.crop((max(0, x1), max(0, y1), x2, y2)).resize((150, 150))
    assert cpu_engine.faces(FACE_PACK, crop) == []  # Immich's pass: nothing
    found = detect_faces_with_fallback(cpu_engine, FACE_PACK, crop)
    assert len(found) == 1
    box = found[0].box
    assert 0 <= box[0] < 40 and 0 <= box[1] < 40 and 110 < box[2] <= 150 and 110 < box[3] <= 150
    assert found[0].landmarks.min() >= -10 and found[0].landmarks.max() <= 160  # mapped back to the crop
    full = max(faces, key=lambda f: f.box[2] - f.box[0]).embedding
    sim = float(found[0].embedding @ full / np.linalg.norm(found[0].embedding) / np.linalg.norm(full))
    assert sim > 0.4  # the same person as in the whole photo
    assert len(detect_faces_with_fallback(cpu_engine, FACE_PACK, image)) == len(faces)  # first pass kept as is
