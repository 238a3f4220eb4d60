"""The local library: one SQLite file (WAL) with assets, per-model status, CLIP vectors, faces and what
other tasks (a model class's own task, OCR) returned, per task and model.

Safe for one writer thread plus any number of reader threads (the GUI): every thread gets its own
connection, writes are serialised by a lock and `BEGIN IMMEDIATE`, and everything one asset produced
(vectors, faces, status) is written in a single transaction, so a kill never leaves half an asset.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np

from immich_ml_desktop.errors import LibraryError
from immich_ml_desktop.library import decisions
from immich_ml_desktop.library.schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

Source = Literal["folder", "immich"]
Change = Literal["new", "changed", "unchanged"]
TaskModel = tuple[str, str]  # (the /predict task, the model name) of a task result
_OWN_TASKS = {"clip", "faces"}  # status names of the CLIP vectors and faces, which have tables of their own


def _task_models(tasks: Iterable[TaskModel]) -> list[TaskModel]:
    tasks = list(tasks)
    for task, model in tasks:
        if task in _OWN_TASKS or task == "facial-recognition" or not task or not model:
            raise ValueError(f"task result {task!r}/{model!r}: CLIP vectors and faces are stored with clip_model/face_model")
    return tasks


def to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


def _stack(blobs: Sequence[bytes]) -> np.ndarray:
    if not blobs:
        return np.zeros((0, 0), np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), -1)


@dataclass(frozen=True)
class Asset:
    id: int
    source: Source
    key: str  # absolute path for 'folder', remote asset id for 'immich'
    size: int | None
    mtime_ns: int | None
    checksum: str | None
    width: int | None  # of the preview the models saw; None until indexed
    height: int | None

    @property
    def path(self) -> Path | None:
        return Path(self.key) if self.source == "folder" else None


class FaceLike(Protocol):
    """What `Engine.faces` returns per face."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    embedding: np.ndarray


@dataclass(frozen=True)
class AssetResult:
    """Everything the models produced for one asset; None for a task that was not run. `results`: the
    answer of each other (task, model), JSON as /predict gives it (`to_json(answer[task])`)."""

    asset_id: int
    width: int
    height: int
    clip: np.ndarray | None = None
    faces: Sequence[FaceLike] | None = None
    results: Mapping[TaskModel, bytes] | None = None
    # per face, in the order of `faces`: (brightness, contrast, sharpness, lower_detail) as
    # services/face_quality.py measures them; None when not measured
    face_quality: Sequence[tuple[float, float, float, float]] | None = None
    fingerprint: bytes | None = None  # the photo's (services/face_quality.py, photo_fingerprint)


@dataclass(frozen=True)
class Failure:
    asset_id: int
    source: Source
    key: str
    task: str
    model: str
    reason: str


@dataclass(frozen=True)
class TaskResult:
    """What one (task, model) returned for one asset, read back."""

    asset_id: int
    source: Source
    key: str
    task: str
    model: str
    result: Any  # the JSON value /predict answered under the task's key

    def as_dict(self) -> dict[str, Any]:
        return {"asset_id": self.asset_id, "source": self.source, "key": self.key, "task": self.task,
                "model": self.model, "result": self.result}


@dataclass(frozen=True)
class StoredFace:
    id: int
    asset_id: int
    model: str
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in preview pixels
    score: float
    landmarks: np.ndarray  # (5, 2)


@dataclass(frozen=True)
class AssetFile:
    """What a source knows about one asset before indexing (for `sync_assets`)."""

    key: str
    size: int | None = None
    mtime_ns: int | None = None
    checksum: str | None = None


_ASSET_COLUMNS = "id, source, key, size, mtime_ns, checksum, width, height"


def _asset(row: Sequence[Any]) -> Asset:
    return Asset(*row)


def _split_statements(script: str) -> Iterator[str]:
    """Complete SQL statements of a script (executescript would COMMIT our open transaction)."""
    buf = ""
    for part in script.split(";"):
        buf += part + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n\t;"):
                yield buf
            buf = ""
    if buf.strip(" \n\t;"):
        yield buf


