"""Drive Immich's own ML jobs (admin key): register our ML server's URL, check models, start jobs, watch queues.

Immich takes the whole `SystemConfigDto` on `PUT /system-config`, so every change reads the config,
edits `machineLearning.urls` and writes all of it back.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable
from urllib.parse import urlsplit

from immich_ml_desktop.errors import InvalidInputError, UserError
from immich_ml_desktop.immich.client import ImmichClient
from immich_ml_desktop.models.base import ModelTask, ModelType

# The queues that run Immich's ML (`QueueName`), and the `machineLearning` section each needs enabled.
# facialRecognition groups the detected faces into people (no ML request of its own).
ML_QUEUES = {"smartSearch": "clip", "faceDetection": "facialRecognition", "facialRecognition": "facialRecognition",
             "ocr": "ocr"}
# Where failures show: Immich counts none of them (see QueueWatch).
FAILURES_HINT = ("Immich does not count failed ML jobs: they are in its server log ('Unable to run job handler'); "
                 "the requests our ML server answered with an error are on its Server page and in its log.")


@dataclass(frozen=True)
class MlConfig:
    """What Immich's `machineLearning` config says about the ML service."""

    enabled: bool
    urls: list[str]
    clip_enabled: bool
    clip_model: str
    faces_enabled: bool
    face_model: str
    face_min_score: float
    ocr_enabled: bool = False  # Immich 3.x: OCR of every new asset, on by default
    ocr_model: str = ""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MlConfig:
        ml = config["machineLearning"]
        ocr = ml.get("ocr") or {}  # absent before Immich 2.1
        return cls(
            enabled=bool(ml["enabled"]), urls=list(ml["urls"]),
            clip_enabled=bool(ml["clip"]["enabled"]), clip_model=ml["clip"]["modelName"],
            faces_enabled=bool(ml["facialRecognition"]["enabled"]), face_model=ml["facialRecognition"]["modelName"],
            face_min_score=float(ml["facialRecognition"]["minScore"]),
            ocr_enabled=bool(ocr.get("enabled")), ocr_model=str(ocr.get("modelName") or ""),
        )


def _same_url(a: str, b: str) -> bool:
    return a.strip().rstrip("/").lower() == b.strip().rstrip("/").lower()


def read_ml_config(client: ImmichClient) -> MlConfig:
    return MlConfig.from_config(client.system_config())


def register_url(client: ImmichClient, url: str) -> tuple[list[str], bool]:
    """Put `url` first in `machineLearning.urls`, keeping the others as fallbacks. -> (urls, changed)."""
    if not urlsplit(url).scheme or not urlsplit(url).hostname:
        raise InvalidInputError(f"{url!r} is not a URL Immich can call; give it as http://HOST:PORT.")
    url = url.strip().rstrip("/")
    config = client.system_config()
    urls = config["machineLearning"]["urls"]
    if urls and _same_url(urls[0], url):
        return urls, False
    wanted = [url] + [u for u in urls if not _same_url(u, url)]
    config["machineLearning"]["urls"] = wanted
    return client.update_system_config(config)["machineLearning"]["urls"], True


def unregister_url(client: ImmichClient, url: str) -> tuple[list[str], bool]:
    """Take `url` out of `machineLearning.urls` again. -> (urls, changed)."""
    config = client.system_config()
    urls = config["machineLearning"]["urls"]
    kept = [u for u in urls if not _same_url(u, url)]
    if kept == urls:
        return urls, False
    if not kept:
        raise InvalidInputError(
            f"{url} is Immich's only ML URL and Immich needs at least one. Add Immich's own ML service "
            "(e.g. http://immich-machine-learning:3003) in Administration > Machine Learning first."
        )
    config["machineLearning"]["urls"] = kept
    return client.update_system_config(config)["machineLearning"]["urls"], True


