"""Face grouping: Immich's rules reproduced on hand-built vectors, our default's constraints, and the
padded second detection pass on real photos with the real face pack."""

from __future__ import annotations

import numpy as np
import pytest

from immich_ml_desktop.library.clustering import (
    UNASSIGNED,
    Constraints,
    GroupingParams,
    ImmichParams,
    group_faces,
    immich_cluster,
)



def on_plane(plane: int, degrees: float) -> np.ndarray:
    """A unit vector in 4-d at `degrees` within plane 0 (axes 0,1) or plane 1 (axes 2,3): faces in
    different planes are 1.0 apart, faces in one plane 1 - cos(angle difference) apart."""
    v = np.zeros(4, np.float32)
    v[2 * plane] = np.cos(np.radians(degrees))
    v[2 * plane + 1] = np.sin(np.radians(degrees))
    return v


# name: (plane, angle). With max_distance 0.5 two faces match when their angles differ by < 60 degrees.
HAND_BUILT = {
    "f3": (0, 68),  # matches itself and f2 (58 deg) only: not core, deferred
    "f0": (0, 0),  # f0, f1, f2: a tight trio, the first core face founds person 0
    "f1": (0, 5),
    "f2": (0, 10),
    "f4": (0, 180),  # matches only itself: skipped for good
    "g0": (1, 0),  # a pair: two matches < min_faces 3, deferred, and no person near: never assigned
    "g1": (1, 20),
    "h0": (1, 90),  # a trio founding person 1 ...
    "h1": (1, 95),
    "h2": (1, 100),
    "h3": (1, 140),  # ... and a second trio 40 deg away: h3's own 3 nearest (h3,h4,h5) have no person,
    "h4": (1, 145),  # so the `hasPerson` search finds h2 (0.23 away) and the trio joins person 1 (chaining)
    "h5": (1, 150),
}
NAMES = list(HAND_BUILT)
VECTORS = np.stack([on_plane(*HAND_BUILT[n]) for n in NAMES])


def by_name(labels: np.ndarray) -> dict[str, int]:
    return {name: int(label) for name, label in zip(NAMES, labels)}


def test_immich_reproduction_on_hand_built_vectors() -> None:
    got = by_name(immich_cluster(VECTORS, ImmichParams(max_distance=0.5, min_faces=3)))
    # Written down from the rules in `immich_cluster`'s docstring, queue in the order above.
    assert got == {
        "f3": 0, "f0": 0, "f1": 0, "f2": 0,  # f3 joins person 0 in the deferred pass
        "f4": UNASSIGNED,
        "g0": UNASSIGNED, "g1": UNASSIGNED,
        "h0": 1, "h1": 1, "h2": 1, "h3": 1, "h4": 1, "h5": 1,
    }


def test_immich_without_deferral_order_matters_as_in_immich() -> None:
    """With min_faces 2, f3 (first in the queue, two matches) is core and founds person 0; f0 then finds
    no person among its 2 nearest nor within 0.5 (f3 is 0.63 away) and founds person 1: one person split."""
    got = by_name(immich_cluster(VECTORS, ImmichParams(max_distance=0.5, min_faces=2)))
    assert got["f3"] == 0 and got["f0"] == got["f1"] == got["f2"] == 1
    assert got["g0"] == got["g1"] != UNASSIGNED  # a pair is enough for min_faces 2
    assert got["f4"] == UNASSIGNED


def test_immich_incremental_keeps_existing_people() -> None:
    initial = np.full(len(NAMES), UNASSIGNED)
    initial[NAMES.index("h0")] = 7  # a person Immich already has
    got = by_name(immich_cluster(VECTORS, ImmichParams(), initial=initial))
    assert got["h0"] == 7 and got["h1"] == 7 and got["h5"] == 7
    assert got["f0"] == 8  # new people are numbered after the existing ones


def test_immich_skips_forbidden_assignment() -> None:
    forbidden = {(NAMES.index("f3"), 0)}
    got = by_name(immich_cluster(VECTORS, ImmichParams(), forbidden=forbidden))
    assert got["f3"] == UNASSIGNED and got["f0"] == 0


