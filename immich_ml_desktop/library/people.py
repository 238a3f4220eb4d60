"""People review: face groups, the user's decisions about them and their undo/redo history, and
re-clustering that respects those decisions; all kept in the library's SQLite file.

Decisions and what every later clustering run does with them:
  move faces to a group / a new group   the faces stay there (pinned); the target group is confirmed
  reject faces ("not this person")      the face never joins that group again; the group is confirmed
  reject faces ("not a face")           the face is left out of every grouping
  merge groups                          one confirmed group holds all their faces
  rename / hide / confirm a group       the group is confirmed
  dismiss a suggestion                  the pair is not suggested again
  accept / dismiss a suggested pair     the group is confirmed / its less certain face leaves it for good
A confirmed group keeps its id and its faces; re-clustering only adds close new faces to it. Groups the
user never touched are rebuilt (keeping their ids where they come out the same).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from immich_ml_desktop.errors import InvalidInputError, LibraryError
from immich_ml_desktop.library.clustering import (
    UNASSIGNED,
    Constraints,
    GroupingParams,
    ImmichParams,
    group_faces,
    immich_cluster,
    unit_rows,
    weak_by_quality,
)
from immich_ml_desktop.library.copies import copy_components, is_fingerprint, words
from immich_ml_desktop.library.store import LibraryStore, from_blob

GroupFilter = Literal["all", "unnamed", "named", "hidden"]
Algorithm = Literal["default", "immich"]
ALGORITHMS = ("default", "immich")
HISTORY_LIMIT = 500  # review actions kept for undo
# Faces found only by these passes have poor vectors (bright: median cosine 0.15 to their person's other
# faces against 0.66 for plain faces, docs/faces.md): they may join a group but never found or link one.
WEAK_PASSES = frozenset({"bright"})
PAIR_SIZE = 2  # a group this small is a suggestion until the user confirms it
SUGGEST_SIMILARITY = 0.3  # average cosine similarity from which two groups are offered for merging


@dataclass(frozen=True)
class FaceGroup:
    id: int
    name: str | None
    hidden: bool
    confirmed: bool
    face_count: int
    cover_face_id: int | None  # the group's best-scored face, for its thumbnail

    @property
    def suggested(self) -> bool:
        """A pair the grouping made and the user has not looked at: two faces are too little to be sure
        of a person, so it is offered rather than taken (a push leaves it out until it is confirmed)."""
        return not self.confirmed and self.face_count == PAIR_SIZE


@dataclass(frozen=True)
class GroupFace:
    face_id: int
    asset_id: int
    source: str  # 'folder' or 'immich'
    asset_key: str  # the photo's path (folder) or the server's asset id (immich)
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the pixels of the preview the models saw
    score: float
    pinned: bool  # placed by the user
    found_by: str = "detector"  # the pass that found it: Immich's detection, or one of the library's own

    @property
    def path(self) -> Path | None:
        return Path(self.asset_key) if self.source == "folder" else None


@dataclass(frozen=True)
class GroupDetail:
    group: FaceGroup
    faces: list[GroupFace]


@dataclass(frozen=True)
class Suggestion:
    """Two groups that look like the same person; `similarity` is their faces' average cosine similarity."""

    group_a: int
    group_b: int
    similarity: float


@dataclass(frozen=True)
class PairSuggestion:
    """A suggested pair (`FaceGroup.suggested`): its group, its two faces (best-scored first) and their
    cosine similarity."""

    group: int
    faces: tuple[int, int]
    similarity: float


@dataclass(frozen=True)
class Grouping:
    """The outcome of a clustering run: group id -> face ids (None as id for groups a preview would create)."""

    groups: list[tuple[int | None, list[int]]]
    unassigned: list[int]


