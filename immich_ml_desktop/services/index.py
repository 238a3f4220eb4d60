"""The index job: bring a source's assets into the library and compute CLIP vectors and faces for those
that lack them, with decoding in a small thread pool overlapped with inference.

Qt-free: the GUI runs `IndexJob.run()` in a QRunnable and forwards the plain `progress` / `failure`
callbacks as signals; the CLI runs the same job with a terminal progress bar. `pause()`, `resume()` and
`cancel()` may be called from any thread and take effect within a second. Results are stored a batch at
a time, each asset complete in one transaction, so a kill loses only the images in flight.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass
from typing import Any, Callable, Literal, Protocol

import numpy as np

from immich_ml_desktop.errors import LibraryError, SourceUnavailableError, UserError
from immich_ml_desktop.library.folders import SyncResult
from immich_ml_desktop.library.store import Asset, AssetResult, LibraryStore
from immich_ml_desktop.models.base import ModelTask, ModelType
from immich_ml_desktop.models.engine import Engine, Face
from immich_ml_desktop.models.images import DecodedImage
from immich_ml_desktop.services.face_passes import detect_faces_with_fallback

log = logging.getLogger(__name__)

State = Literal["scanning", "loading", "indexing", "paused", "cancelled", "finished"]
# How long a blocked wait sleeps before it looks at cancel/pause again.
_POLL = 0.1


class IndexSource(Protocol):
    """Where assets come from (local folders, an Immich server). `load` raises `SourceUnavailableError`
    when the source as a whole cannot be read (server down, key revoked): the job stops instead of
    marking every remaining asset failed."""

    kind: str

    def sync(self, store: LibraryStore) -> SyncResult: ...

    def load(self, asset: Asset) -> DecodedImage: ...


@dataclass(frozen=True)
class IndexProgress:
    state: State
    done: int  # images finished in this run, indexed or failed
    total: int  # images this run has to do
    failed: int
    images_per_second: float  # over the last few seconds of work (pauses excluded)
    eta_seconds: float | None
    current: str | None  # the file or remote id being worked on

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


@dataclass(frozen=True)
class IndexSummary:
    new: int
    changed: int
    removed: int
    unchanged: int
    total: int  # images this run had to do
    indexed: int
    failed: int
    faces: int  # faces found in this run
    cancelled: bool
    seconds: float
    images_per_second: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Prepared:
    asset: Asset
    image: DecodedImage | None = None
    pixels: np.ndarray | None = None  # CLIP-preprocessed (3, S, S)
    error: str | None = None


class _Rate:
    """Images per second over a sliding window of recent completions."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self.points: deque[tuple[float, int]] = deque()

    def add(self, done: int) -> None:
        now = time.monotonic()
        self.points.append((now, done))
        while len(self.points) > 2 and now - self.points[0][0] > self.window:
            self.points.popleft()

    def restart(self, done: int) -> None:
        """Forget the past (after a pause) so the pause does not drag the speed down."""
        self.points.clear()
        self.points.append((time.monotonic(), done))

    @property
    def per_second(self) -> float:
        if len(self.points) < 2:
            return 0.0
        (t0, d0), (t1, d1) = self.points[0], self.points[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0


def describe_error(e: BaseException) -> str:
    """A failure reason for the user: our own messages as they are, others with their type."""
    return str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"


class IndexJob:
    def __init__(
        self,
        store: LibraryStore,
        engine: Engine,
        source: IndexSource,
        *,
        clip_model: str | None,
        face_model: str | None,
        face_min_score: float = 0.7,
        progress: Callable[[IndexProgress], None] | None = None,
        failure: Callable[[Asset, str], None] | None = None,
        decode_workers: int = 2,
        batch_size: int = 8,
        retry_failed: bool = False,
        progress_interval: float = 0.1,
    ) -> None:
        if not clip_model and not face_model:
            raise UserError("Choose a CLIP model, a face model or both to index with.")
        self.store = store
        self.engine = engine
        self.source = source
        self.clip_model = clip_model or None
        self.face_model = face_model or None
        self.face_min_score = face_min_score
        self._progress_cb = progress
        self._failure_cb = failure
        self.decode_workers = max(1, decode_workers)
        self.batch_size = max(1, batch_size)
        self.retry_failed = retry_failed
        self.progress_interval = progress_interval
        self._running = threading.Event()
        self._running.set()
        self._cancel = threading.Event()
        self._rate = _Rate()
        self._last_emit = 0.0
        self._state: State = "scanning"
        self._done = self._failed = self._total = self._faces = 0
        self._current: str | None = None

    # control (any thread) ---------------------------------------------------------------------
    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def cancel(self) -> None:
        self._cancel.set()
        self._running.set()  # wake a paused job so it can stop

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    # the job ----------------------------------------------------------------------------------
    def run(self) -> IndexSummary:
        """Scan, then index everything pending; blocks until finished or cancelled."""
        started = time.monotonic()
        self._done = self._failed = self._total = self._faces = 0  # a job object may be run again
        self._emit("scanning", force=True)
        try:
            scan = self.source.sync(self.store)
            pending = [] if self.cancelled else self.store.pending_assets(
                clip_model=self.clip_model, face_model=self.face_model, source=self.source.kind,  # type: ignore[arg-type]
                retry_failed=self.retry_failed,
            )
            self._total = len(pending)
            if pending and not self.cancelled:
                self._emit("loading", force=True)
                clip = self._load_models()
                self._rate.restart(0)
                self._emit("indexing", force=True)
                self._index(pending, clip)
        except sqlite3.Error as e:
            raise LibraryError(f"Writing to the library {self.store.path} failed: {e}.") from None
        seconds = time.monotonic() - started
        self._current = None
        self._emit("cancelled" if self.cancelled else "finished", force=True)
        return IndexSummary(
            new=scan.new, changed=scan.changed, removed=scan.removed, unchanged=scan.unchanged,
            total=self._total, indexed=self._done - self._failed, failed=self._failed, faces=self._faces,
            cancelled=self.cancelled, seconds=round(seconds, 3),
            images_per_second=round(self._done / seconds, 2) if seconds > 0 else 0.0,
        )

    def _load_models(self) -> Any:
        """Load every model before the first image, so a missing model fails the job, not each image."""
        clip = self.engine.clip_visual(self.clip_model) if self.clip_model else None
        if self.face_model:
            self.engine.get_model(ModelTask.FACIAL_RECOGNITION, ModelType.DETECTION, self.face_model)
            self.engine.get_model(ModelTask.FACIAL_RECOGNITION, ModelType.RECOGNITION, self.face_model)
        return clip

    def _index(self, pending: list[Asset], clip: Any) -> None:
        todo = iter(pending)
        inflight: deque[Future[_Prepared]] = deque()
        window = self.batch_size + 2 * self.decode_workers  # decoded ahead while the models work
        pool = ThreadPoolExecutor(self.decode_workers, thread_name_prefix="index-decode")
        try:
            def refill() -> None:
                while len(inflight) < window and not self.cancelled:
                    asset = next(todo, None)
                    if asset is None:
                        return
                    inflight.append(pool.submit(self._prepare, asset, clip))

            refill()
            while inflight and self._wait_while_paused():
                batch: list[_Prepared] = []
                while inflight and len(batch) < self.batch_size and not self.cancelled:
                    if batch and not inflight[0].done():
                        break  # run what is ready rather than wait for the decoders
                    prepared = self._result(inflight[0])
                    if prepared is None:
                        break
                    inflight.popleft()
                    batch.append(prepared)
                    refill()
                if batch:
                    self._process(batch, clip)
        finally:
            # On cancel, do not wait for a big file still decoding: its result is dropped anyway.
            pool.shutdown(wait=not self.cancelled, cancel_futures=True)

    def _result(self, future: Future[_Prepared]) -> _Prepared | None:
        while not self.cancelled:
            try:
                return future.result(timeout=_POLL)
            except FutureTimeout:
                continue
        return None

    def _prepare(self, asset: Asset, clip: Any) -> _Prepared:
        """Decode and preprocess one asset (decode thread); failures become a reason, not an exception."""
        prepared = _Prepared(asset)
        if self.cancelled:
            prepared.error = "cancelled"
            return prepared
        try:
            prepared.image = self.source.load(asset)
            if clip is not None:
                prepared.pixels = clip.transform(prepared.image.pil)
            if self.face_model:
                prepared.image.bgr  # computed here, off the inference thread
        except SourceUnavailableError:
            raise  # the whole source is down, not this asset: stop here; a later run goes on from here
        except Exception as e:  # noqa: BLE001 - any bad file is recorded and the job goes on
            prepared.error = describe_error(e)
        return prepared

    def _process(self, batch: list[_Prepared], clip: Any) -> None:
        good: list[_Prepared] = []
        for p in batch:
            if p.error is not None:
                self._fail(p.asset, p.error)
            else:
                good.append(p)
        vectors = self._clip_vectors(good, clip) if clip is not None else {}
        results: list[AssetResult] = []
        for p in good:
            if self.paused and results:  # store what is finished before waiting, so a pause loses nothing
                self._store(results)
                results = []
            if not self._wait_while_paused():
                break
            if p.asset.id in vectors and vectors[p.asset.id] is None:
                continue  # CLIP failed for it; already recorded
            self._current = p.asset.key
            faces: list[Face] | None = None
            if self.face_model:
                try:
                    faces = detect_faces_with_fallback(self.engine, self.face_model, p.image, self.face_min_score)  # type: ignore[arg-type]
                except Exception as e:  # noqa: BLE001
                    self._fail(p.asset, describe_error(e))
                    continue
                self._faces += len(faces)
            assert p.image is not None
            results.append(AssetResult(p.asset.id, p.image.width, p.image.height, vectors.get(p.asset.id), faces))
            p.image = None  # free the pixels early
            self._done += 1
            self._rate.add(self._done)
            self._emit("indexing")
        self._store(results)

    def _store(self, results: list[AssetResult]) -> None:
        if results:
            self.store.record_results(results, clip_model=self.clip_model, face_model=self.face_model)

    def _clip_vectors(self, good: list[_Prepared], clip: Any) -> dict[int, np.ndarray | None]:
        """One batched call; if it fails, image by image so that only the culprit is recorded failed."""
        if not good:
            return {}
        self._current = good[0].asset.key
        try:
            out = clip.embed(np.stack([p.pixels for p in good]))
            return {p.asset.id: out[i] for i, p in enumerate(good)}
        except Exception:  # noqa: BLE001
            vectors: dict[int, np.ndarray | None] = {}
            for p in good:
                try:
                    vectors[p.asset.id] = clip.embed(p.pixels[np.newaxis])[0]  # type: ignore[index]
                except Exception as e:  # noqa: BLE001
                    self._fail(p.asset, describe_error(e))
                    vectors[p.asset.id] = None
            return vectors

    def _fail(self, asset: Asset, reason: str) -> None:
        log.info("Cannot index %s: %s", asset.key, reason)
        self.store.record_failure(asset.id, reason, clip_model=self.clip_model, face_model=self.face_model)
        self._done += 1
        self._failed += 1
        self._rate.add(self._done)
        if self._failure_cb is not None:
            self._failure_cb(asset, reason)
        self._emit("indexing")

    def _wait_while_paused(self) -> bool:
        """Block while paused; False once cancelled."""
        if not self._running.is_set() and not self.cancelled:
            self._emit("paused", force=True)
            while not self._running.wait(_POLL):
                pass
            if not self.cancelled:
                self._rate.restart(self._done)
                self._emit("indexing", force=True)
        return not self.cancelled

    def _emit(self, state: State, force: bool = False) -> None:
        self._state = state
        if self._progress_cb is None:
            return
        now = time.monotonic()
        if not force and now - self._last_emit < self.progress_interval:
            return
        self._last_emit = now
        rate = self._rate.per_second
        remaining = self._total - self._done
        eta = remaining / rate if rate > 0 else (0.0 if remaining == 0 else None)
        self._progress_cb(IndexProgress(
            state=state, done=self._done, total=self._total, failed=self._failed,
            images_per_second=round(rate, 2), eta_seconds=None if eta is None else round(eta, 1), current=self._current,
        ))
