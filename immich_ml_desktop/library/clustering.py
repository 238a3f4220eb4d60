"""Face grouping algorithms on face vectors: Immich's own rules reproduced, and our default (constrained
average linkage), both honouring faces already placed in groups. No storage here: arrays in, labels out.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.cluster.hierarchy import linkage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import squareform

UNASSIGNED = -1

# Up to this many faces neighbours are searched exactly; above, within k-means cells (NeighbourIndex).
EXACT_SEARCH_LIMIT = 20_000
# Largest block given to scipy's linkage at once (its condensed matrix is m*(m-1)/2 doubles).
BLOCK_LIMIT = 4_000


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float32): cosine distance is then 1 - dot product."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norms, 1e-12)


class NeighbourIndex:
    """The nearest faces of every face by cosine distance, with matrix products (BLAS) throughout.

    Up to `EXACT_SEARCH_LIMIT` faces the search is exact. Above, the faces are partitioned into cells by
    k-means (scikit-learn, on a sample), cells larger than `CELL_CAP` are cut into random pieces, and
    each face is compared with the faces of the `PROBES` cells whose centres are nearest to it. People
    form tight clusters, so this finds nearly all near neighbours at a small fraction of the cost of
    comparing every pair.
    """

    PROBES = 5
    CELL_CAP = 2048

    def __init__(self, unit_vectors: np.ndarray) -> None:
        self.vectors = np.ascontiguousarray(unit_vectors, dtype=np.float32)
        n = len(self.vectors)
        self._cells: list[np.ndarray] | None = None
        if n > EXACT_SEARCH_LIMIT:
            from sklearn.cluster import KMeans

            n_cells = int(np.sqrt(n))
            rng = np.random.default_rng(0)
            sample = rng.choice(n, size=min(n, 16 * n_cells), replace=False)
            kmeans = KMeans(n_clusters=n_cells, n_init=1, max_iter=10, random_state=0).fit(self.vectors[sample])
            cell_of = np.argmax(self.vectors @ kmeans.cluster_centers_.T.astype(np.float32), axis=1)
            order = np.argsort(cell_of, kind="stable")
            cells = []
            for members in np.split(order, np.flatnonzero(np.diff(cell_of[order])) + 1):
                if len(members) > self.CELL_CAP:
                    # One big person: random pieces whose centres are alike, so faces probe several of them.
                    members = rng.permutation(members)
                    cells.extend(np.array_split(members, int(np.ceil(len(members) / self.CELL_CAP))))
                else:
                    cells.append(members)
            self._cells = cells
            centres = np.stack([self.vectors[c].mean(axis=0) for c in cells])
            near = self.vectors @ centres.T
            probes = np.argpartition(-near, min(self.PROBES, len(cells)) - 1, axis=1)[:, : self.PROBES]
            # A face always searches its own cell (Immich's rules count the face itself as a match).
            own = np.empty(n, dtype=np.int64)
            for c, members in enumerate(cells):
                own[members] = c
            missing = ~(probes == own[:, None]).any(axis=1)
            probes[missing, -1] = own[missing]
            self._probes = probes

    def knn(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances, indices), each (n, k), nearest first (the face itself included); missing
        neighbours have index -1 and distance inf."""
        n = len(self.vectors)
        if self._cells is None:
            dist = np.full((n, k), np.inf, dtype=np.float32)
            idx = np.full((n, k), -1, dtype=np.int64)
            self._search(np.arange(n), np.arange(n), k, dist, idx)
            return dist, idx
        # Each probe rank searches distinct cells, so the ranks' results hold no duplicates to merge.
        ranks = self._probes.shape[1]
        dist = np.full((n, ranks * k), np.inf, dtype=np.float32)
        idx = np.full((n, ranks * k), -1, dtype=np.int64)
        for r in range(ranks):
            cell = self._probes[:, r]
            order = np.argsort(cell, kind="stable")
            d_r, i_r = dist[:, r * k : (r + 1) * k], idx[:, r * k : (r + 1) * k]  # views: written in place
            for queries in np.split(order, np.flatnonzero(np.diff(cell[order])) + 1):
                self._search(queries, self._cells[int(cell[queries[0]])], k, d_r, i_r)
        best = np.argsort(dist, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(dist, best, axis=1), np.take_along_axis(idx, best, axis=1)

    def _search(self, queries: np.ndarray, candidates: np.ndarray, k: int, dist: np.ndarray, idx: np.ndarray) -> None:
        kk = min(k, len(candidates))
        pool = self.vectors[candidates]
        for start in range(0, len(queries), 1024):  # bounded memory: 1024 x candidates floats at a time
            rows = queries[start : start + 1024]
            sims = self.vectors[rows] @ pool.T
            top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk] if kk < len(candidates) else np.tile(np.arange(kk), (len(rows), 1))
            top_sims = np.take_along_axis(sims, top, axis=1)
            order = np.argsort(-top_sims, axis=1, kind="stable")
            dist[rows, :kk] = 1.0 - np.take_along_axis(top_sims, order, axis=1)
            idx[rows, :kk] = candidates[np.take_along_axis(top, order, axis=1)]