def test_default_separates_the_chained_trios_and_keeps_pairs() -> None:
    photos = np.arange(len(NAMES))
    got = by_name(group_faces(VECTORS, photos, GroupingParams(link_distance=0.3, min_group_size=2)))
    assert got["h0"] == got["h1"] == got["h2"] != UNASSIGNED
    assert got["h3"] == got["h4"] == got["h5"] != UNASSIGNED
    assert got["h0"] != got["h3"]  # average linkage does not chain 60 degrees across
    assert got["g0"] == got["g1"] != UNASSIGNED
    assert got["f4"] == UNASSIGNED


def test_default_never_puts_two_faces_of_one_photo_together() -> None:
    rng = np.random.default_rng(1)
    centre = rng.standard_normal(64)
    vectors = centre + 0.05 * rng.standard_normal((6, 64))  # six near-identical faces
    photos = np.array([0, 0, 1, 1, 2, 2])  # ... two per photo (twins in every photo)
    labels = group_faces(vectors, photos, GroupingParams(min_group_size=2))
    for p in range(3):
        a, b = labels[photos == p]
        assert a == UNASSIGNED or a != b
    assert (labels != UNASSIGNED).sum() >= 4  # but the twins are still grouped, one group each


def on_plane6(plane: int, degrees: float) -> np.ndarray:
    """As `on_plane`, in 6-d: three planes."""
    v = np.zeros(6, np.float32)
    v[2 * plane], v[2 * plane + 1] = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return v


def test_weak_faces_join_a_group_they_are_close_to_but_never_found_one() -> None:
    """Two dark faces of different people look alike to the recognizer (they sit close together, plane 2
    here) and would found a mixed group; marked weak they stay unassigned. A weak face close to a real
    group joins it, and a weak face of the same photo as a group's face does not."""
    faces = [(0, 0), (0, 5), (0, 10),  # a person: three photos
             (1, 0), (1, 6), (1, 12),  # another person
             (2, 0), (2, 8),           # two weak faces close to each other only
             (0, 20),                  # a weak face near the first person
             (1, 18)]                  # a weak face near the second person, on a photo of that person
    vectors = np.stack([on_plane6(p, a) for p, a in faces])
    photos = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 3])
    weak = np.array([False] * 6 + [True] * 4)
    plain = group_faces(vectors, photos)
    assert plain[6] == plain[7] != UNASSIGNED  # unmarked, the two found a group of their own
    got = group_faces(vectors, photos, weak=weak)
    assert got[0] == got[1] == got[2] != UNASSIGNED and got[3] == got[4] == got[5] != UNASSIGNED
    assert got[6] == got[7] == UNASSIGNED  # never found a group
    assert got[8] == got[0]  # joins the group it is close to
    assert got[9] == UNASSIGNED  # photo 3 already has a face in that group
    assert len(set(got.tolist()) - {UNASSIGNED}) == 2


def test_default_respects_fixed_and_forbidden_decisions() -> None:
    photos = np.arange(len(NAMES))
    params = GroupingParams(link_distance=0.3, join_distance=0.3, min_group_size=2)
    fixed = {NAMES.index("h0"): 40, NAMES.index("h5"): 40, NAMES.index("g0"): 41}
    forbidden = {(NAMES.index("g1"), 41), (NAMES.index("h4"), 40)}
    got = by_name(group_faces(VECTORS, photos, params, Constraints(fixed=fixed, forbidden=forbidden)))
    assert got["h0"] == got["h5"] == 40 and got["g0"] == 41  # the user's group of two far faces stays
    assert got["g1"] != 41  # rejected from group 41
    assert got["h4"] != 40
    assert got["h1"] == 40 and got["h2"] == 40  # close new faces join the reviewed group


