"""The index job: bring a source's assets into the library and compute CLIP vectors and faces (and any
other task a model class serves, `TaskSpec`) for those that lack them, several assets at a time.

Each worker takes one asset through the whole pipeline (load or download, decode, CLIP, faces), so the
cores stay busy with decoding and inference alike and the engine's parallel sessions (OpenVINO streams)
each get a caller. The job thread only stores what the workers finish, each asset complete in one
transaction, so a kill loses only the images in flight.

Qt-free: the GUI runs `IndexJob.run()` in a QRunnable and forwards the plain `progress` / `failure`
callbacks as signals; the CLI runs the same job with a terminal progress bar. `pause()`, `resume()` and
`cancel()` may be called from any thread and take effect within a second.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, astuple, dataclass, field
from typing import Any, Literal, Protocol
from collections.abc import Callable, Sequence

import numpy as np
import orjson

from immich_ml_desktop.errors import InvalidInputError, LibraryError, SourceUnavailableError, UserError
from immich_ml_desktop.library.folders import SyncResult
from immich_ml_desktop.library.store import Asset, AssetResult, LibraryStore
from immich_ml_desktop.models.base import ModelTask, ModelType
from immich_ml_desktop.models.engine import Engine, Face
from immich_ml_desktop.models.images import DecodedImage
from immich_ml_desktop.models.predict import Entry, run_entries, to_json
from immich_ml_desktop.models.registry import model_class, served_tasks
from immich_ml_desktop.server.answer_cache import AnswerCache, answer_key
from immich_ml_desktop.services.face_passes import PASSES, check_passes, detect_faces_with_fallback
from immich_ml_desktop.services.face_quality import measure as measure_face
from immich_ml_desktop.services.face_quality import photo_fingerprint

log = logging.getLogger(__name__)

State = Literal["scanning", "loading", "indexing", "paused", "cancelled", "finished"]
# How long a blocked wait sleeps before it looks at cancel/pause again.
_POLL = 0.1


class IndexSource(Protocol):
    """Where assets come from (local folders, an Immich server). `load` raises `SourceUnavailableError`
    when the source as a whole cannot be read (server down, key revoked): the job stops instead of
    marking every remaining asset failed."""

    kind: str  # a source may also set `parallel_loads`: how many `load` calls are worth running at once

    def sync(self, store: LibraryStore) -> SyncResult: ...

    def load(self, asset: Asset) -> DecodedImage: ...


@dataclass(frozen=True)
class TaskSpec:
    """Another task to run on every asset, asked as Immich asks for a task: every image type of `task`
    whose class serves `model`, in one request (`options` per type); the answer under the task's key is
    stored per asset, task and model (`LibraryStore.task_results`)."""

    task: str
    model: str
    options: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> TaskSpec:
        """`TASK=MODEL`, e.g. `tags=tiny-tagger` or `ocr=PP-OCRv5_mobile`."""
        task, sep, model = text.partition("=")
        if not sep or not task.strip() or not model.strip():
            raise UserError(f"{text!r} is not TASK=MODEL (e.g. ocr=PP-OCRv5_mobile); see `immich-ml-desktop models list --classes`.")
        return cls(task.strip(), model.strip())

    def entries(self, engine: Engine) -> list[Entry]:
        """The request's entries; a clear error when no model class serves the model for the task."""
        if self.task in ("clip", "facial-recognition", "faces"):
            raise UserError(f"CLIP and faces have their own models: choose them with --clip-model/--face-model, not {self.task}={self.model}.")
        types = [t for k, t in served_tasks() if k == self.task and model_class(k, t, self.model, engine.cache_dirs)]
        entries = [Entry(self.task, t, self.model, self.options.get(t, {})) for t in types]
        entries = [e for e in entries if not e.needs_text]
        if not entries:
            raise UserError(
                f"No model class here serves {self.model!r} for a task {self.task!r} on images; "
                "see `immich-ml-desktop models list --classes`."
            )
        return entries


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
    no_preview: list[str] = field(default_factory=list)  # Immich assets without a preview yet: not indexed
    results: int = 0  # other tasks' results stored in this run (one per asset and TaskSpec)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Outcome:
    """What a worker made of one asset: a result to store, a failure reason, or nothing (not started)."""

    asset: Asset
    result: AssetResult | None = None
    error: str | None = None
    faces: int = 0
    results: int = 0


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


def check_options(face_min_score: float, workers: int | None = None) -> None:
    """Refuse options no index can be made with: a face threshold outside 0..1 finds no face (or every
    blob) and the photos would be stored as done; `workers` must be a count of at least one."""
    if not 0.0 <= face_min_score <= 1.0:  # NaN fails too
        raise InvalidInputError(
            f"The face detection threshold must be between 0 and 1 (Immich's default is 0.7), not {face_min_score:g}."
        )
    if workers is not None and workers < 1:
        raise InvalidInputError(f"The number of photos worked on at once must be at least 1, not {workers}.")


