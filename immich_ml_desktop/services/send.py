"""`immich send`: get what the library computed into Immich, through Immich's own ML jobs.

Immich's API takes no embedding: vectors reach it only as answers of its ML service. So sending is: our
ML server (answering from the answer cache, where `immich index` left the answers of Immich's own requests
for its previews) goes first in Immich's ML URLs, Immich's smartSearch and faceDetection jobs (OCR where the
library has it) are queued for the assets that lack them, and when the queues are empty Immich's ML URLs are
put back as they were. Before the URLs change, they are written to a state file, so that a send that is
killed or crashes is undone by the next `send` or by `send --restore`.

Immich's forced face detection deletes every face it detected and the people left without faces: a send
never forces it (`force` re-sends CLIP and OCR only).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

from immich_ml_desktop.errors import ImmichPermissionError, InvalidInputError
from immich_ml_desktop.immich.client import ImmichClient
from immich_ml_desktop.paths import config_dir
from immich_ml_desktop.services import immich_ml
from immich_ml_desktop.services.immich_ml import MlConfig, QueueCounts, QueueWatch

log = logging.getLogger(__name__)

# Immich's queue for each kind of answer, and the queue that groups detected faces (no ML request).
SEND_QUEUES = {"clip": "smartSearch", "faces": "faceDetection", "ocr": "ocr"}
AFTER_FACES = "facialRecognition"
SETTLE_POLLS = 2  # empty queues this many polls in a row: a finished job may still queue the next
STALL_SECONDS = 600.0  # queues that hold jobs but have not moved for this long (paused, workers stuck): stop


def state_path() -> Path:
    return config_dir() / "send-state.json"


@dataclass
class SendState:
    """What a send changed in Immich, written before it changes it."""

    server: str
    urls_before: list[str]
    our_url: str
    started: float
    pid: int

    def save(self, path: Path | None = None) -> None:
        """Atomically and durably: this file is what puts Immich's ML URLs back after a crash."""
        path = path or state_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".send-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(asdict(self), f, indent=2)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path | None = None) -> SendState | None:
        path = path or state_path()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(str(raw["server"]), [str(u) for u in raw["urls_before"]], str(raw["our_url"]),
                       float(raw["started"]), int(raw["pid"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InvalidInputError(f"The send state file {path} is damaged ({e}): put Immich's ML URLs back by hand "
                                    "(Administration > Machine Learning) and delete the file.") from None


def restore_urls(client: ImmichClient, state: SendState, path: Path | None = None) -> list[str]:
    """Put Immich's ML URLs back as `state` found them, then forget the state. -> the URLs now."""
    if state.server.rstrip("/") != client.base_url.rstrip("/"):
        raise InvalidInputError(f"The unfinished send was to {state.server}, not {client.base_url}: "
                                f"run `immich send --restore --server {state.server}`.")
    config = client.system_config()
    if config["machineLearning"]["urls"] != state.urls_before:
        config["machineLearning"]["urls"] = state.urls_before
        config = client.update_system_config(config)
    (path or state_path()).unlink(missing_ok=True)
    return list(config["machineLearning"]["urls"])


@dataclass
class QueueProgress:
    name: str
    remaining: int
    done: int
    per_second: float | None
    eta: float | None


@dataclass
class SendProgress:
    state: str  # "sending", "finished", "cancelled"
    queues: list[QueueProgress]
    from_library: int  # answers our server gave from the answer cache
    computed: int  # answers it computed (not in the cache: other models or options, new assets)
    errors: int
    seconds: float


@dataclass
class SendSummary:
    server: str
    ml_url: str
    jobs: list[str]
    urls_restored: list[str]
    from_library: int
    computed: int
    errors: int
    seconds: float
    cancelled: bool
    done: dict[str, int] = field(default_factory=dict)  # queue -> jobs finished while we watched
    stalled: bool = False  # stopped because Immich's queues did not move for `stalled_after` seconds
    counted: bool = True  # False: the ML server runs elsewhere, its own page has the hits and computed answers
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def library_kinds(store: Any, clip_model: str, face_model: str) -> list[str]:
    """What a library holds to send: CLIP vectors of `clip_model`, faces of `face_model`, OCR results."""
    kinds = []
    if clip_model in store.clip_models():
        kinds.append("clip")
    if store.stats(face_model=face_model)["indexed"]:
        kinds.append("faces")
    if "ocr" in store.result_counts():
        kinds.append("ocr")
    if not kinds:
        raise InvalidInputError(f"The library {store.path} holds nothing of {clip_model} or {face_model} to send: "
                                "index the Immich server first (`immich index`, or Index on the Library page with Immich as the source).")
    return kinds


def differences(ml: MlConfig, clip_model: str | None, face_model: str | None, face_min_score: float) -> list[str]:
    """Where Immich will ask for other models or options than the library was indexed with: those answers
    are computed, not sent from the library."""
    notes = []
    if ml.clip_enabled and clip_model and ml.clip_model != clip_model:
        notes.append(f"Immich's smart search uses {ml.clip_model}, the library {clip_model}: its CLIP answers are computed")
    if ml.faces_enabled and face_model:
        if ml.face_model != face_model:
            notes.append(f"Immich's face detection uses {ml.face_model}, the library {face_model}: its faces are computed")
        elif abs(ml.face_min_score - face_min_score) > 1e-9:
            notes.append(f"Immich's face detection keeps faces scoring {ml.face_min_score:g}, the library {face_min_score:g}: "
                         "its faces are computed")
    return notes


class SendJob:
    """One send; `run()` blocks until Immich's queues are empty or `cancel()`. `stats` reads our ML server's
    counters (requests, errors, from_cache) — None where the ML server runs elsewhere."""

    def __init__(
        self,
        client: ImmichClient,
        ml_url: str,
        *,
        kinds: list[str],
        force: bool = False,
        stats: Callable[[], Any] | None = None,
        progress: Callable[[SendProgress], None] | None = None,
        poll: float = 2.0,
        warnings: list[str] | None = None,
        state_file: Path | None = None,
        stalled_after: float = STALL_SECONDS,
    ) -> None:
        unknown = [k for k in kinds if k not in SEND_QUEUES]
        if unknown or not kinds:
            raise InvalidInputError(f"Nothing to send: choose from {', '.join(SEND_QUEUES)}.")
        self.client = client
        self.ml_url = ml_url.rstrip("/")
        self.kinds = kinds
        self.force = force
        self.stats = stats
        self.progress = progress
        self.poll = poll
        self.warnings = list(warnings or [])
        self.state_file = state_file
        self.stalled_after = stalled_after
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _counters(self) -> tuple[int, int, int]:
        """(from the library, computed, errors) of our ML server since the send began."""
        if self.stats is None:
            return 0, 0, 0
        s = self.stats()
        return s.from_cache, s.requests - s.from_cache - s.errors - s.forwarded, s.errors

    def _check_key(self) -> None:
        """Refuse before anything changes in Immich: changing its ML URLs and starting its jobs needs an admin."""
        missing = self.client.check_key().missing
        lacks = list(dict.fromkeys(missing.get("register ML URL", []) + missing.get("run ML jobs", [])))
        if lacks:
            raise ImmichPermissionError(
                f"Sending needs an admin's API key that may change Immich's ML settings and start its jobs; this key "
                f"lacks {', '.join(lacks)}. Nothing was changed.")

    def run(self) -> SendSummary:
        started = time.monotonic()
        self._check_key()
        leftover = SendState.load(self.state_file)
        if leftover is not None:
            urls = restore_urls(self.client, leftover, self.state_file)
            self.warnings.append(f"An earlier send did not finish; Immich's ML URLs were put back first: {', '.join(urls)}")
        ml = immich_ml.read_ml_config(self.client)
        if not ml.enabled:
            raise InvalidInputError("Machine learning is switched off in Immich (Administration > Machine Learning): "
                                    "it would take no answers.")
        enabled = {"clip": ml.clip_enabled, "faces": ml.faces_enabled, "ocr": ml.ocr_enabled}
        for kind in self.kinds:
            if not enabled[kind]:
                self.warnings.append(f"Immich has {kind} switched off: not sent")
        jobs = [SEND_QUEUES[k] for k in self.kinds if enabled[k]]
        if not jobs:
            raise InvalidInputError("Immich has every kind of answer this library holds switched off: nothing to send.")
        watched = jobs + ([AFTER_FACES] if "faceDetection" in jobs else [])
        base = self._counters()
        SendState(self.client.base_url, list(ml.urls), self.ml_url, time.time(), os.getpid()).save(self.state_file)
        restored: list[str] = []
        watch = QueueWatch()
        counts: list[QueueCounts] = []
        try:
            immich_ml.register_url(self.client, self.ml_url)
            for name in jobs:
                # Forced face detection would delete Immich's faces and the people left without any.
                self.client.run_queue_command(name, "start", self.force and name != "faceDetection")
            empty_polls = 0
            last_move, last_seen = time.monotonic(), None
            stalled = False
            paused_said: set[str] = set()
            while not self.cancelled:
                counts = immich_ml.queue_counts(self.client, tuple(watched))
                for c in counts:
                    if c.paused and c.remaining and c.name not in paused_said:
                        paused_said.add(c.name)
                        self.warnings.append(f"Immich's {c.name} queue is paused: resume it in Immich "
                                             "(Administration > Jobs) for its jobs to run")
                self._report("sending", counts, watch, base, started)
                empty_polls = empty_polls + 1 if all(c.remaining == 0 for c in counts) else 0
                if empty_polls >= SETTLE_POLLS:
                    break
                seen = (tuple((c.name, c.waiting, c.active) for c in counts), self._counters())
                if seen != last_seen:
                    last_move, last_seen = time.monotonic(), seen
                elif time.monotonic() - last_move >= self.stalled_after:
                    stalled = True
                    self.warnings.append(f"Immich's queues have not moved for {self.stalled_after:.0f} s "
                                         f"({', '.join(f'{c.name} {c.remaining} left' for c in counts if c.remaining)}): "
                                         "stopped; run `immich send` again once Immich's jobs run")
                    break
                self._cancel.wait(self.poll)
        finally:
            state = SendState.load(self.state_file)
            if state is not None:
                restored = restore_urls(self.client, state, self.state_file)
        if counts:
            self._report("cancelled" if self.cancelled else "finished", counts, watch, base, started)
        from_library, computed, errors = (a - b for a, b in zip(self._counters(), base))
        if self.stats is not None and from_library + computed + errors == 0 and any(watch.done(c) for c in counts):
            self.warnings.append(f"Immich's jobs ran but never called {self.ml_url}: it cannot reach that address "
                                 "from where it runs, and used another of its ML URLs")
        return SendSummary(
            server=self.client.base_url, ml_url=self.ml_url, jobs=jobs, urls_restored=restored,
            from_library=from_library, computed=computed, errors=errors,
            seconds=round(time.monotonic() - started, 2), cancelled=self.cancelled,
            done={c.name: watch.done(c) for c in counts}, warnings=self.warnings, counted=self.stats is not None,
            stalled=stalled,
        )

    def _report(self, state: str, counts: list[QueueCounts], watch: QueueWatch, base: tuple[int, int, int],
                started: float) -> None:
        if self.progress is None:
            return
        from_library, computed, errors = (a - b for a, b in zip(self._counters(), base))
        queues = [QueueProgress(c.name, c.remaining, watch.done(c), watch.rate(c), watch.eta(c)) for c in counts]
        self.progress(SendProgress(state, queues, from_library, computed, errors, round(time.monotonic() - started, 1)))
