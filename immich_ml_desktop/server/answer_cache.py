"""`AnswerCache`: `/predict` answers kept by the SHA-256 of the image Immich sent and the exact entries.

`immich index` fills it with the answers of the previews it indexed (Immich sends the very same preview
bytes to its ML service, so their SHA-256 names them), the ML server with what it computed; the server
answers from it before running a model, byte for byte what it would have computed. A request for another
model or other options is another key, so it is never answered from an answer made with different ones.

One SQLite file (WAL, so an index run and the server can use it at once), answers zlib-compressed. It is
bounded: past `max_bytes` the least recently used answers go. Clearing it loses nothing but time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterable

from immich_ml_desktop.models.base import clean_name
from immich_ml_desktop.models.precision import file_key

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 2 * 1024**3  # about 200k photos' CLIP and face answers
TOUCH_AFTER = 3600.0  # a hit refreshes an answer's last use at most once an hour (a hit stays a read)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    image   TEXT NOT NULL,      -- SHA-256 of the image bytes, hex
    entries TEXT NOT NULL,      -- canonical entries (answer_key)
    answer  BLOB NOT NULL,      -- zlib of the exact JSON answer
    size    INTEGER NOT NULL,   -- bytes stored
    origin  TEXT NOT NULL,      -- 'index' or 'server'
    used_at REAL NOT NULL,
    PRIMARY KEY (image, entries)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS answers_by_use ON answers (used_at);
"""


def image_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entries_key(entries: Iterable[Any]) -> str:
    """The request's entries in one canonical string: task, type, model name and options of each (options
    missing and empty alike), sorted; `entries` are `models.predict.Entry`s (task, type, name, options)."""
    items = sorted((str(e.task), str(e.type), clean_name(e.name), e.options or {}) for e in entries)
    return json.dumps(items, sort_keys=True, separators=(",", ":"))


def answer_key(engine: Any, entries: list[Any]) -> str | None:
    """`entries_key` plus what computes them here: each model's file (path, size, modification time), the
    device and the precision. An answer made with another model file, device or precision (a vector a few
    units off in the last digit) is another key, so a hit is byte for byte what this engine would answer.
    None when a model is unknown or not on disk: nothing to look up, the request is computed (and fails
    there with the usual error)."""
    computed_with = []
    try:
        for e in sorted(entries, key=lambda e: (str(e.task), str(e.type))):
            model = engine.get_model(e.task, e.type, e.name, load=False)
            computed_with.append(f"{type(model).__name__}|{file_key(model.model_path)}")
    except Exception:  # noqa: BLE001 - no such model or file: computing answers with the real error
        return None
    runtime = engine.runtime_options
    computed_with.append(f"{getattr(engine.device, 'id', engine.device)}|{runtime.precision}")
    return entries_key(entries) + "|" + json.dumps(computed_with, separators=(",", ":"))


@dataclass(frozen=True)
class CacheStats:
    answers: int
    bytes: int
    max_bytes: int
    by_origin: dict[str, int]
    hits: int  # since this object was made
    misses: int


class AnswerCache:
    """Thread-safe; one per process is enough (each thread gets its own SQLite connection)."""

    def __init__(self, path: Path | str, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._local = threading.local()
        self._lock = threading.Lock()
        self._stored = -1  # bytes held, counted on first need
        self.hits = self.misses = 0
        self._connect()  # a clear error now rather than on the first request

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                conn = self._open()
            except sqlite3.DatabaseError as e:  # not a database (any more): it only held time, start afresh
                aside = self.path.with_name(f"{self.path.name}.damaged-{int(time.time())}")
                log.warning("The answer cache %s is damaged (%s); set aside as %s, starting an empty one",
                            self.path, e, aside.name)
                self.path.replace(aside)
                for extra in ("-wal", "-shm"):
                    self.path.with_name(self.path.name + extra).unlink(missing_ok=True)
                conn = self._open()
            self._local.conn = conn
        return conn

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # an answer lost in a power cut is computed again
            conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def get(self, image: str, entries: str) -> bytes | None:
        try:
            row = self._connect().execute(
                "SELECT answer, used_at FROM answers WHERE image = ? AND entries = ?", (image, entries)).fetchone()
        except sqlite3.Error as e:  # a damaged or locked cache costs time, never an answer
            log.warning("Answer cache %s unreadable (%s); computing instead", self.path, e)
            return None
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        now = time.time()
        if now - row[1] > TOUCH_AFTER:
            self._write("UPDATE answers SET used_at = ? WHERE image = ? AND entries = ?", (now, image, entries))
        return zlib.decompress(row[0])

    def put(self, image: str, entries: str, answer: bytes, origin: str = "server") -> None:
        blob = zlib.compress(answer, 1)
        if len(blob) > self.max_bytes:
            return
        if self._write("INSERT OR REPLACE INTO answers (image, entries, answer, size, origin, used_at) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (image, entries, blob, len(blob), origin, time.time())):
            with self._lock:
                if self._stored < 0:
                    self._stored = self._total()
                else:
                    self._stored += len(blob)
                over = self._stored > self.max_bytes
            if over:
                self._evict()

    def _write(self, sql: str, args: tuple[Any, ...]) -> bool:
        try:
            self._connect().execute(sql, args)
            return True
        except sqlite3.Error as e:  # a full disk or a read-only cache: answers are still computed
            log.warning("Cannot write the answer cache %s (%s)", self.path, e)
            return False

    def _total(self) -> int:
        return int(self._connect().execute("SELECT coalesce(sum(size), 0) FROM answers").fetchone()[0])

    def _evict(self) -> None:
        """Drop the least recently used answers down to 90% of the bound."""
        conn = self._connect()
        target = int(self.max_bytes * 0.9)
        with self._lock:
            total = self._total()
            try:
                conn.execute("BEGIN IMMEDIATE")
                for image, entries, size in conn.execute(
                        "SELECT image, entries, size FROM answers ORDER BY used_at").fetchall():
                    if total <= target:
                        break
                    conn.execute("DELETE FROM answers WHERE image = ? AND entries = ?", (image, entries))
                    total -= size
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                conn.execute("ROLLBACK")
                log.warning("Cannot trim the answer cache %s (%s)", self.path, e)
            self._stored = total

    def stats(self) -> CacheStats:
        conn = self._connect()
        rows = conn.execute("SELECT origin, count(*), coalesce(sum(size), 0) FROM answers GROUP BY origin").fetchall()
        return CacheStats(answers=sum(r[1] for r in rows), bytes=sum(r[2] for r in rows), max_bytes=self.max_bytes,
                          by_origin={r[0]: r[1] for r in rows}, hits=self.hits, misses=self.misses)

    def clear(self) -> int:
        """Forget every answer; returns how many there were."""
        conn = self._connect()
        count = conn.execute("SELECT count(*) FROM answers").fetchone()[0]
        conn.execute("DELETE FROM answers")
        conn.execute("VACUUM")
        with self._lock:
            self._stored = 0
        return int(count)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def open_answer_cache(max_mb: int, path: Path | None = None) -> AnswerCache | None:
    """The app's answer cache (`paths.answer_cache_path()`), bounded to `max_mb`; None when 0 or when it
    cannot be opened (a read-only cache folder): answers are then computed, as without it."""
    if max_mb <= 0:
        return None
    from immich_ml_desktop.paths import answer_cache_path

    try:
        return AnswerCache(path or answer_cache_path(), max_bytes=max_mb * 1024 * 1024)
    except (OSError, sqlite3.Error) as e:
        log.warning("No answer cache (%s): every answer is computed", e)
        return None