# ---------------------------------------------------------------------------------------------------
# Immich's algorithm


@dataclass(frozen=True)
class ImmichParams:
    """Immich's facial recognition settings (`machineLearning.facialRecognition`), with its defaults."""

    max_distance: float = 0.5
    min_faces: int = 3


# How many nearest faces are kept for the "nearest face that already has a person" look-up; when all
# of them are within max_distance and none has a person the look-up falls back to an exact search.
_PERSON_LOOKUP_DEPTH = 32


def immich_cluster(
    vectors: np.ndarray,
    params: ImmichParams = ImmichParams(),
    initial: np.ndarray | None = None,
    order: np.ndarray | None = None,
    forbidden: set[tuple[int, int]] | None = None,
) -> np.ndarray:
    """Group faces as Immich's server does (`PersonService.handleQueueRecognizeFaces` and
    `handleRecognizeFaces`, with `SearchRepository.searchFaces`), returning one person label per face
    (`UNASSIGNED` = no person).

    The rules reproduced:

    * The queue holds every face without a person, in `order` (Immich pages them out of the database;
      default: index order). Faces that already have a person (`initial` >= 0) are never changed.
    * For each queued face: `matches` = the `min_faces` nearest faces (the face itself included, by cosine
      distance, ordered nearest first) whose distance is <= `max_distance`.
    * If `min_faces > 1` and the face matched only itself, it is skipped for good (not deferred).
    * The face is a *core* face when it has >= `min_faces` matches.
    * A non-core face met for the first time is deferred: re-queued at the end of the queue (the
      `deferred: true` job), after every face queued before it.
    * The person is the one of the first match that has a person; if none, the person of the nearest face
      anywhere with a person within `max_distance` (the `hasPerson` search with `numResults: 1`).
    * With no person found, a core face founds a new person; a deferred non-core face stays without one.

    `forbidden` holds (face, person) pairs a user rejected; such an assignment is skipped (the face stays
    without a person), which is how the desktop keeps review decisions when previewing Immich's rules.
    Archived assets (never core in Immich) do not exist in a desktop library.
    """
    unit = unit_rows(vectors)
    n = len(unit)
    labels = np.full(n, UNASSIGNED, dtype=np.int64) if initial is None else np.asarray(initial, dtype=np.int64).copy()
    if n == 0:
        return labels
    forbidden = forbidden or set()
    index = NeighbourIndex(unit)
    depth = max(params.min_faces, _PERSON_LOOKUP_DEPTH)
    dist, idx = index.knn(depth)
    within = dist <= params.max_distance
    next_person = int(labels.max()) + 1 if (labels >= 0).any() else 0

    def nearest_with_person(face: int) -> int:
        for j, ok in zip(idx[face], within[face]):
            if not ok:
                return UNASSIGNED
            if labels[j] >= 0:
                return int(labels[j])
        # Every kept neighbour was within range and none had a person: search the assigned faces exactly.
        assigned = np.flatnonzero(labels >= 0)
        if assigned.size == 0:
            return UNASSIGNED
        d = 1.0 - unit[assigned] @ unit[face]
        best = int(np.argmin(d))
        return int(labels[assigned[best]]) if d[best] <= params.max_distance else UNASSIGNED

    queue = deque((int(i), False) for i in (np.arange(n) if order is None else order) if labels[i] < 0)
    while queue:
        face, deferred = queue.popleft()
        if labels[face] >= 0:
            continue
        k = params.min_faces
        matches = [int(j) for j, ok in zip(idx[face, :k], within[face, :k]) if ok and j >= 0]
        if params.min_faces > 1 and len(matches) <= 1:
            continue
        core = len(matches) >= params.min_faces
        if not core and not deferred:
            queue.append((face, True))
            continue
        person = next((int(labels[j]) for j in matches if labels[j] >= 0), UNASSIGNED)
        if person == UNASSIGNED:
            person = nearest_with_person(face)
        if core and person == UNASSIGNED:
            person = next_person
            next_person += 1
        if person != UNASSIGNED and (face, person) not in forbidden:
            labels[face] = person
    return labels