def reachable_url(immich_url: str, port: int, host: str = "") -> str:
    """Our ML server's URL as Immich sees it: `host`, else this machine's address on the route to Immich."""
    if host and host not in ("0.0.0.0", "::", "127.0.0.1", "localhost"):
        return f"http://{host}:{port}"
    target = urlsplit(immich_url if "://" in immich_url else f"http://{immich_url}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((target.hostname or "127.0.0.1", target.port or 80))  # UDP: sends nothing
            address = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    return f"http://{address}:{port}"


@dataclass
class ModelCheck:
    """One model Immich is configured for, and whether its files are in our cache."""

    task: str
    name: str
    present: bool
    missing: list[str] = field(default_factory=list)
    downloaded: bool = False


def check_models(engine: Any, ml: MlConfig, download: bool = False,
                 progress: Callable[..., None] | None = None) -> list[ModelCheck]:
    """Check (and with `download`, fetch) the CLIP, face and OCR models Immich will ask our server for."""
    wanted = []
    if ml.clip_enabled:
        wanted += [(ModelTask.SEARCH, t, ml.clip_model) for t in (ModelType.VISUAL, ModelType.TEXTUAL)]
    if ml.faces_enabled:
        wanted += [(ModelTask.FACIAL_RECOGNITION, t, ml.face_model) for t in (ModelType.DETECTION, ModelType.RECOGNITION)]
    if ml.ocr_enabled and ml.ocr_model:
        wanted += [(ModelTask.OCR, t, ml.ocr_model) for t in (ModelType.DETECTION, ModelType.RECOGNITION)]
    checks: dict[tuple[str, str], ModelCheck] = {}
    for task, model_type, name in wanted:
        check = checks.setdefault((task.value, name), ModelCheck(task.value, name, True))
        try:
            model = engine.get_model(task, model_type, name, load=False)
            missing = [str(p) for p in model.missing_files()]
        except UserError as e:  # a name this app cannot serve at all (e.g. an OCR model RapidOCR lacks)
            check.missing.append(str(e))
            check.present = False
            continue
        if missing and download:
            engine.download(model, progress=progress)
            check.downloaded = True
            missing = [str(p) for p in model.missing_files()]
        check.missing += missing
        check.present = check.present and not missing
    return list(checks.values())


@dataclass(frozen=True)
class QueueCounts:
    name: str
    waiting: int
    active: int
    completed: int
    failed: int
    paused: bool

    @property
    def remaining(self) -> int:
        return self.waiting + self.active


def queue_counts(client: ImmichClient, names: tuple[str, ...] = tuple(ML_QUEUES)) -> list[QueueCounts]:
    queues = client.queues()
    counts = []
    for name in names:
        stats = queues[name]["statistics"]
        counts.append(QueueCounts(name, stats["waiting"], stats["active"], stats["completed"], stats["failed"],
                                  bool(queues[name]["isPaused"])))
    return counts


def start_jobs(client: ImmichClient, names: list[str], force: bool = False) -> list[QueueCounts]:
    """Queue the assets for each ML job: those not yet processed, or all of them with `force`."""
    unknown = [n for n in names if n not in ML_QUEUES]
    if unknown:
        raise InvalidInputError(f"Unknown ML job {', '.join(unknown)}; choose from {', '.join(ML_QUEUES)}.")
    for name in names:
        client.run_queue_command(name, "start", force)
    return queue_counts(client, tuple(names))


class QueueWatch:
    """Progress, rate and ETA of Immich's queues from how fast their waiting + active count falls.

    Immich 3.1 removes finished jobs, so its `completed` count stays 0, and a job whose handler throws is
    logged but not counted in `failed`: the fall of the remaining count is the only progress it shows. A
    rise (new work queued) is not progress and does not count against it. The rate is over the last
    `window` seconds, so it follows the queue's current pace."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, window: float = 60.0) -> None:
        self.clock = clock
        self.window = window
        self._last: dict[str, int] = {}
        self._done: dict[str, int] = {}
        self._samples: dict[str, list[tuple[float, int]]] = {}  # (time, done so far)

    def _observe(self, counts: QueueCounts) -> float:
        now = self.clock()
        name = counts.name
        if name not in self._last:
            self._last[name], self._done[name], self._samples[name] = counts.remaining, 0, [(now, 0)]
        else:
            self._done[name] += max(0, self._last[name] - counts.remaining)
            self._last[name] = counts.remaining
            samples = self._samples[name]
            samples.append((now, self._done[name]))
            while len(samples) > 2 and now - samples[1][0] >= self.window:
                samples.pop(0)  # keep one sample at or beyond the window's start
        return now

    def done(self, counts: QueueCounts) -> int:
        """Jobs finished since the first sample."""
        self._observe(counts)
        return self._done[counts.name]

    def rate(self, counts: QueueCounts) -> float | None:
        """Jobs finished per second over the last `window` seconds; None before there is one."""
        now = self._observe(counts)
        first_time, first_done = self._samples[counts.name][0]
        finished = self._done[counts.name] - first_done
        return finished / (now - first_time) if now > first_time and finished else None

    def eta(self, counts: QueueCounts) -> float | None:
        """Seconds until the queue is empty at the current rate; None before a rate."""
        rate = self.rate(counts)
        if counts.remaining == 0:
            return 0.0
        return counts.remaining / rate if rate else None
