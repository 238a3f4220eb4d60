"""Grouping by quality: what a face's pixels and vector say about it (services/face_quality.py, the vector's
length), how the grouping uses it (weak faces never found a group) and pairs offered as suggestions."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from immich_ml_desktop.library.clustering import UNASSIGNED, GroupingParams, group_faces, weak_by_quality
from immich_ml_desktop.library.folders import FolderSource
from immich_ml_desktop.library.people import People
from immich_ml_desktop.library.store import AssetResult, LibraryStore
from immich_ml_desktop.models.images import DecodedImage, decode_image, to_bgr
from immich_ml_desktop.services.face_quality import measure
from immich_ml_desktop.services.index import IndexJob
from immich_ml_desktop.services.push import reviewed_people
from tests.conftest import FACE_PACK, FaceRow, photo

DIM = 128


def _plain_face(cpu_engine):
    bgr = to_bgr(decode_image(photo("face_recognition/examples/obama.jpg").read_bytes()))
    faces = cpu_engine.faces(FACE_PACK, DecodedImage.from_bgr(bgr))
    return bgr, max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


def test_a_real_face_blurred_or_covered_measures_weak_and_its_vector_is_shorter(cpu_engine) -> None:
    """The same face, same landmarks: sharp and whole it is good by every measure; out of focus its crop
    loses its sharpness and its vector most of its length; with mouth and chin covered its lower detail
    drops. The defaults' thresholds sit between."""
    bgr, face = _plain_face(cpu_engine)
    params = GroupingParams()
    width = float(face.box[2] - face.box[0])
    blurred = cv2.GaussianBlur(bgr, (0, 0), width / 10)
    covered = bgr.copy()
    x1, y1, x2, y2 = face.box.astype(int)
    covered[(y1 + y2) // 2 + (y2 - y1) // 10 : y2, x1:x2] = (170, 160, 150)

    plain_q, blurred_q, covered_q = (measure(image, face.landmarks) for image in (bgr, blurred, covered))
    assert plain_q.sharpness > 3 * params.weak_sharpness and plain_q.lower_detail > params.weak_lower_detail
    assert blurred_q.sharpness < params.weak_sharpness
    assert covered_q.lower_detail < params.weak_lower_detail and covered_q.sharpness > params.weak_sharpness
    weak = weak_by_quality(np.array([plain_q.sharpness, blurred_q.sharpness, covered_q.sharpness]),
                           np.array([plain_q.lower_detail, blurred_q.lower_detail, covered_q.lower_detail]))
    assert weak.tolist() == [False, True, True]

    recognizer = cpu_engine.face_recognizer(FACE_PACK)
    marks = {"boxes": face.box[None], "scores": np.array([face.score]), "landmarks": face.landmarks[None]}
    plain_v = recognizer.embed_faces(bgr, marks)[0]
    blurred_v = recognizer.embed_faces(blurred, marks)[0]
    assert np.linalg.norm(blurred_v) < params.weak_norm * np.linalg.norm(plain_v)


def _unit(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    v = rng.standard_normal((n, DIM))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _near(rng: np.random.Generator, centre: np.ndarray, n: int, spread: float = 0.6) -> np.ndarray:
    v = centre + spread * _unit(rng, n)  # cosine to the centre ~1/sqrt(1 + spread^2)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_short_vectors_never_found_a_group_but_join_a_close_one() -> None:
    """Two short vectors close together (dark faces of two people look alike) stay unassigned; a short
    vector close to a person's group joins it. Without the rule the two short ones make a group."""
    rng = np.random.default_rng(4)
    a, dark = _unit(rng)[0], _unit(rng)[0]
    person = _near(rng, a, 5)
    shorts = 0.4 * np.vstack([_near(rng, dark, 2, 0.3), _near(rng, a, 1, 0.5)])
    vectors = np.vstack([person, shorts])
    photos = np.arange(len(vectors))
    labels = group_faces(vectors, photos)
    assert len(set(labels[:5].tolist())) == 1 and labels[0] != UNASSIGNED
    assert labels[5] == labels[6] == UNASSIGNED
    assert labels[7] == labels[0]
    without = group_faces(vectors, photos, GroupingParams(weak_norm=0))
    assert without[5] == without[6] != UNASSIGNED


def test_copies_of_each_photo_do_not_split_a_person() -> None:
    """A person's 4 photos, each also held as 3 edited copies (cosine ~0.96 to it, as bench/face_sets.py's
    edited, greyed and turned copies are), make one group, not one per photo; with copies counted as
    pictures of their own (copy_distance 0) the separation rule cuts them apart."""
    rng = np.random.default_rng(5)
    a = _unit(rng)[0]
    originals = _near(rng, a, 4, 0.9)
    copies = np.vstack([_near(rng, o, 3, 0.27) for o in originals])
    vectors = np.vstack([originals, copies])
    photos = np.arange(len(vectors))
    sims = (copies @ originals.T).max(axis=1)
    assert sims.min() > 0.9 and sims.max() < 0.99  # copies as close to their original as real edited ones
    labels = group_faces(vectors, photos)
    assert len(set(labels.tolist())) == 1 and labels[0] != UNASSIGNED
    split = group_faces(vectors, photos, GroupingParams(copy_distance=0))
    assert len(set(split.tolist())) > 1


def test_indexing_stores_each_faces_measures_and_the_grouping_reads_them(cpu_engine, tmp_path: Path) -> None:
    """A real photo indexed with the face pack: its face's measures are in the library, and a face whose
    stored sharpness is below the threshold is weak: it founds no group with its near twin."""
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(photo("face_recognition/examples/obama.jpg"), folder / "obama.jpg")
    with LibraryStore(tmp_path / "lib.sqlite3") as store:
        IndexJob(store, cpu_engine, FolderSource([folder]), clip_model=None, face_model=FACE_PACK).run()
        rows = store.connection().execute("SELECT brightness, contrast, sharpness, lower_detail FROM faces").fetchall()
        assert len(rows) == 1 and all(v is not None for v in rows[0])
        bgr, face = _plain_face(cpu_engine)
        q = measure(bgr, face.landmarks)
        assert rows[0][2] == pytest.approx(q.sharpness, rel=0.05)

        # A second copy of that face, re-saved: the two make a pair; measured blurred, they make none.
        asset, _ = store.upsert_asset("folder", str(folder / "copy.jpg"), size=1, mtime_ns=1)
        store.record_result(AssetResult(asset, 100, 100, None, [face], face_quality=[(q.brightness, q.contrast,
                                                                                     q.sharpness, q.lower_detail)]),
                            clip_model=None, face_model=FACE_PACK)
        people = People(store)
        people.recluster()
        assert [g.face_count for g in people.groups()] == [2]
        store.connection().execute("UPDATE faces SET sharpness = 1.0")
        people.recluster()
        assert people.groups() == []


def _immich_library(path: Path, photos: list[np.ndarray]) -> LibraryStore:
    store = LibraryStore(path)
    for i, v in enumerate(photos):
        asset, _ = store.upsert_asset("immich", f"asset-{i:03d}", size=1, mtime_ns=1)
        store.record_result(AssetResult(asset, 100, 100, None, [FaceRow(np.array([0.0, 0, 8, 8]), 0.9, np.zeros((5, 2)), v)]),
                            clip_model=None, face_model="m")
    return store


def test_a_pair_is_a_suggestion_that_no_push_takes_until_it_is_confirmed(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    a, b = _unit(rng)[0], _unit(rng)[0]
    with _immich_library(tmp_path / "lib.sqlite3", [*_near(rng, a, 3), *_near(rng, b, 2)]) as store:
        people = People(store)
        people.recluster()
        groups = sorted(people.groups(), key=lambda g: g.face_count)
        assert [(g.face_count, g.suggested) for g in groups] == [(2, True), (3, False)]
        pushed = reviewed_people(people, include_unreviewed=True)
        assert [len(p.faces) for p in pushed] == [3]
        out = subprocess.run([sys.executable, "-m", "immich_ml_desktop", "cluster", "--library", str(store.path),
                              "--face-model", "m", "--json"], capture_output=True, text=True, check=True)
        assert sorted((len(g["face_ids"]), g["suggested"]) for g in json.loads(out.stdout)["groups"]) == [(2, True), (3, False)]
        people.confirm(groups[0].id)
        assert not people.group(groups[0].id).group.suggested
        assert sorted(len(p.faces) for p in reviewed_people(people, include_unreviewed=True)) == [2, 3]
        assert [len(p.faces) for p in reviewed_people(people)] == [2]  # only what the user reviewed


def test_copy_components_link_a_face_to_itself_in_copies_of_its_photo() -> None:
    """Photo 1 is a copy of photo 0 (3 + 20 bits apart); photo 2 differs in 30 of the first 64 bits and
    photo 3 in 100 of the other 192: not copies. Only the faces at the same place in 0 and 1 are one face;
    the other face of photo 0, and the faces of 2 and 3 at that place, are linked to nothing."""
    from immich_ml_desktop.library.copies import copy_components

    def flipped(words: np.ndarray, first: int, rest: int) -> np.ndarray:
        bits = np.unpackbits(words.astype(">i8").view(np.uint8))
        bits[1 : 1 + first] ^= 1
        bits[64 : 64 + rest] ^= 1
        return np.packbits(bits).view(">i8").astype(np.int64)

    base = np.random.default_rng(1).integers(-2**62, 2**62, size=4, dtype=np.int64)
    photos = np.array([0, 0, 1, 2, 3])
    prints = np.stack([base, base, flipped(base, 3, 20), flipped(base, 30, 0), flipped(base, 0, 100)])
    place = [0.1, 0.1, 0.3, 0.4]
    boxes = np.array([place, [0.6, 0.1, 0.8, 0.4], [0.11, 0.12, 0.31, 0.41], place, place])
    ids = copy_components(photos, prints, boxes)
    assert ids[0] == ids[2] and len({ids[0], ids[1], ids[3], ids[4]}) == 4
    unknown = copy_components(photos, prints, boxes, known=np.array([True, True, False, True, True]))
    assert len(set(unknown.tolist())) == 5  # a photo without a fingerprint is a copy of nothing


def test_a_very_dark_copy_of_a_photo_follows_its_original_into_the_group(cpu_engine, tmp_path: Path) -> None:
    """Three real photos of one person and a very dark copy of one of them, indexed: the copy's face is
    weak (its vector is short, its crop flat), yet it lands in the person's group because its photo is a
    copy of the original. Without the photos' fingerprints (a library indexed before them) it stays out."""
    folder = tmp_path / "photos"
    folder.mkdir()
    names = ["face_recognition/examples/obama.jpg", "face_recognition/examples/obama2.jpg",
             "face_recognition/tests/test_images/obama3.jpg"]
    for i, rel in enumerate(names):
        shutil.copy(photo(rel), folder / f"{i}.jpg")
    bgr = to_bgr(decode_image(photo(names[0]).read_bytes()))
    rng = np.random.default_rng(0)
    dark = np.clip(bgr.astype(np.float32) * 0.06 + rng.normal(0, 2, bgr.shape), 0, 255).astype(np.uint8)
    cv2.imwrite(str(folder / "dark.png"), dark)
    with LibraryStore(tmp_path / "lib.sqlite3") as store:
        IndexJob(store, cpu_engine, FolderSource([folder]), clip_model=None, face_model=FACE_PACK).run()
        people = People(store)
        faces = {Path(f.asset_key).name: f.face_id for f in people.all_faces()}
        assert set(faces) == {"0.jpg", "1.jpg", "2.jpg", "dark.png"}, "each photo should give one face"
        people.recluster()
        groups = people.groups()
        assert len(groups) == 1
        assert {f.face_id for f in people.group(groups[0].id).faces} == set(faces.values())

        store.connection().execute("UPDATE assets SET fingerprint = NULL")
        people.recluster()
        members = {f.face_id for g in people.groups() for f in people.group(g.id).faces}
        assert faces["dark.png"] not in members and {faces["0.jpg"], faces["1.jpg"], faces["2.jpg"]} <= members

        # A damaged value (not 32 bytes) is no fingerprint either: the regrouping goes on without it.
        store.connection().execute("UPDATE assets SET fingerprint = 12345")
        people.recluster()
        members = {f.face_id for g in people.groups() for f in people.group(g.id).faces}
        assert faces["dark.png"] not in members and {faces["0.jpg"], faces["1.jpg"], faces["2.jpg"]} <= members