# ---------------------------------------------------------------------------------------------------
# Our default: constrained average linkage


@dataclass(frozen=True)
class GroupingParams:
    """Our default grouping. Distances are cosine distances between ArcFace vectors.

    link_distance: two sets of faces are one person when their average pairwise distance is at most this.
    join_distance: a new face or small set joins an existing group when its average distance to the
        group's faces is at most this.
    separation, separate_size: two sets of at least `separate_size` faces each stay apart when their
        average distance exceeds the larger of their own average distances by more than `separation`
        (look-alikes: two tight groups with a gap between them).
    min_group_size: smaller sets of faces stay unassigned instead of founding a group.
    neighbours: how many nearest faces each face is linked to when the library is split into blocks.
    copy_distance: faces this close on different photos are copies of one picture: re-saved, edited,
        resized, turned, greyed or darkened versions, which a library often holds beside the original
        (bench/cluster_quality.py: such copies sit at cosine 0.85-0.98 from the original, two photos of
        one person taken apart at 0.45-0.8). The separation rule counts copies once, so a person whose
        every photo exists in several versions is not cut into "tight groups" of one photo's copies each.
    weak_norm: a face whose vector is shorter than this share of the median length of the vectors being
        grouped is weak (see `group_faces`); 0 turns the rule off. ArcFace's vectors are not normalised,
        and their length measures how much face the network saw: dark, blurred, flat or covered faces
        give short vectors (bench/cluster_quality.py: the length tells good vectors from bad ones better
        than the detector's score, the face's size, its sharpness or its brightness; docs/faces.md).
    weak_join_distance: a weak face joins a group only when its distance to the group is at most this.
    weak_sharpness, weak_lower_detail: a face whose measures (services/face_quality.py, on the 112 px
        crop ArcFace sees) fall below these is weak (`weak_by_quality`): blurred, tiny, dark or flat
        (sharpness), its mouth and chin covered (lower detail). 0 turns one off. Chosen on the tuning
        half of bench/cluster_quality.py's sets (`--tune`); a contrast rule added nothing there.
    """

    link_distance: float = 0.6
    join_distance: float = 0.6
    separation: float = 0.2
    separate_size: int = 3
    min_group_size: int = 2
    neighbours: int = 30
    copy_distance: float = 0.12
    weak_norm: float = 0.7
    weak_join_distance: float = 0.5
    weak_sharpness: float = 10.0
    weak_lower_detail: float = 0.5


@dataclass
class Constraints:
    """What the user decided, as indices into the face arrays.

    fixed: face -> group label; these faces keep their group (reviewed groups, moved faces).
    forbidden: (face, group label) pairs that must never be joined (faces rejected from a group).
    """

    fixed: dict[int, int] = field(default_factory=dict)
    forbidden: set[tuple[int, int]] = field(default_factory=set)