class People:
    """The People page's model for one face model's faces in a library."""

    def __init__(self, store: LibraryStore, model: str | None = None) -> None:
        self.store = store
        if model is None:
            models = store.face_models()
            if len(models) > 1:
                raise InvalidInputError(
                    f"The library holds faces of several models ({', '.join(models)}); choose one of them."
                )
            model = models[0] if models else ""
        self.model = model

    # reading ----------------------------------------------------------------------------------
    def groups(self, which: GroupFilter = "all") -> list[FaceGroup]:
        """Groups with at least one face, largest first. 'all', 'unnamed' and 'named' leave hidden
        groups out; 'hidden' lists only those."""
        where = {
            "all": "g.hidden = 0",
            "unnamed": "g.hidden = 0 AND g.name IS NULL",
            "named": "g.hidden = 0 AND g.name IS NOT NULL",
            "hidden": "g.hidden = 1",
        }.get(which)
        if where is None:
            raise InvalidInputError(f"Unknown group filter {which!r}; use one of all, unnamed, named, hidden.")
        rows = self.store.connection().execute(
            f"""SELECT g.id, g.name, g.hidden, g.confirmed, count(*) AS n,
                   (SELECT a2.face_id FROM face_assignments a2 JOIN faces f ON f.id = a2.face_id
                    WHERE a2.group_id = g.id ORDER BY f.score DESC, f.id LIMIT 1)
                FROM face_groups g JOIN face_assignments a ON a.group_id = g.id
                WHERE g.model = ? AND {where} GROUP BY g.id ORDER BY n DESC, g.id""",
            (self.model,),
        ).fetchall()
        return [FaceGroup(r[0], r[1], bool(r[2]), bool(r[3]), r[4], r[5]) for r in rows]

    def group(self, group_id: int) -> GroupDetail:
        conn = self.store.connection()
        row = conn.execute(
            "SELECT id, name, hidden, confirmed FROM face_groups WHERE id = ? AND model = ?", (group_id, self.model)
        ).fetchone()
        if row is None:
            raise LibraryError(f"The face group {group_id} no longer exists; reload the People page.")
        faces = self._faces("JOIN face_assignments a ON a.face_id = f.id WHERE a.group_id = ?", (group_id,))
        cover = max(faces, key=lambda f: f.score).face_id if faces else None
        return GroupDetail(FaceGroup(row[0], row[1], bool(row[2]), bool(row[3]), len(faces), cover), faces)

    def unassigned_faces(self) -> list[GroupFace]:
        """Faces in no group (and not rejected as 'not a face')."""
        return self._faces(
            "LEFT JOIN face_assignments a ON a.face_id = f.id WHERE f.model = ? AND a.face_id IS NULL "
            "AND f.id NOT IN (SELECT face_id FROM not_faces)",
            (self.model,),
        )

    def all_faces(self) -> list[GroupFace]:
        """Every face of the model, grouped or not, by face id."""
        return self._faces("LEFT JOIN face_assignments a ON a.face_id = f.id WHERE f.model = ?", (self.model,))

    def _faces(self, clause: str, args: tuple) -> list[GroupFace]:
        rows = self.store.connection().execute(
            f"""SELECT f.id, f.asset_id, s.source, s.key, f.x1, f.y1, f.x2, f.y2, f.score, coalesce(a.pinned, 0),
                       f.found_by
                FROM faces f JOIN assets s ON s.id = f.asset_id {clause} ORDER BY f.id""",
            args,
        ).fetchall()
        return [GroupFace(r[0], r[1], r[2], r[3], (r[4], r[5], r[6], r[7]), r[8], bool(r[9]), r[10]) for r in rows]

    def suggestions(self, limit: int = 20) -> list[Suggestion]:
        """Pairs of visible groups that look like one person, most similar first; dismissed pairs and
        pairs sharing a photo (one person is not twice in a photo) are left out."""
        conn = self.store.connection()
        rows = conn.execute(
            "SELECT a.group_id, f.asset_id, f.vector FROM face_assignments a JOIN faces f ON f.id = a.face_id "
            "JOIN face_groups g ON g.id = a.group_id WHERE g.model = ? AND g.hidden = 0 ORDER BY a.group_id",
            (self.model,),
        ).fetchall()
        if not rows:
            return []
        group_of = np.array([r[0] for r in rows])
        vectors = unit_rows(np.stack([from_blob(r[2]) for r in rows]))
        ids, first = np.unique(group_of, return_index=True)
        means = np.add.reduceat(vectors, first, axis=0) / np.diff(np.append(first, len(rows)))[:, None]
        photos: list[set[int]] = [set() for _ in ids]
        row_of = {int(g): i for i, g in enumerate(ids)}
        for r in rows:
            photos[row_of[r[0]]].add(r[1])
        dismissed = {tuple(r) for r in conn.execute("SELECT group_a, group_b FROM dismissed_suggestions")}
        sims = means @ means.T
        a_idx, b_idx = np.triu_indices(len(ids), k=1)
        candidates = np.flatnonzero(sims[a_idx, b_idx] >= SUGGEST_SIMILARITY)
        out = []
        for c in candidates[np.argsort(-sims[a_idx[candidates], b_idx[candidates]], kind="stable")]:
            i, j = int(a_idx[c]), int(b_idx[c])
            pair = (int(ids[i]), int(ids[j]))
            if pair in dismissed or photos[i] & photos[j]:
                continue
            out.append(Suggestion(pair[0], pair[1], float(sims[i, j])))
            if len(out) >= limit:
                break
        return out

    def pair_suggestions(self, limit: int = 20) -> list[PairSuggestion]:
        """The visible suggested pairs (`FaceGroup.suggested`), most alike first."""
        rows = self.store.connection().execute(
            "SELECT a.group_id, f.id, f.vector FROM face_assignments a JOIN faces f ON f.id = a.face_id "
            "JOIN face_groups g ON g.id = a.group_id WHERE g.model = ? AND g.hidden = 0 AND g.confirmed = 0 "
            "AND a.group_id IN (SELECT group_id FROM face_assignments GROUP BY group_id HAVING count(*) = ?) "
            "ORDER BY a.group_id, f.score DESC, f.id", (self.model, PAIR_SIZE)).fetchall()
        out = []
        for first, second in zip(rows[::2], rows[1::2]):
            a, b = unit_rows(np.stack([from_blob(first[2]), from_blob(second[2])]))
            out.append(PairSuggestion(first[0], (first[1], second[1]), float(a @ b)))
        out.sort(key=lambda p: -p.similarity)
        return out[:limit]

    # review actions (each one undoable) -------------------------------------------------------
    def move_faces(self, face_ids: Iterable[int], group_id: int | None = None) -> int:
        """Put faces into a group (a new one when `group_id` is None); returns the group's id."""
        faces = self._known_faces(face_ids)

        def mutate(conn: sqlite3.Connection) -> set[int]:
            target = self._new_group(conn) if group_id is None else self._require_group(conn, group_id)
            conn.executemany(
                "INSERT INTO face_assignments (face_id, group_id, pinned) VALUES (?, ?, 1) "
                "ON CONFLICT (face_id) DO UPDATE SET group_id = excluded.group_id, pinned = 1",
                [(f, target) for f in faces],
            )
            conn.executemany("DELETE FROM face_rejections WHERE face_id = ? AND group_id = ?", [(f, target) for f in faces])
            conn.executemany("DELETE FROM not_faces WHERE face_id = ?", [(f,) for f in faces])
            conn.execute("UPDATE face_groups SET confirmed = 1 WHERE id = ?", (target,))
            result.append(target)
            return {target} if group_id is None else set()

        result: list[int] = []
        what = f"Move {len(faces)} face{'s' * (len(faces) != 1)} to {'a new group' if group_id is None else 'another group'}"
        self._record(what, [] if group_id is None else [group_id], faces, mutate)
        return result[0]

    def reject_faces(self, face_ids: Iterable[int], not_a_face: bool = False) -> None:
        """Take faces out of their groups: 'not this person' (never joined to that group again) or,
        with `not_a_face`, left out of all grouping."""
        faces = self._known_faces(face_ids)

        def mutate(conn: sqlite3.Connection) -> set[int]:
            for f in faces:
                row = conn.execute("SELECT group_id FROM face_assignments WHERE face_id = ?", (f,)).fetchone()
                if row:
                    if not not_a_face:
                        conn.execute("INSERT OR IGNORE INTO face_rejections (face_id, group_id) VALUES (?, ?)", (f, row[0]))
                    conn.execute("UPDATE face_groups SET confirmed = 1 WHERE id = ?", (row[0],))
                    conn.execute("DELETE FROM face_assignments WHERE face_id = ?", (f,))
                if not_a_face:
                    conn.execute("INSERT OR IGNORE INTO not_faces (face_id) VALUES (?)", (f,))
            return set()

        kind = "not a face" if not_a_face else "not this person"
        self._record(f"Reject {len(faces)} face{'s' * (len(faces) != 1)} ({kind})", [], faces, mutate)

    def merge_groups(self, target: int, others: Iterable[int]) -> None:
        """Move every face of `others` into `target` and delete them; their rejections carry over and
        `target` takes the first name among them if it has none."""
        others = [int(g) for g in others if int(g) != int(target)]
        if not others:
            raise InvalidInputError("Choose at least two different groups to merge.")

        def mutate(conn: sqlite3.Connection) -> set[int]:
            self._require_group(conn, target)
            for g in others:
                self._require_group(conn, g)
            marks = ",".join("?" * len(others))
            moved = [r[0] for r in conn.execute(f"SELECT face_id FROM face_assignments WHERE group_id IN ({marks})", others)]
            conn.execute(f"UPDATE face_assignments SET group_id = ? WHERE group_id IN ({marks})", [target, *others])
            conn.execute(
                f"INSERT OR IGNORE INTO face_rejections (face_id, group_id) "
                f"SELECT face_id, ? FROM face_rejections WHERE group_id IN ({marks})", [target, *others]
            )
            conn.executemany("DELETE FROM face_rejections WHERE face_id = ? AND group_id = ?", [(f, target) for f in moved])
            (name,) = conn.execute("SELECT name FROM face_groups WHERE id = ?", (target,)).fetchone()
            if name is None:
                named = conn.execute(
                    f"SELECT name FROM face_groups WHERE id IN ({marks}) AND name IS NOT NULL ORDER BY id", others
                ).fetchone()
                if named:
                    conn.execute("UPDATE face_groups SET name = ? WHERE id = ?", (named[0], target))
            conn.execute("UPDATE face_groups SET confirmed = 1 WHERE id = ?", (target,))
            conn.execute(f"DELETE FROM face_groups WHERE id IN ({marks})", others)
            return set()

        self._record(f"Merge {len(others) + 1} groups", [target, *others], [], mutate)

    def rename(self, group_id: int, name: str | None) -> None:
        name = (name or "").strip() or None
        self._update_group(group_id, f"Rename to {name!r}" if name else "Remove name", name=name)

    def set_hidden(self, group_id: int, hidden: bool) -> None:
        self._update_group(group_id, "Hide group" if hidden else "Show group", hidden=int(hidden))

    def confirm(self, group_id: int) -> None:
        """Keep this group as it is through every later clustering run."""
        self._update_group(group_id, "Confirm group")

    def accept_suggestion(self, group_a: int, group_b: int) -> int:
        """Merge the suggested pair into the larger group; returns its id."""
        sizes = dict(self.store.connection().execute(
            "SELECT group_id, count(*) FROM face_assignments WHERE group_id IN (?, ?) GROUP BY group_id", (group_a, group_b)
        ).fetchall())
        target, other = (group_a, group_b) if sizes.get(group_a, 0) >= sizes.get(group_b, 0) else (group_b, group_a)
        self.merge_groups(target, [other])
        return target

    def accept_pair(self, group_id: int) -> None:
        """The suggested pair is one person: it becomes a confirmed group."""
        self._update_group(group_id, "Accept pair")

    def dismiss_pair(self, group_id: int) -> None:
        """The suggested pair is not one person: its less certain face (lower detector score) leaves the
        group and never joins it again; the other face keeps the group, now confirmed, so that later
        groupings do not pair the two again."""
        faces = self.group(group_id).faces
        if len(faces) != PAIR_SIZE:
            raise InvalidInputError(f"The face group {group_id} is not a pair any more; reload the People page.")
        weaker = min(faces, key=lambda f: (f.score, -f.face_id))
        self.reject_faces([weaker.face_id])

    def dismiss_suggestion(self, group_a: int, group_b: int) -> None:
        a, b = sorted((int(group_a), int(group_b)))

        def mutate(conn: sqlite3.Connection) -> set[int]:
            self._require_group(conn, a)
            self._require_group(conn, b)
            conn.execute("INSERT OR IGNORE INTO dismissed_suggestions (group_a, group_b) VALUES (?, ?)", (a, b))
            return set()

        self._record("Dismiss suggestion", [a, b], [], mutate)

    # undo / redo --------------------------------------------------------------------------------
    def can_undo(self) -> str | None:
        """What Undo would undo (None: nothing)."""
        row = self.store.connection().execute(
            "SELECT action FROM review_log WHERE model = ? AND undone = 0 ORDER BY id DESC LIMIT 1", (self.model,)
        ).fetchone()
        return row[0] if row else None

    def can_redo(self) -> str | None:
        row = self.store.connection().execute(
            "SELECT action FROM review_log WHERE model = ? AND undone = 1 ORDER BY id LIMIT 1", (self.model,)
        ).fetchone()
        return row[0] if row else None

    def undo(self) -> str | None:
        """Undo the latest review action; returns what was undone (None: nothing to undo)."""
        with self.store.write() as conn:
            row = conn.execute(
                "SELECT id, action, before FROM review_log WHERE model = ? AND undone = 0 ORDER BY id DESC LIMIT 1",
                (self.model,),
            ).fetchone()
            if row is None:
                return None
            _restore(conn, json.loads(row[2]))
            conn.execute("UPDATE review_log SET undone = 1 WHERE id = ?", (row[0],))
            return row[1]

    def redo(self) -> str | None:
        with self.store.write() as conn:
            row = conn.execute(
                "SELECT id, action, after FROM review_log WHERE model = ? AND undone = 1 ORDER BY id LIMIT 1",
                (self.model,),
            ).fetchone()
            if row is None:
                return None
            _restore(conn, json.loads(row[2]))
            conn.execute("UPDATE review_log SET undone = 0 WHERE id = ?", (row[0],))
            return row[1]

    # clustering ---------------------------------------------------------------------------------
    def recluster(self, algorithm: Algorithm = "default", params: GroupingParams | ImmichParams | None = None,
                  incremental: bool = False) -> Grouping:
        """Group the faces again, keeping every decision (see the module docstring); undoable.

        `incremental` keeps every existing group as it is and only places faces that are in none (what
        to run after indexing new photos)."""
        face_ids, labels, existing = self._cluster(algorithm, params, incremental)
        result: list[Grouping] = []

        def mutate(conn: sqlite3.Connection) -> set[int]:
            old = dict(conn.execute(
                "SELECT a.face_id, a.group_id FROM face_assignments a JOIN face_groups g ON g.id = a.group_id "
                "WHERE g.model = ? AND g.confirmed = 0", (self.model,)
            ).fetchall())
            reuse = _reuse_ids(face_ids, labels, existing, old)
            conn.executemany(
                "DELETE FROM face_assignments WHERE face_id = ?",
                [(int(f),) for f, label in zip(face_ids, labels) if label not in existing],
            )
            keep = set(existing) | set(reuse.values())
            stale = [g for (g,) in conn.execute("SELECT id FROM face_groups WHERE model = ? AND confirmed = 0", (self.model,))
                     if g not in keep]
            conn.executemany("DELETE FROM face_groups WHERE id = ?", [(g,) for g in stale])
            created: set[int] = set()
            group_of: dict[int, int] = {}
            for label in sorted(set(labels.tolist()) - {UNASSIGNED} - set(existing)):
                gid = reuse.get(label)
                if gid is None:
                    gid = self._new_group(conn, confirmed=False)
                    created.add(gid)
                group_of[label] = gid
            conn.executemany(
                "INSERT INTO face_assignments (face_id, group_id, pinned) VALUES (?, ?, 0) "
                "ON CONFLICT (face_id) DO UPDATE SET group_id = excluded.group_id",
                [(int(f), group_of.get(int(lab), int(lab))) for f, lab in zip(face_ids, labels) if lab != UNASSIGNED],
            )
            result.append(_grouping(face_ids, labels, group_of))
            return created

        all_groups = [g for (g,) in self.store.connection().execute("SELECT id FROM face_groups WHERE model = ?", (self.model,))]
        self._record(f"Group faces ({algorithm})", all_groups, face_ids.tolist(), mutate)
        return result[0]

    def preview(self, algorithm: Algorithm = "default", params: GroupingParams | ImmichParams | None = None) -> Grouping:
        """What `recluster` would make of the faces, without storing anything (groups it would create
        have None as id)."""
        face_ids, labels, existing = self._cluster(algorithm, params, incremental=False)
        return _grouping(face_ids, labels, {label: None for label in set(labels.tolist()) - set(existing)})

    def _cluster(self, algorithm: Algorithm, params: Any, incremental: bool) -> tuple[np.ndarray, np.ndarray, set[int]]:
        """(face ids, one label per face, the labels that are existing group ids)."""
        if algorithm not in ALGORITHMS:
            raise InvalidInputError(f"Unknown grouping algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}.")
        conn = self.store.connection()
        rows = conn.execute(
            "SELECT f.id, f.asset_id, f.vector, a.group_id, coalesce(g.confirmed, 0), f.found_by, "
            "f.sharpness, f.lower_detail, s.fingerprint, s.width, s.height, f.x1, f.y1, f.x2, f.y2 FROM faces f "
            "JOIN assets s ON s.id = f.asset_id "
            "LEFT JOIN face_assignments a ON a.face_id = f.id LEFT JOIN face_groups g ON g.id = a.group_id "
            "WHERE f.model = ? AND f.id NOT IN (SELECT face_id FROM not_faces) ORDER BY f.id",
            (self.model,),
        ).fetchall()
        if not rows:
            raise LibraryError("The library has no faces to group yet; index its photos with a face model first.")
        face_ids = np.array([r[0] for r in rows], dtype=np.int64)
        photos = np.array([r[1] for r in rows], dtype=np.int64)
        vectors = np.stack([from_blob(r[2]) for r in rows])
        index_of = {int(f): i for i, f in enumerate(face_ids)}
        fixed = {i: int(r[3]) for i, r in enumerate(rows) if r[3] is not None and (r[4] or incremental)}
        forbidden = {
            (index_of[f], g) for f, g in conn.execute("SELECT face_id, group_id FROM face_rejections") if f in index_of
        }
        if algorithm == "immich":
            initial = np.full(len(rows), UNASSIGNED, dtype=np.int64)
            for i, g in fixed.items():
                initial[i] = g
            labels = immich_cluster(vectors, params or ImmichParams(), initial=initial, forbidden=forbidden)
        else:
            params = params or GroupingParams()
            measured = np.array([[np.nan if x is None else x for x in r[6:8]] for r in rows], dtype=np.float64)
            weak = np.array([r[5] in WEAK_PASSES for r in rows], dtype=bool) | weak_by_quality(measured[:, 0], measured[:, 1], params)
            labels = group_faces(vectors, photos, params, Constraints(fixed=fixed, forbidden=forbidden), weak=weak,
                                 copies=_copies(rows, photos))
        return face_ids, labels, set(fixed.values())

    # the machinery ------------------------------------------------------------------------------
    def _record(self, action: str, groups: Iterable[int], faces: Iterable[int],
                mutate: Callable[[sqlite3.Connection], set[int]]) -> None:
        """Run `mutate` in one transaction and log the rows it may change, before and after, for undo."""
        with self.store.write() as conn:
            before = _snapshot(conn, set(groups), set(faces))
            created = mutate(conn)
            # A group the action emptied goes (undo brings it back with its faces), unless decisions about faces of
            # a photo being indexed again still point at it (library/decisions.py).
            conn.execute("DELETE FROM face_groups WHERE model = ? AND id NOT IN (SELECT group_id FROM face_assignments) "
                         "AND id NOT IN (SELECT group_id FROM pending_decisions WHERE group_id IS NOT NULL)", (self.model,))
            after = _snapshot(conn, {int(g) for g in before["groups"]} | created, {int(f) for f in before["faces"]})
            for g in created:
                before["groups"][str(g)] = None
            conn.execute("DELETE FROM review_log WHERE model = ? AND undone = 1", (self.model,))
            conn.execute(
                "INSERT INTO review_log (model, action, before, after, created_at) VALUES (?, ?, ?, ?, ?)",
                (self.model, action, json.dumps(before), json.dumps(after), time.time()),
            )
            conn.execute(
                "DELETE FROM review_log WHERE model = ? AND id <= "
                "(SELECT id FROM review_log WHERE model = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (self.model, self.model, HISTORY_LIMIT),
            )

    def _new_group(self, conn: sqlite3.Connection, confirmed: bool = True) -> int:
        cur = conn.execute(
            "INSERT INTO face_groups (model, confirmed, created_at) VALUES (?, ?, ?)", (self.model, int(confirmed), time.time())
        )
        assert cur.lastrowid is not None  # an INSERT always has one
        return int(cur.lastrowid)

    def _require_group(self, conn: sqlite3.Connection, group_id: int) -> int:
        if conn.execute("SELECT 1 FROM face_groups WHERE id = ? AND model = ?", (group_id, self.model)).fetchone() is None:
            raise LibraryError(f"The face group {group_id} no longer exists; reload the People page.")
        return int(group_id)

    def _known_faces(self, face_ids: Iterable[int]) -> list[int]:
        faces = sorted({int(f) for f in face_ids})
        if not faces:
            raise InvalidInputError("Select at least one face.")
        known = {f.id for f in self.store.faces(ids=faces, model=self.model)}
        missing = [f for f in faces if f not in known]
        if missing:
            raise LibraryError(f"The faces {missing[:5]} are no longer in the library (re-indexed?); reload the People page.")
        return faces

    def _update_group(self, group_id: int, action: str, **columns: Any) -> None:
        def mutate(conn: sqlite3.Connection) -> set[int]:
            self._require_group(conn, group_id)
            sets = ", ".join(f"{c} = ?" for c in columns)
            conn.execute(f"UPDATE face_groups SET {sets}{', ' if sets else ''}confirmed = 1 WHERE id = ?",
                         [*columns.values(), group_id])
            return set()

        self._record(action, [group_id], [], mutate)


