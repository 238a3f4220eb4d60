"""Review decisions follow faces through re-indexing (library/decisions.py), on a real SQLite library: a
photo whose image changed is detected again and its new faces take the decisions of the old faces they
overlap; face ids are never reused."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from immich_ml_desktop.library.people import People
from immich_ml_desktop.library.store import AssetResult, LibraryStore
from conftest import FaceRow as _Face

MODEL = "test-faces"




def _faces(boxes: list[tuple[float, float, float, float]], seed: int) -> list[_Face]:
    rng = np.random.default_rng(seed)
    return [_Face(np.array(b, float), 0.9, np.zeros((5, 2)), rng.standard_normal(64)) for b in boxes]


def _index(store: LibraryStore, asset_id: int, size: tuple[int, int], boxes: list, seed: int) -> list[int]:
    store.record_results([AssetResult(asset_id, size[0], size[1], None, _faces(boxes, seed))], clip_model=None,
                         face_model=MODEL)
    return [f.id for f in store.faces(asset_id=asset_id, model=MODEL)]


def test_decisions_follow_the_faces_of_a_photo_that_changed(tmp_path: Path) -> None:
    store = LibraryStore(tmp_path / "library.sqlite3")
    photo, _ = store.upsert_asset("folder", "/photos/a.jpg", size=1, mtime_ns=1)
    other, _ = store.upsert_asset("folder", "/photos/b.jpg", size=1, mtime_ns=1)
    ann, ben, ghost = _index(store, photo, (1000, 800), [(100, 100, 200, 220), (400, 100, 500, 220), (700, 50, 760, 110)], 1)
    [bob] = _index(store, other, (1000, 800), [(100, 100, 200, 220)], 2)
    people = People(store, MODEL)
    people.recluster()
    anns = people.move_faces([ann])
    people.rename(anns, "Ann")
    bens = people.move_faces([ben, bob])
    people.rename(bens, "Ben")
    people.reject_faces([bob])  # not Ben after all
    people.reject_faces([ghost], not_a_face=True)

    # The photo is edited on disk (scaled to 3/4): the sync resets it, the decisions wait ...
    change = store.upsert_asset("folder", "/photos/a.jpg", size=2, mtime_ns=2)
    assert change == (photo, "changed")
    assert store.faces(asset_id=photo, model=MODEL) == []
    people.rename(bens, "Benjamin")  # a review action while the photo waits keeps Ann's (now empty) group
    # ... and its faces are found again, slightly moved, on the smaller preview, plus a new one.
    new = _index(store, photo, (750, 600), [(77, 74, 151, 166), (299, 76, 376, 164), (524, 38, 571, 83), (10, 10, 40, 40)], 3)
    assert not set(new) & {ann, ben, ghost, bob}  # ids are never reused
    groups = {g.name: [f.face_id for f in people.group(g.id).faces] for g in people.groups("all")}
    assert groups["Ann"] == [new[0]] and groups["Benjamin"] == [new[1]]
    assert not any(new[2] in faces for faces in groups.values())  # still "not a face"
    people.recluster()  # and every later grouping respects them
    groups = {g.name: [f.face_id for f in people.group(g.id).faces] for g in people.groups("all")}
    assert groups["Ann"] == [new[0]] and groups["Benjamin"] == [new[1]]
    assert all(new[2] not in faces for faces in groups.values())
    pending = store.connection().execute("SELECT count(*) FROM pending_decisions").fetchone()[0]
    assert pending == 0


def test_a_face_that_is_gone_from_the_new_image_takes_nothing(tmp_path: Path) -> None:
    store = LibraryStore(tmp_path / "library.sqlite3")
    photo, _ = store.upsert_asset("folder", "/photos/a.jpg", size=1, mtime_ns=1)
    [ann] = _index(store, photo, (1000, 800), [(100, 100, 200, 220)], 1)
    people = People(store, MODEL)
    people.recluster()
    people.rename(people.move_faces([ann]), "Ann")
    store.upsert_asset("folder", "/photos/a.jpg", size=2, mtime_ns=2)  # cropped: Ann is no longer in it
    [stranger] = _index(store, photo, (1000, 800), [(600, 100, 700, 220)], 2)
    assert all(stranger not in [f.face_id for f in people.group(g.id).faces] for g in people.groups("all"))


def test_face_ids_are_never_reused_after_the_newest_faces_go(tmp_path: Path) -> None:
    store = LibraryStore(tmp_path / "library.sqlite3")
    photo, _ = store.upsert_asset("folder", "/photos/a.jpg", size=1, mtime_ns=1)
    first = _index(store, photo, (100, 100), [(0, 0, 10, 10), (20, 0, 30, 10)], 1)
    again = _index(store, photo, (100, 100), [(0, 0, 10, 10), (20, 0, 30, 10)], 1)  # the same photo, indexed again
    assert min(again) > max(first)
    store.close()
    reopened = LibraryStore(tmp_path / "library.sqlite3")
    third = _index(reopened, photo, (100, 100), [(0, 0, 10, 10)], 1)
    assert min(third) > max(again)