def group_faces(
    vectors: np.ndarray,
    photos: np.ndarray,
    params: GroupingParams = GroupingParams(),
    constraints: Constraints | None = None,
    weak: np.ndarray | None = None,
    copies: np.ndarray | None = None,
) -> np.ndarray:
    """Group faces into people: one label per face, `UNASSIGNED` for faces left out.

    `weak` marks faces whose vectors are known to be poor (found only on a brightened copy of a dark
    photo, or measured blurred or covered: `weak_by_quality`); faces whose vectors are short
    (`params.weak_norm`) are weak too, and faces the user fixed never are. Weak faces take no part in
    steps 1-3, so they never found a group nor link two faces into one; at the end each joins the
    nearest group, new or fixed, within `weak_join_distance` under the rules of step 4, or stays
    unassigned (docs/faces.md, "Grouping by quality").

    `copies` gives each face a component id (library/copies.py): faces sharing one are the same face in
    copies of one picture. They count as one picture towards the separation rule; a face left
    unassigned, weak or not, first follows the group its copies are in, and unassigned copies of one face
    (one of them not weak) make a group of their own; both before the weak faces' join by vector: a
    copy's poor vector says less than the picture it is a copy of.

    1. Faces not fixed by the user are linked to their `neighbours` nearest faces within
       `link_distance`; the connected parts of that graph are blocks that can be clustered separately.
    2. Each block is clustered by average linkage (scipy); the dendrogram is cut at `link_distance` and
       below any merge that would put two faces of one photo (`photos`) together.
    3. Sets smaller than `min_group_size` are left unassigned.
    4. Each new set and each unassigned face joins the nearest fixed group (average distance, which for
       unit vectors is 1 - dot of the means) when within `join_distance`, sharing no photo with it and
       not forbidden; the remaining sets become new groups numbered after the fixed ones.
    """
    constraints = constraints or Constraints()
    unit = unit_rows(vectors)
    photos = np.asarray(photos)
    n = len(unit)
    labels = np.full(n, UNASSIGNED, dtype=np.int64)
    for face, group in constraints.fixed.items():
        labels[face] = group
    weak_mask = np.zeros(n, dtype=bool) if weak is None else np.asarray(weak, dtype=bool).copy()
    weak_mask |= short_vectors(vectors, params.weak_norm)
    weak_mask[list(constraints.fixed)] = False
    free = np.flatnonzero((labels == UNASSIGNED) & ~weak_mask)
    copy_ids = None if copies is None else np.asarray(copies)
    sets = _cluster_free_faces(unit[free], photos[free], params, None if copy_ids is None else copy_ids[free]) \
        if free.size else []
    sets = [free[s] for s in sets]
    clustered = np.zeros(n, dtype=bool)
    for s in sets:
        clustered[s] = True
    singles = [np.array([f]) for f in free[~clustered[free]]]
    next_label = int(labels.max()) + 1 if (labels >= 0).any() else 0
    fixed_groups = _FixedGroups(unit, photos, labels, constraints.forbidden)
    for s in sets:
        target, members = fixed_groups.best_home(s, params)
        if target != UNASSIGNED:
            labels[members] = target
            fixed_groups.add(target, members)
            rest = np.setdiff1d(s, members)
            singles.extend(np.array([f]) for f in rest)
        elif len(s) >= params.min_group_size:
            labels[s] = next_label
            next_label += 1
    for s in singles:
        target, members = fixed_groups.best_home(s, params)
        if target != UNASSIGNED:
            labels[members] = target
            fixed_groups.add(target, members)
    if copy_ids is not None:
        _follow_copies(labels, copy_ids, photos, constraints.forbidden)
        _group_copies(labels, copy_ids, photos, weak_mask, params.min_group_size)
    weak_free = np.flatnonzero((labels == UNASSIGNED) & weak_mask)
    if weak_free.size:
        # Every group, new ones too, as its faces that are not weak describe it: weak faces already in a
        # group (copies, the user's) neither draw other weak faces to it nor count in its average; their
        # photos still keep a second face of the same photo out.
        strong = np.where(weak_mask, UNASSIGNED, labels)
        homes = _FixedGroups(unit, photos, strong, constraints.forbidden)
        for face in np.flatnonzero(weak_mask & (labels != UNASSIGNED)).tolist():
            if int(labels[face]) in homes.row:
                homes.group_photos[homes.row[int(labels[face])]].add(photos[face])
        weak_params = replace(params, join_distance=min(params.join_distance, params.weak_join_distance))
        for face in weak_free.tolist():
            target, members = homes.best_home(np.array([face]), weak_params)
            if target != UNASSIGNED:
                labels[members] = target
                homes.group_photos[homes.row[target]].update(photos[members].tolist())
    return labels