def _copies(rows: list, photos: np.ndarray) -> np.ndarray | None:
    """Which faces are one face in copies of one picture (library/copies.py), from rows whose columns 8..14
    are the photo's fingerprint, width, height and the face's box; None when no photo has a fingerprint."""
    known = np.array([is_fingerprint(r[8]) and bool(r[9]) and bool(r[10]) for r in rows], dtype=bool)
    if not known.any():
        return None
    prints = np.stack([words(r[8]) for r in rows])
    size = np.array([[r[9], r[10], r[9], r[10]] if k else [1, 1, 1, 1] for r, k in zip(rows, known)], dtype=np.float64)
    boxes = np.array([r[11:15] for r in rows], dtype=np.float64) / size
    return copy_components(photos, prints, boxes, known)


def _grouping(face_ids: np.ndarray, labels: np.ndarray, group_of: Mapping[int, int | None]) -> Grouping:
    members: dict[int, list[int]] = {}
    for f, label in zip(face_ids.tolist(), labels.tolist()):
        if label != UNASSIGNED:
            members.setdefault(label, []).append(f)
    groups = [(group_of.get(label, label), faces) for label, faces in members.items()]
    groups.sort(key=lambda g: -len(g[1]))
    return Grouping(groups, [f for f, label in zip(face_ids.tolist(), labels.tolist()) if label == UNASSIGNED])