def test_synthetic_library_groups_well_and_fast() -> None:
    import sys
    import time
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from synthetic_faces import clustered_faces

    vectors, truth, photos = clustered_faces(3000, 60, faces_per_photo=3, seed=3)
    start = time.perf_counter()
    labels = group_faces(vectors, photos)
    elapsed = time.perf_counter() - start
    assert elapsed < 10  # about 0.4 s on an idle 2-core machine; generous for a loaded one
    grouped = labels != UNASSIGNED
    # Every group is one identity (purity) and most faces of real people are grouped.
    for g in set(labels[grouped].tolist()):
        assert len(set(truth[labels == g].tolist())) == 1
    assert grouped[truth >= 0].mean() > 0.9
    for p in set(photos.tolist()):
        members = labels[(photos == p) & grouped]
        assert len(members) == len(set(members.tolist()))


def test_blocks_too_big_for_one_linkage_are_split_and_joined_again(monkeypatch: pytest.MonkeyPatch) -> None:
    import immich_ml_desktop.library.clustering as clustering

    monkeypatch.setattr(clustering, "BLOCK_LIMIT", 16)  # forces 2-means splits of the 60-face block
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal(128), rng.standard_normal(128)
    vectors = np.concatenate([a + 0.3 * rng.standard_normal((40, 128)), b + 0.3 * rng.standard_normal((20, 128))])
    labels = group_faces(vectors, np.arange(60), GroupingParams(link_distance=0.9, join_distance=0.9))
    assert len(set(labels[:40].tolist())) == 1 and len(set(labels[40:].tolist())) == 1
    assert labels[0] != labels[40] and UNASSIGNED not in labels


def test_cell_search_finds_the_neighbours_of_large_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The k-means cell search (used above EXACT_SEARCH_LIMIT faces) against the exact search."""
    import sys
    from pathlib import Path

    import immich_ml_desktop.library.clustering as clustering

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from synthetic_faces import clustered_faces

    vectors, truth, photos = clustered_faces(4000, 80, seed=9)
    unit = clustering.unit_rows(vectors)
    exact_d, _ = clustering.NeighbourIndex(unit).knn(10)
    monkeypatch.setattr(clustering, "EXACT_SEARCH_LIMIT", 1000)
    monkeypatch.setattr(clustering.NeighbourIndex, "CELL_CAP", 200)  # also cuts the big people's cells
    index = clustering.NeighbourIndex(unit)
    assert index._cells is not None
    cell_d, cell_i = index.knn(10)
    assert (cell_i[:, 0] == np.arange(4000)).mean() > 0.99  # a face's nearest face is itself
    near = exact_d <= 0.5
    assert (cell_d[near] <= 0.5).mean() > 0.95  # nearly every close neighbour is found
    labels = group_faces(vectors, photos)
    for g in set(labels[labels != UNASSIGNED].tolist()):
        assert len(set(truth[labels == g].tolist())) == 1


def test_copies_of_each_photo_do_not_cut_a_person_in_two() -> None:
    """Every photo of a person also exists as re-saved copies (cosine >= 0.985 to each other):
    the copies of one photo are a tight set, and the rule that keeps two tight groups apart used to cut
    the person into one group per photo. Copies count once towards that rule; the look-alike rule still
    holds for sets of genuinely different photos (test_default_separates_the_chained_trios_and_keeps_pairs)."""
    rng = np.random.default_rng(3)
    dim = 64

    def unit(v: np.ndarray) -> np.ndarray:
        return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)

    person = rng.standard_normal(dim)
    originals = unit(person + 0.7 * rng.standard_normal((4, dim)))  # different photos: about 0.3 apart
    vectors = unit(np.repeat(originals, 3, axis=0) + 0.01 * rng.standard_normal((12, dim)))  # 3 versions each
    photos = np.arange(12)
    dots = vectors @ vectors.T
    assert dots[0, 1] > 0.985 and 0.6 < dots[0, 3] < 0.8  # copies are copies; other photos are as real ones
    labels = group_faces(vectors, photos)
    assert len(set(labels.tolist())) == 1 and labels[0] != UNASSIGNED