def _follow_copies(labels: np.ndarray, copy_ids: np.ndarray, photos: np.ndarray, forbidden: set[tuple[int, int]]) -> None:
    """Each unassigned face takes the group most of its copies are in, unless that group already holds a
    face of its photo or the user rejected it from that group (in place)."""
    placed = labels != UNASSIGNED
    lonely = np.flatnonzero(~placed)
    if not lonely.size or not placed.any():
        return
    groups_of: dict[int, dict[int, int]] = {}
    for face in np.flatnonzero(placed).tolist():
        votes = groups_of.setdefault(int(copy_ids[face]), {})
        votes[int(labels[face])] = votes.get(int(labels[face]), 0) + 1
    group_photos: dict[int, set] = {}
    for face in np.flatnonzero(placed).tolist():
        group_photos.setdefault(int(labels[face]), set()).add(photos[face])
    for face in lonely.tolist():
        tally = groups_of.get(int(copy_ids[face]))
        if not tally:
            continue
        group = max(tally, key=lambda g: (tally[g], -g))
        if photos[face] in group_photos[group] or (face, group) in forbidden:
            continue
        labels[face] = group
        group_photos[group].add(photos[face])


def _group_copies(labels: np.ndarray, copy_ids: np.ndarray, photos: np.ndarray, weak: np.ndarray, min_size: int) -> None:
    """Unassigned copies of one face (at least `min_size`, one of them not weak, no two on one photo)
    become a group of their own: whatever their vectors say, they are one person (in place)."""
    lonely = np.flatnonzero(labels == UNASSIGNED)
    if not lonely.size:
        return
    next_label = int(labels.max()) + 1 if (labels >= 0).any() else 0
    order = lonely[np.argsort(copy_ids[lonely], kind="stable")]
    for members in np.split(order, np.flatnonzero(np.diff(copy_ids[order])) + 1):
        if len(members) >= min_size and not weak[members].all() and len(set(photos[members].tolist())) == len(members):
            labels[members] = next_label
            next_label += 1


def weak_by_quality(sharpness: np.ndarray, lower_detail: np.ndarray, params: GroupingParams | None = None) -> np.ndarray:
    """Which faces are weak by their measured quality; NaN (not measured: faces indexed before the
    measures existed) counts as good."""
    params = params or GroupingParams()
    with np.errstate(invalid="ignore"):
        return ((np.asarray(sharpness, dtype=np.float64) < params.weak_sharpness)
                | (np.asarray(lower_detail, dtype=np.float64) < params.weak_lower_detail))


def short_vectors(vectors: np.ndarray, share: float) -> np.ndarray:
    """Which vectors are shorter than `share` of the median length (none when `share` is 0)."""
    v = np.asarray(vectors, dtype=np.float32)
    if share <= 0 or len(v) == 0:
        return np.zeros(len(v), dtype=bool)
    norms = np.linalg.norm(v, axis=1)
    return norms < share * float(np.median(norms))