def _reuse_ids(face_ids: np.ndarray, labels: np.ndarray, existing: set[int], old: dict[int, int]) -> dict[int, int]:
    """New label -> the unconfirmed group id that held most of its faces, so that groups that come out
    the same keep their ids (and the suggestions dismissed for them)."""
    overlap: dict[tuple[int, int], int] = {}
    for f, label in zip(face_ids.tolist(), labels.tolist()):
        if label != UNASSIGNED and label not in existing and f in old:
            key = (label, old[f])
            overlap[key] = overlap.get(key, 0) + 1
    reuse: dict[int, int] = {}
    taken: set[int] = set()
    for (label, gid), _ in sorted(overlap.items(), key=lambda kv: -kv[1]):
        if label not in reuse and gid not in taken:
            reuse[label] = gid
            taken.add(gid)
    return reuse


# Snapshots: the rows of the review tables that an action may change, keyed by the groups and faces it
# touches (plus the faces of those groups and the groups of those faces). Restoring a snapshot puts
# exactly those rows back as they were.


def _scope(conn: sqlite3.Connection, groups: set[int], faces: set[int]) -> None:
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS scope_groups (id INTEGER PRIMARY KEY)")
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS scope_faces (id INTEGER PRIMARY KEY)")
    conn.execute("DELETE FROM temp.scope_groups")
    conn.execute("DELETE FROM temp.scope_faces")
    conn.executemany("INSERT OR IGNORE INTO temp.scope_groups VALUES (?)", [(g,) for g in groups])
    conn.executemany("INSERT OR IGNORE INTO temp.scope_faces VALUES (?)", [(f,) for f in faces])