def immich_requests(clip_model: str | None, face_model: str | None, face_min_score: float) -> list[list[Entry]]:
    """The `/predict` entries Immich's smartSearch and faceDetection jobs send for these models and options
    (server/src/repositories/machine-learning.repository.ts: `encodeImage`, `detectFaces`)."""
    requests = []
    if clip_model:
        requests.append([Entry(ModelTask.SEARCH.value, ModelType.VISUAL.value, clip_model, {})])
    if face_model:
        requests.append([
            Entry(ModelTask.FACIAL_RECOGNITION.value, ModelType.DETECTION.value, face_model, {"minScore": face_min_score}),
            Entry(ModelTask.FACIAL_RECOGNITION.value, ModelType.RECOGNITION.value, face_model, {}),
        ])
    return requests


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
        face_passes: Sequence[str] = PASSES,
        progress: Callable[[IndexProgress], None] | None = None,
        failure: Callable[[Asset, str], None] | None = None,
        workers: int | None = None,
        retry_failed: bool = False,
        progress_interval: float = 0.1,
        tasks: Sequence[TaskSpec] = (),
        answers: AnswerCache | None = None,
    ) -> None:
        if not clip_model and not face_model and not tasks:
            raise UserError("Choose a CLIP model, a face model or both to index with.")
        check_options(face_min_score, workers)
        # Which of the library's own passes run where Immich's finds no face. Not part of `_face_options`:
        # a change applies to the photos indexed from then on, rather than redoing the whole library.
        self.face_passes = tuple(check_passes(face_passes))
        self.store = store
        self.engine = engine
        self.source = source
        self.clip_model = clip_model or None
        self.face_model = face_model or None
        self.face_min_score = face_min_score
        # Stored with each photo's faces: a run with another threshold redoes the photos made otherwise.
        self._face_options = f"minScore={face_min_score:g}"
        self.tasks = list(dict.fromkeys(tasks))  # each (task, model) once
        # Where the source knows the bytes Immich sends its ML service (an Immich source's previews), the
        # CLIP and first-pass face answers go into `answers` too, under the request Immich makes for them:
        # `serve` then answers Immich's own jobs from them without running a model (`immich send`).
        self.answers = answers
        self._answer_requests: list[tuple[list[Entry], str | None]] = []
        self._task_entries: list[tuple[TaskSpec, list[Entry]]] = []
        self._progress_cb = progress
        self._failure_cb = failure
        # Assets in progress at once: one more than the engine's parallel sessions, so one is being
        # decoded while the others are in the models; a network source may ask for more (downloads wait).
        self.workers = max(1, workers or max(engine.parallel + 1, getattr(source, "parallel_loads", 0)))
        self.retry_failed = retry_failed
        self.progress_interval = progress_interval
        self._running = threading.Event()
        self._running.set()
        self._cancel = threading.Event()
        self._rate = _Rate()
        self._last_emit = 0.0
        self._done = self._failed = self._total = self._faces = self._results = 0
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
        self._done = self._failed = self._total = self._faces = self._results = 0  # a job object may be run again
        self._emit("scanning", force=True)
        try:
            scan = self.source.sync(self.store)
            pending = [] if self.cancelled else self.store.pending_assets(
                clip_model=self.clip_model, face_model=self.face_model, source=self.source.kind,  # type: ignore[arg-type]
                retry_failed=self.retry_failed, tasks=self._task_keys, face_options=self._face_options,
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
            images_per_second=round(self._done / seconds, 2) if seconds > 0 else 0.0, no_preview=scan.no_preview,
            results=self._results,
        )

    @property
    def _task_keys(self) -> list[tuple[str, str]]:
        return [(t.task, t.model) for t in self.tasks]

    def _load_models(self) -> Any:
        """Load every model before the first image, so a missing model fails the job, not each image."""
        clip = self.engine.clip_visual(self.clip_model) if self.clip_model else None
        if self.face_model:
            self.engine.get_model(ModelTask.FACIAL_RECOGNITION, ModelType.DETECTION, self.face_model)
            self.engine.get_model(ModelTask.FACIAL_RECOGNITION, ModelType.RECOGNITION, self.face_model)
        self._task_entries = [(spec, spec.entries(self.engine)) for spec in self.tasks]
        for entry in (e for _, entries in self._task_entries for e in entries):
            self.engine.get_model(entry.task, entry.type, entry.name)
        self._answer_requests = []
        if self.answers is not None:
            requests = immich_requests(self.clip_model, self.face_model, self.face_min_score)
            self._answer_requests = [(entries, answer_key(self.engine, entries)) for entries in requests]
        return clip

    def _index(self, pending: list[Asset], clip: Any) -> None:
        todo: deque[Asset] = deque(pending)
        inflight: set[Future[_Outcome]] = set()
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="index")
        try:
            while not self.cancelled:
                while todo and self._running.is_set() and not self.cancelled and len(inflight) < 2 * self.workers:
                    inflight.add(pool.submit(self._work, todo.popleft(), clip))
                if not inflight:
                    if todo and self._wait_while_paused():  # paused, and everything started is stored
                        continue
                    break  # all done, or cancelled
                finished, inflight = wait(inflight, timeout=_POLL, return_when=FIRST_COMPLETED)
                outcomes = [f.result() for f in finished]  # a SourceUnavailableError stops the job here
                todo.extendleft(o.asset for o in outcomes if o.result is None and o.error is None)
                self._collect(outcomes)
        finally:
            # On cancel, do not wait for a big file still decoding: its result is dropped anyway.
            pool.shutdown(wait=not self.cancelled, cancel_futures=True)

    def _work(self, asset: Asset, clip: Any) -> _Outcome:
        """One asset through the whole pipeline (worker thread); a bad file becomes a reason, not an
        exception. An asset whose turn comes while the job is paused or cancelled is handed back untouched."""
        outcome = _Outcome(asset)
        if self.paused or self.cancelled:
            return outcome
        self._current = asset.key
        try:
            image: DecodedImage = self.source.load(asset)
            if image.digest and self._answer_requests:
                vector, first = self._answer_as_immich_asks(image)
            else:
                vector = clip.embed(clip.transform(image.pil)[np.newaxis])[0] if clip is not None else None
                first = None
            faces = quality = fingerprint = None
            if self.face_model:
                faces = detect_faces_with_fallback(self.engine, self.face_model, image, self.face_min_score, first,
                                                   passes=self.face_passes)
                outcome.faces = len(faces)
                quality = [astuple(measure_face(image.bgr, f.landmarks)) for f in faces]
                fingerprint = photo_fingerprint(image.bgr)
            results = {  # what /predict would answer under the task's key, for the same image
                (spec.task, spec.model): to_json(run_entries(self.engine, entries, image=image)[spec.task])
                for spec, entries in self._task_entries
            }
            outcome.results = len(results)
            outcome.result = AssetResult(asset.id, image.width, image.height, vector, faces, results or None, quality,
                                         fingerprint)
        except SourceUnavailableError:
            raise  # the whole source is down, not this asset: stop here; a later run goes on from here
        except Exception as e:  # noqa: BLE001 - any bad file is recorded and the job goes on
            outcome.error = describe_error(e)
        return outcome

    def _answer_as_immich_asks(self, image: DecodedImage) -> tuple[np.ndarray | None, list[Face] | None]:
        """CLIP vector and first-pass faces computed as `/predict` computes them for Immich's own requests,
        their answers kept in the answer cache; the library stores the very values of those answers."""
        assert self.answers is not None and image.digest
        vector, first = None, None
        for entries, key in self._answer_requests:
            outputs: dict[tuple[str, str], Any] = {}
            answer = run_entries(self.engine, entries, image=image, outputs=outputs)
            if key is not None:
                self.answers.put(image.digest, key, to_json(answer), origin="index")
            if entries[0].task == ModelTask.SEARCH.value:
                vector = np.asarray(orjson.loads(answer[ModelTask.SEARCH.value]), dtype=np.float32)
            else:
                found = outputs[(ModelTask.FACIAL_RECOGNITION.value, ModelType.DETECTION.value)]
                first = [
                    Face(box=box, score=float(score), landmarks=marks,
                         embedding=np.asarray(orjson.loads(face["embedding"]), dtype=np.float32))
                    for box, score, marks, face in zip(found["boxes"], found["scores"], found["landmarks"],
                                                       answer[ModelTask.FACIAL_RECOGNITION.value])
                ]
        return vector, first

    def _collect(self, outcomes: list[_Outcome]) -> None:
        """Store what the workers finished (one transaction) and report it."""
        results = [o.result for o in outcomes if o.result is not None]
        if results:
            self.store.record_results(results, clip_model=self.clip_model, face_model=self.face_model,
                                      face_options=self._face_options)
        for o in outcomes:
            if o.error is not None:
                self._fail(o.asset, o.error)
            elif o.result is not None:
                self._done += 1
                self._faces += o.faces
                self._results += o.results
                self._rate.add(self._done)
                self._emit("indexing")

    def _fail(self, asset: Asset, reason: str) -> None:
        log.info("Cannot index %s: %s", asset.key, reason)
        self.store.record_failure(asset.id, reason, clip_model=self.clip_model, face_model=self.face_model, tasks=self._task_keys,
                                  face_options=self._face_options)
        self._done += 1
        self._failed += 1
        self._rate.add(self._done)
        if self._failure_cb is not None:
            self._failure_cb(asset, reason)
        self._emit("indexing")

    def _wait_while_paused(self) -> bool:
        """Block while paused (after everything started was stored); False once cancelled."""
        if not self._running.is_set() and not self.cancelled:
            self._emit("paused", force=True)
            while not self._running.wait(_POLL):
                pass
            if not self.cancelled:
                self._rate.restart(self._done)
                self._emit("indexing", force=True)
        return not self.cancelled

    def _emit(self, state: State, force: bool = False) -> None:
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