class _FixedGroups:
    """Groups the user already has, summarised by the sum of their unit vectors and their photos."""

    def __init__(self, unit: np.ndarray, photos: np.ndarray, labels: np.ndarray, forbidden: set[tuple[int, int]]):
        self.unit = unit
        self.photos = photos
        self.forbidden_by_face: dict[int, set[int]] = {}
        for face, group in forbidden:
            self.forbidden_by_face.setdefault(face, set()).add(group)
        self.ids = sorted({int(g) for g in labels[labels >= 0]})
        self.row = {g: i for i, g in enumerate(self.ids)}
        self.sums = np.zeros((len(self.ids), unit.shape[1]), dtype=np.float64)
        self.counts = np.zeros(len(self.ids), dtype=np.int64)
        self.group_photos: list[set] = [set() for _ in self.ids]
        for g in self.ids:
            self.add(g, np.flatnonzero(labels == g))

    def add(self, group: int, members: np.ndarray) -> None:
        r = self.row[group]
        self.sums[r] += self.unit[members].sum(axis=0)
        self.counts[r] += len(members)
        self.group_photos[r].update(self.photos[members].tolist())

    def best_home(self, members: np.ndarray, params: GroupingParams) -> tuple[int, np.ndarray]:
        """The closest group that `members` may join, and the members allowed to (forbidden ones stay out).
        The same separation rule as in linkage keeps a tight set of look-alike faces out of a tight group."""
        if not self.ids:
            return UNASSIGNED, members
        total = self.unit[members].astype(np.float64).sum(axis=0)
        distances = 1.0 - (self.sums @ total) / (np.maximum(self.counts, 1) * len(members))
        for r in np.argsort(distances):
            if distances[r] > params.join_distance:
                break
            group = self.ids[r]
            if min(len(members), self.counts[r]) >= params.separate_size and distances[r] > params.separation + max(
                _spread(total, len(members)), _spread(self.sums[r], int(self.counts[r]))
            ):
                continue
            if self.group_photos[r].intersection(self.photos[members].tolist()):
                continue
            allowed = np.array([f for f in members if group not in self.forbidden_by_face.get(int(f), ())], dtype=np.int64)
            if allowed.size:
                return group, allowed
        return UNASSIGNED, members


def _cluster_free_faces(unit: np.ndarray, photos: np.ndarray, params: GroupingParams,
                        copies: np.ndarray | None = None) -> list[np.ndarray]:
    """Sets of >= 2 faces (indices into `unit`) that average linkage puts together under the constraints."""
    n = len(unit)
    if n < 2:
        return []
    dist, idx = NeighbourIndex(unit).knn(min(params.neighbours, n))
    keep = (dist <= params.link_distance) & (idx >= 0)
    rows = np.repeat(np.arange(n), keep.sum(axis=1))
    graph = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, idx[keep])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    order = np.argsort(component, kind="stable")
    bounds = np.flatnonzero(np.diff(component[order])) + 1
    sets: list[np.ndarray] = []
    for block in np.split(order, bounds):
        if block.size >= 2:
            sets.extend(_cluster_block(unit, photos, block, params, copies))
    return sets


def _cluster_block(unit: np.ndarray, photos: np.ndarray, block: np.ndarray, params: GroupingParams,
                   copies: np.ndarray | None = None) -> list[np.ndarray]:
    if block.size < 2:
        return []
    if block.size > BLOCK_LIMIT:
        # Too big for one linkage: split in two by 2-means, cluster the halves, then join the sets a
        # split cut apart with the same rules, at the level of sets.
        sets = [s for half in _split(unit, block) for s in _cluster_block(unit, photos, half, params, copies)]
        return _join_sets(unit, photos, sets, params)
    if block.size == 2:
        a, b = block
        if 1.0 - float(unit[a] @ unit[b]) <= params.link_distance and photos[a] != photos[b]:
            return [block]
        return []
    v = unit[block]
    square = np.clip(1.0 - v @ v.T, 0.0, 2.0).astype(np.float64)
    merges = linkage(squareform(square, checks=False), method="average")
    same = square <= params.copy_distance
    if copies is not None:
        same |= copies[block][:, None] == copies[block][None, :]
    _, copy_of = connected_components(coo_matrix(same), directed=False)
    return [block[m] for m in _constrained_cut(merges, v.astype(np.float64), photos[block], params, copy_of) if len(m) >= 2]