def _snapshot(conn: sqlite3.Connection, groups: set[int], faces: set[int]) -> dict[str, Any]:
    _scope(conn, groups, faces)
    conn.execute("INSERT OR IGNORE INTO temp.scope_groups SELECT group_id FROM face_assignments "
                 "WHERE face_id IN (SELECT id FROM temp.scope_faces)")
    conn.execute("INSERT OR IGNORE INTO temp.scope_faces SELECT face_id FROM face_assignments "
                 "WHERE group_id IN (SELECT id FROM temp.scope_groups)")
    group_ids = [r[0] for r in conn.execute("SELECT id FROM temp.scope_groups")]
    face_ids = [r[0] for r in conn.execute("SELECT id FROM temp.scope_faces")]
    snap: dict[str, Any] = {"groups": {str(g): None for g in group_ids}, "faces": {str(f): None for f in face_ids}}
    for gid, *row in conn.execute("SELECT id, model, name, hidden, confirmed, created_at FROM face_groups "
                                  "WHERE id IN (SELECT id FROM temp.scope_groups)"):
        snap["groups"][str(gid)] = row
    for fid, gid, pinned in conn.execute("SELECT face_id, group_id, pinned FROM face_assignments "
                                         "WHERE face_id IN (SELECT id FROM temp.scope_faces)"):
        snap["faces"][str(fid)] = [gid, pinned]
    snap["rejections"] = conn.execute(
        "SELECT face_id, group_id FROM face_rejections WHERE face_id IN (SELECT id FROM temp.scope_faces) "
        "OR group_id IN (SELECT id FROM temp.scope_groups)").fetchall()
    snap["not_faces"] = [r[0] for r in conn.execute(
        "SELECT face_id FROM not_faces WHERE face_id IN (SELECT id FROM temp.scope_faces)")]
    snap["dismissed"] = conn.execute(
        "SELECT group_a, group_b FROM dismissed_suggestions WHERE group_a IN (SELECT id FROM temp.scope_groups) "
        "OR group_b IN (SELECT id FROM temp.scope_groups)").fetchall()
    return snap