class LibraryStore:
    def __init__(self, path: Path | str, *, create: bool = True) -> None:
        """Open the library at `path`; `create` False (commands that only read or push what a library
        holds) refuses a path where there is none instead of creating an empty one and its folders."""
        self.path = Path(path)
        if not create and not self.path.exists():
            raise LibraryError(
                f"There is no library at {self.path}: check the path (--library), or index some photos into "
                "it first (`immich-ml-desktop index FOLDER --library FILE`, or `immich index`)."
            )
        self._local = threading.local()
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._connections_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._closed = False
        if self.path.is_dir():
            raise LibraryError(f"{self.path} is a folder; give the path of a library file (e.g. library.sqlite3).")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LibraryError(f"Cannot create the folder for the library {self.path}: {e}.") from None
        try:
            self._migrate(self.connection())
        except sqlite3.OperationalError as e:  # locked, read-only, disk full, ...
            self.close()
            raise LibraryError(f"Cannot use the library {self.path}: {e}.") from None
        except sqlite3.DatabaseError as e:
            self.close()
            raise LibraryError(
                f"{self.path} is not a library this app can open ({e}); choose another file or move this one away."
            ) from None
        except LibraryError:
            self.close()
            raise

    # connections ------------------------------------------------------------------------------
    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; use `write()` for transactions)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise LibraryError(f"The library {self.path} is closed.")
            try:
                conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            except sqlite3.OperationalError as e:
                raise LibraryError(f"Cannot open the library {self.path}: {e}.") from None
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable against app crashes, fast
            self._local.conn = conn
            with self._connections_lock:
                # Pool threads come and go (QThreadPool expires idle ones): close what dead threads left.
                alive = []
                for thread, other in self._connections:
                    if thread.is_alive():
                        alive.append((thread, other))
                    else:
                        other.close()
                self._connections = [*alive, (threading.current_thread(), conn)]
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it is stored, or (on an exception or a kill) none of it."""
        conn = self.connection()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        self._closed = True
        with self._connections_lock:
            conns, self._connections = self._connections, []
        for _, conn in conns:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover - closing a connection another thread is using
                pass
        self._local = threading.local()

    def __enter__(self) -> LibraryStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # schema -----------------------------------------------------------------------------------
    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LibraryError(
                f"The library {self.path} was written by a newer version of Immich ML Desktop "
                f"(schema {version}, this one knows up to {SCHEMA_VERSION}); update the app to open it."
            )
        if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise LibraryError(
                f"{self.path} is an SQLite file of another program, not a library; choose another file."
            )
        conn.execute("PRAGMA journal_mode = WAL")
        while version < SCHEMA_VERSION:
            with self.write():
                # Another process may have migrated while we waited for the lock.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version >= SCHEMA_VERSION:
                    break
                migration = MIGRATIONS[version]
                if callable(migration):
                    migration(conn)
                else:
                    for statement in _split_statements(migration):
                        conn.execute(statement)
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")
                log.info("Library %s migrated to schema %d", self.path, version)

    @property
    def schema_version(self) -> int:
        return self.connection().execute("PRAGMA user_version").fetchone()[0]

    # assets -----------------------------------------------------------------------------------
    def sync_assets(self, source: Source, files: Iterable[AssetFile], *, remove_missing_under: Sequence[str] | None = None,
                    remove_missing: bool = False) -> dict[str, list[int]]:
        """Insert new assets, reset changed ones (their vectors, faces and status go), and optionally delete
        those of `source` not in `files` (all of them, or only keys under the `remove_missing_under`
        prefixes). One transaction. Returns asset ids by change: new, changed, unchanged, removed."""
        result: dict[str, list[int]] = {"new": [], "changed": [], "unchanged": [], "removed": []}
        now = time.time()
        with self.write() as conn:
            known = {
                row[1]: row
                for row in conn.execute("SELECT id, key, size, mtime_ns, checksum FROM assets WHERE source = ?", (source,))
            }
            seen: set[str] = set()
            for f in files:
                seen.add(f.key)
                row = known.get(f.key)
                if row is None:
                    cur = conn.execute(
                        "INSERT INTO assets (source, key, size, mtime_ns, checksum, added_at) VALUES (?, ?, ?, ?, ?, ?)",
                        (source, f.key, f.size, f.mtime_ns, f.checksum, now),
                    )
                    result["new"].append(int(cur.lastrowid))  # type: ignore[arg-type]
                elif (row[2], row[3], row[4]) != (f.size, f.mtime_ns, f.checksum):
                    self._reset(conn, row[0])
                    conn.execute(
                        "UPDATE assets SET size = ?, mtime_ns = ?, checksum = ?, width = NULL, height = NULL WHERE id = ?",
                        (f.size, f.mtime_ns, f.checksum, row[0]),
                    )
                    result["changed"].append(row[0])
                else:
                    result["unchanged"].append(row[0])
            if remove_missing or remove_missing_under:
                prefixes = tuple(remove_missing_under or ())
                gone = [
                    row[0] for key, row in known.items()
                    if key not in seen and (remove_missing or key.startswith(prefixes))
                ]
                self._delete(conn, gone)
                result["removed"] = gone
        return result

    def rekey_assets(self, source: Source, files: Iterable[AssetFile]) -> int:
        """Store new change keys (size, mtime, checksum) for known assets without resetting their results:
        for a source that changed how it tells an image changed. Returns how many rows changed."""
        with self.write() as conn:
            return sum(conn.execute(
                "UPDATE assets SET size = ?, mtime_ns = ?, checksum = ? WHERE source = ? AND key = ?",
                (f.size, f.mtime_ns, f.checksum, source, f.key)).rowcount for f in files)

    def upsert_asset(self, source: Source, key: str, *, size: int | None = None, mtime_ns: int | None = None,
                     checksum: str | None = None) -> tuple[int, Change]:
        """Add one asset or note that it changed (which drops its results so it is indexed again)."""
        with self.write() as conn:
            row = conn.execute(
                "SELECT id, size, mtime_ns, checksum FROM assets WHERE source = ? AND key = ?", (source, key)
            ).fetchone()
            if row is None:
                cur = conn.execute(
                    "INSERT INTO assets (source, key, size, mtime_ns, checksum, added_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (source, key, size, mtime_ns, checksum, time.time()),
                )
                return int(cur.lastrowid), "new"  # type: ignore[arg-type]
            if (row[1], row[2], row[3]) == (size, mtime_ns, checksum):
                return row[0], "unchanged"
            self._reset(conn, row[0])
            conn.execute(
                "UPDATE assets SET size = ?, mtime_ns = ?, checksum = ?, width = NULL, height = NULL WHERE id = ?",
                (size, mtime_ns, checksum, row[0]),
            )
            return row[0], "changed"

    @staticmethod
    def _reset(conn: sqlite3.Connection, asset_id: int) -> None:
        decisions.stash(conn, asset_id)  # the user's decisions wait for the faces of the new image
        conn.execute("DELETE FROM asset_status WHERE asset_id = ?", (asset_id,))
        conn.execute("DELETE FROM clip_vectors WHERE asset_id = ?", (asset_id,))
        conn.execute("DELETE FROM faces WHERE asset_id = ?", (asset_id,))
        conn.execute("DELETE FROM task_results WHERE asset_id = ?", (asset_id,))

    @staticmethod
    def _delete(conn: sqlite3.Connection, ids: Sequence[int]) -> None:
        conn.executemany("DELETE FROM assets WHERE id = ?", [(i,) for i in ids])  # status, vectors, faces cascade

    def delete_assets(self, ids: Iterable[int]) -> int:
        ids = list(ids)
        with self.write() as conn:
            present = [i for i in ids if conn.execute("SELECT 1 FROM assets WHERE id = ?", (i,)).fetchone()]
            self._delete(conn, present)
        return len(present)

    def asset(self, asset_id: int) -> Asset | None:
        row = self.connection().execute(f"SELECT {_ASSET_COLUMNS} FROM assets WHERE id = ?", (asset_id,)).fetchone()
        return _asset(row) if row else None

    def asset_by_key(self, source: Source, key: str) -> Asset | None:
        row = self.connection().execute(
            f"SELECT {_ASSET_COLUMNS} FROM assets WHERE source = ? AND key = ?", (source, key)
        ).fetchone()
        return _asset(row) if row else None

    def assets(self, source: Source | None = None, *, indexed_only: bool = False, limit: int | None = None,
               offset: int = 0) -> list[Asset]:
        """Assets in the order they were added; `indexed_only` keeps those with results and no failure
        (what a thumbnail grid shows). `limit`/`offset` page through a large library."""
        where, args = self._where(source, indexed_only)
        args += [-1 if limit is None else limit, offset]
        rows = self.connection().execute(
            f"SELECT {_ASSET_COLUMNS} FROM assets a {where} ORDER BY id LIMIT ? OFFSET ?", args
        ).fetchall()
        return [_asset(r) for r in rows]

    @staticmethod
    def _where(source: Source | None, indexed_only: bool) -> tuple[str, list[Any]]:
        clauses, args = [], []
        if source:
            clauses.append("a.source = ?")
            args.append(source)
        if indexed_only:
            clauses.append("EXISTS (SELECT 1 FROM asset_status s WHERE s.asset_id = a.id)")
            clauses.append("NOT EXISTS (SELECT 1 FROM asset_status s WHERE s.asset_id = a.id AND s.state = 'failed')")
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", args

    def pending_assets(self, *, clip_model: str | None, face_model: str | None, source: Source | None = None,
                       retry_failed: bool = False, tasks: Sequence[TaskModel] = (),
                       face_options: str | None = None) -> list[Asset]:
        """Assets that still lack a result (done, or failed unless `retry_failed`) for a requested model
        (CLIP, faces, or another task's (task, model) in `tasks`); with `face_options`, also those whose
        faces were made with other options (a status stored before options were recorded counts as made
        with them)."""
        needs = [(t, m) for t, m in (("clip", clip_model), ("faces", face_model)) if m] + _task_models(tasks)
        if not needs:
            return []
        state = "AND s.state = 'done'" if retry_failed else ""
        clauses: list[str] = []
        args: list[Any] = []
        for task, model in needs:
            same = " AND (s.options IS NULL OR s.options = ?)" if task == "faces" and face_options else ""
            clauses.append(
                f"NOT EXISTS (SELECT 1 FROM asset_status s WHERE s.asset_id = a.id AND s.task = ? AND s.model = ? {state}{same})")
            args += [task, model] + ([face_options] if same else [])
        missing = " OR ".join(clauses)
        src = ""
        if source:
            src = "a.source = ? AND "
            args.insert(0, source)
        rows = self.connection().execute(
            f"SELECT {_ASSET_COLUMNS} FROM assets a WHERE {src}({missing}) ORDER BY id", args
        ).fetchall()
        return [_asset(r) for r in rows]

    # results ----------------------------------------------------------------------------------
    def record_result(self, result: AssetResult, *, clip_model: str | None, face_model: str | None,
                      face_options: str | None = None) -> None:
        self.record_results([result], clip_model=clip_model, face_model=face_model, face_options=face_options)

    def record_results(self, results: Sequence[AssetResult], *, clip_model: str | None, face_model: str | None,
                       face_options: str | None = None) -> None:
        """Store each asset's preview size, CLIP vector, faces and 'done' status, all in one transaction.
        Faces replace any earlier faces of the same model, so a re-run never duplicates them."""
        now = time.time()
        with self.write() as conn:
            for r in results:
                # Without a fingerprint the column is left out: the same statement as before migration 8.
                print_column, print_value = ("", ()) if r.fingerprint is None else (", fingerprint = ?", (r.fingerprint,))
                cur = conn.execute(f"UPDATE assets SET width = ?, height = ?{print_column} WHERE id = ?",
                                   (r.width, r.height, *print_value, r.asset_id))
                if cur.rowcount == 0:
                    continue  # deleted while it was being indexed
                if r.clip is not None:
                    if not clip_model:
                        raise ValueError("a CLIP vector needs the clip_model it came from")
                    conn.execute(
                        "INSERT OR REPLACE INTO clip_vectors (asset_id, model, vector) VALUES (?, ?, ?)",
                        (r.asset_id, clip_model, to_blob(r.clip)),
                    )
                    self._status(conn, r.asset_id, "clip", clip_model, "done", None, now)
                if r.faces is not None:
                    if not face_model:
                        raise ValueError("faces need the face_model they came from")
                    decisions.stash(conn, r.asset_id, face_model)
                    conn.execute("DELETE FROM faces WHERE asset_id = ? AND model = ?", (r.asset_id, face_model))
                    (high,) = conn.execute(
                        "SELECT max((SELECT id FROM face_id_high), coalesce((SELECT max(id) FROM faces), 0))").fetchone()
                    if r.faces:
                        conn.executemany(
                            "INSERT INTO faces (id, asset_id, model, x1, y1, x2, y2, score, landmarks, vector, found_by, "
                            "brightness, contrast, sharpness, lower_detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [
                                (high + i, r.asset_id, face_model, *map(float, f.box[:4]), float(f.score),
                                 to_blob(f.landmarks), to_blob(f.embedding), getattr(f, "found_by", "detector"),
                                 *(map(float, r.face_quality[i - 1]) if r.face_quality else (None,) * 4))
                                for i, f in enumerate(r.faces, 1)
                            ],
                        )
                    decisions.reapply(conn, r.asset_id, face_model, r.width, r.height)
                    self._status(conn, r.asset_id, "faces", face_model, "done", None, now, face_options)
                for (task, model), result in (r.results or {}).items():
                    _task_models([(task, model)])
                    conn.execute(
                        "INSERT OR REPLACE INTO task_results (asset_id, task, model, result) VALUES (?, ?, ?, ?)",
                        (r.asset_id, task, model, bytes(result)),
                    )
                    self._status(conn, r.asset_id, task, model, "done", None, now)

    def record_failure(self, asset_id: int, reason: str, *, clip_model: str | None, face_model: str | None,
                       tasks: Sequence[TaskModel] = (), face_options: str | None = None) -> None:
        """Mark the asset failed for every requested model, with the reason; drops partial results."""
        now = time.time()
        with self.write() as conn:
            if conn.execute("SELECT 1 FROM assets WHERE id = ?", (asset_id,)).fetchone() is None:
                return  # deleted while it was being indexed
            if clip_model:
                conn.execute("DELETE FROM clip_vectors WHERE asset_id = ? AND model = ?", (asset_id, clip_model))
                self._status(conn, asset_id, "clip", clip_model, "failed", reason, now)
            if face_model:
                decisions.stash(conn, asset_id, face_model)  # kept until the photo indexes again
                conn.execute("DELETE FROM faces WHERE asset_id = ? AND model = ?", (asset_id, face_model))
                self._status(conn, asset_id, "faces", face_model, "failed", reason, now, face_options)
            for task, model in _task_models(tasks):
                conn.execute("DELETE FROM task_results WHERE asset_id = ? AND task = ? AND model = ?", (asset_id, task, model))
                self._status(conn, asset_id, task, model, "failed", reason, now)

    @staticmethod
    def _status(conn: sqlite3.Connection, asset_id: int, task: str, model: str, state: str, reason: str | None,
                now: float, options: str | None = None) -> None:
        # Without options the column is left out (NULL): the same statement as before migration 6.
        columns, values = ("", ()) if options is None else (", options", (options,))
        conn.execute(
            f"INSERT OR REPLACE INTO asset_status (asset_id, task, model, state, reason, updated_at{columns}) "
            f"VALUES (?, ?, ?, ?, ?, ?{', ?' * len(values)})",
            (asset_id, task, model, state, reason, now, *values),
        )

    # reading ----------------------------------------------------------------------------------
    def stats(self, *, clip_model: str | None = None, face_model: str | None = None) -> dict[str, int]:
        """Counts: assets; indexed (results for every model asked, or all recorded ones, and no failure);
        failed; pending; faces; clip. Give the models to count only their results."""
        conn = self.connection()
        wanted = [(t, m) for t, m in (("clip", clip_model), ("faces", face_model)) if m]
        if wanted:
            status_filter = " OR ".join("(task = ? AND model = ?)" for _ in wanted)
            args: list[Any] = [x for pair in wanted for x in pair]
            row = conn.execute(
                f"SELECT count(*) FILTER (WHERE n_done = ?), count(*) FILTER (WHERE n_failed > 0) FROM ("
                f" SELECT asset_id, sum(state = 'done') AS n_done, sum(state = 'failed') AS n_failed"
                f" FROM asset_status WHERE {status_filter} GROUP BY asset_id)",
                [len(wanted), *args],
            ).fetchone()
        else:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE n_failed = 0), count(*) FILTER (WHERE n_failed > 0) FROM ("
                " SELECT asset_id, sum(state = 'failed') AS n_failed FROM asset_status GROUP BY asset_id)"
            ).fetchone()
        assets = conn.execute("SELECT count(*) FROM assets").fetchone()[0]
        faces = conn.execute(*(("SELECT count(*) FROM faces WHERE model = ?", (face_model,)) if face_model
                               else ("SELECT count(*) FROM faces",))).fetchone()[0]
        clip = conn.execute(*(("SELECT count(*) FROM clip_vectors WHERE model = ?", (clip_model,)) if clip_model
                              else ("SELECT count(*) FROM clip_vectors",))).fetchone()[0]
        indexed, failed = row[0] or 0, row[1] or 0
        return {
            "assets": assets,
            "indexed": indexed,
            "failed": failed,
            "pending": assets - indexed - failed,
            "faces": faces,
            "clip": clip,
        }

    def result_counts(self) -> dict[str, dict[str, int]]:
        """How many assets hold a result of each other task, per model: {"tags": {"tiny-tagger": 12}}."""
        counts: dict[str, dict[str, int]] = {}
        for task, model, n in self.connection().execute(
            "SELECT task, model, count(*) FROM task_results GROUP BY task, model ORDER BY task, model"
        ):
            counts.setdefault(task, {})[model] = n
        return counts

    def task_results(self, task: str, model: str | None = None) -> list[TaskResult]:
        """What `task` returned for each asset (of one model, if given), in asset order."""
        where, args = ("WHERE r.task = ? AND r.model = ?", [task, model]) if model else ("WHERE r.task = ?", [task])
        rows = self.connection().execute(
            f"SELECT a.id, a.source, a.key, r.task, r.model, r.result FROM task_results r JOIN assets a ON a.id = r.asset_id"
            f" {where} ORDER BY a.id, r.model", args
        ).fetchall()
        return [TaskResult(row[0], row[1], row[2], row[3], row[4], json.loads(row[5])) for row in rows]

    def failures(self, *, limit: int | None = None) -> list[Failure]:
        """Every failed (asset, model) with its reason, most recent first."""
        rows = self.connection().execute(
            "SELECT a.id, a.source, a.key, s.task, s.model, s.reason FROM asset_status s JOIN assets a ON a.id = s.asset_id"
            " WHERE s.state = 'failed' ORDER BY s.updated_at DESC, a.id LIMIT ?",
            (-1 if limit is None else limit,),
        ).fetchall()
        return [Failure(*r) for r in rows]

    def clip_vectors(self, model: str) -> tuple[np.ndarray, np.ndarray]:
        """(asset ids (N,) int64, vectors (N, D) float32) of one CLIP model, ordered by asset id."""
        rows = self.connection().execute(
            "SELECT asset_id, vector FROM clip_vectors WHERE model = ? ORDER BY asset_id", (model,)
        ).fetchall()
        return np.fromiter((r[0] for r in rows), np.int64, len(rows)), _stack([r[1] for r in rows])

    def clip_vector(self, asset_id: int, model: str) -> np.ndarray | None:
        row = self.connection().execute(
            "SELECT vector FROM clip_vectors WHERE asset_id = ? AND model = ?", (asset_id, model)
        ).fetchone()
        return from_blob(row[0]).copy() if row else None

    def clip_revision(self, model: str) -> tuple[int, int]:
        """Changes whenever vectors of `model` are added, replaced or deleted (for caches of the matrix)."""
        row = self.connection().execute(
            "SELECT count(*), coalesce(max(rowid), 0) FROM clip_vectors WHERE model = ?", (model,)
        ).fetchone()
        return int(row[0]), int(row[1])

    def clip_models(self) -> list[str]:
        """The CLIP models this library holds vectors of."""
        return [r[0] for r in self.connection().execute("SELECT DISTINCT model FROM clip_vectors ORDER BY model")]

    def face_models(self) -> list[str]:
        return [r[0] for r in self.connection().execute("SELECT DISTINCT model FROM faces ORDER BY model")]

    def face_vectors(self, face_model: str) -> tuple[np.ndarray, np.ndarray]:
        """(face ids (N,) int64, vectors (N, D) float32) of one face model, ordered by face id."""
        rows = self.connection().execute(
            "SELECT id, vector FROM faces WHERE model = ? ORDER BY id", (face_model,)
        ).fetchall()
        return np.fromiter((r[0] for r in rows), np.int64, len(rows)), _stack([r[1] for r in rows])

    def faces(self, *, asset_id: int | None = None, model: str | None = None,
              ids: Sequence[int] | None = None) -> list[StoredFace]:
        """Face boxes and landmarks (without vectors), filtered by asset, model and/or face ids."""
        clauses: list[str] = []
        args: list[Any] = []
        if asset_id is not None:
            clauses.append("asset_id = ?")
            args.append(asset_id)
        if model:
            clauses.append("model = ?")
            args.append(model)
        if ids is not None:
            clauses.append(f"id IN ({','.join('?' * len(ids))})")
            args.extend(int(i) for i in ids)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self.connection().execute(
            f"SELECT id, asset_id, model, x1, y1, x2, y2, score, landmarks FROM faces {where} ORDER BY id", args
        ).fetchall()
        return [
            StoredFace(r[0], r[1], r[2], (r[3], r[4], r[5], r[6]), r[7], from_blob(r[8]).reshape(-1, 2).copy())
            for r in rows
        ]