def _join_sets(unit: np.ndarray, photos: np.ndarray, sets: list[np.ndarray], params: GroupingParams) -> list[np.ndarray]:
    """Average linkage over whole sets (their distance is 1 - dot of their means), closest pair first,
    under the rules of `_constrained_cut`."""
    sets = list(sets)
    if len(sets) < 2:
        return sets
    sums = np.stack([unit[s].astype(np.float64).sum(axis=0) for s in sets])
    counts = np.array([len(s) for s in sets], dtype=np.float64)
    seen = [set(photos[s].tolist()) for s in sets]
    alive = np.ones(len(sets), dtype=bool)
    distance = 1.0 - (sums @ sums.T) / np.outer(counts, counts)
    np.fill_diagonal(distance, np.inf)
    while True:
        flat = int(np.argmin(distance))
        i, j = divmod(flat, len(sets))
        if distance[i, j] > params.link_distance:
            return [sets[k] for k in np.flatnonzero(alive)]
        ok = seen[i].isdisjoint(seen[j]) and not (
            min(counts[i], counts[j]) >= params.separate_size
            and distance[i, j] > params.separation + max(_spread(sums[i], int(counts[i])), _spread(sums[j], int(counts[j])))
        )
        if not ok:
            distance[i, j] = distance[j, i] = np.inf
            continue
        sets[i] = np.concatenate([sets[i], sets[j]])
        sums[i] += sums[j]
        counts[i] += counts[j]
        seen[i] |= seen[j]
        alive[j] = False
        distance[j, :] = distance[:, j] = np.inf
        row = 1.0 - (sums @ sums[i]) / (counts * counts[i])
        row[~alive] = np.inf
        row[i] = np.inf
        blocked = np.isinf(distance[i])  # pairs refused before stay refused (the rules only get stricter)
        row[blocked & alive] = np.inf
        distance[i, :] = distance[:, i] = row


def _split(unit: np.ndarray, block: np.ndarray) -> list[np.ndarray]:
    from sklearn.cluster import KMeans

    parts = KMeans(n_clusters=2, n_init=1, random_state=0).fit_predict(unit[block])
    halves = [block[parts == 0], block[parts == 1]]
    if min(len(h) for h in halves) == 0:  # identical vectors: cut in the middle
        halves = [block[: len(block) // 2], block[len(block) // 2 :]]
    return halves


def _spread(total: np.ndarray, count: int) -> float:
    """Average cosine distance between the faces of a set of unit vectors, from their sum."""
    return 1.0 - (float(total @ total) - count) / (count * (count - 1))


def _constrained_cut(merges: np.ndarray, unit: np.ndarray, photos: np.ndarray, params: GroupingParams,
                     copy_of: np.ndarray | None = None) -> list[list[int]]:
    """Maximal dendrogram nodes whose every merge was allowed.

    A merge is allowed when it happens at <= `link_distance`, joins no two faces of one photo, and, when
    both sides already hold `separate_size` faces, the sides are not much further apart than each side's
    own faces are (`separation`): two tight groups with a gap between them are look-alikes, not one person.
    Faces that `copy_of` marks as copies of one picture count once towards `separate_size`.
    Average linkage has no inversions, so one bottom-up sweep decides every node.
    """
    m = len(photos)
    copies = (np.arange(m) if copy_of is None else np.asarray(copy_of)).tolist()
    members: list[list[int] | None] = [[i] for i in range(m)] + [None] * (m - 1)
    pictures: list[set | None] = [{c} for c in copies] + [None] * (m - 1)
    seen: list[set | None] = [{p} for p in photos.tolist()] + [None] * (m - 1)
    sums: list[np.ndarray | None] = list(unit) + [None] * (m - 1)
    ok = [True] * m + [False] * (m - 1)
    for step, (a, b, height, _) in enumerate(merges):
        a, b, node = int(a), int(b), m + step
        if not (ok[a] and ok[b] and height <= params.link_distance):
            continue
        ma, mb, sa, sb, ua, ub = members[a], members[b], seen[a], seen[b], sums[a], sums[b]
        pa, pb = pictures[a], pictures[b]
        assert ma is not None and mb is not None and sa is not None and sb is not None  # ok: a node not merged
        assert ua is not None and ub is not None and pa is not None and pb is not None
        na, nb = len(ma), len(mb)
        if min(len(pa), len(pb)) >= params.separate_size and height > params.separation + max(
            _spread(ua, na), _spread(ub, nb)
        ):
            continue
        small, large = (sa, sb) if len(sa) < len(sb) else (sb, sa)
        if not large.isdisjoint(small):
            continue
        large.update(small)
        seen[node], members[node], sums[node], ok[node] = large, ma + mb, ua + ub, True
        pictures[node] = pa | pb
        members[a] = members[b] = seen[a] = seen[b] = sums[a] = sums[b] = pictures[a] = pictures[b] = None
    return [group for i, group in enumerate(members) if ok[i] and group is not None]