def _restore(conn: sqlite3.Connection, snap: dict[str, Any]) -> None:
    groups = {int(g): row for g, row in snap["groups"].items()}
    faces = {int(f): row for f, row in snap["faces"].items()}
    _scope(conn, set(groups), set(faces))
    conn.executemany(
        "INSERT INTO face_groups (id, model, name, hidden, confirmed, created_at) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET name = excluded.name, hidden = excluded.hidden, confirmed = excluded.confirmed",
        [(g, *row) for g, row in groups.items() if row is not None],
    )
    # Faces deleted since (their photo re-indexed) cannot come back; their rows are skipped.
    exists = "WHERE EXISTS (SELECT 1 FROM faces WHERE id = ?)"
    conn.execute("DELETE FROM face_assignments WHERE face_id IN (SELECT id FROM temp.scope_faces)")
    conn.executemany(f"INSERT INTO face_assignments (face_id, group_id, pinned) SELECT ?, ?, ? {exists}",
                     [(f, row[0], row[1], f) for f, row in faces.items() if row is not None])
    conn.execute("DELETE FROM face_rejections WHERE face_id IN (SELECT id FROM temp.scope_faces) "
                 "OR group_id IN (SELECT id FROM temp.scope_groups)")
    conn.executemany(f"INSERT OR IGNORE INTO face_rejections (face_id, group_id) SELECT ?, ? {exists}",
                     [(f, g, f) for f, g in snap["rejections"]])
    conn.execute("DELETE FROM not_faces WHERE face_id IN (SELECT id FROM temp.scope_faces)")
    conn.executemany(f"INSERT OR IGNORE INTO not_faces (face_id) SELECT ? {exists}", [(f, f) for f in snap["not_faces"]])
    conn.execute("DELETE FROM dismissed_suggestions WHERE group_a IN (SELECT id FROM temp.scope_groups) "
                 "OR group_b IN (SELECT id FROM temp.scope_groups)")
    conn.executemany("INSERT OR IGNORE INTO dismissed_suggestions (group_a, group_b) VALUES (?, ?)", snap["dismissed"])
    conn.executemany("DELETE FROM face_groups WHERE id = ?", [(g,) for g, row in groups.items() if row is None])
