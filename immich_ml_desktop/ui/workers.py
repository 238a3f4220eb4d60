"""Background work for the window: QRunnable workers on a QThreadPool that report through signals.

Nothing slow (model loading, indexing, search, HTTP, downloads, server start) runs on the GUI thread;
a page hands a plain function to `run_task` and gets its result, its progress and its error back as
queued signals on the GUI thread.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any
from collections.abc import Callable

from PySide6.QtCore import QObject, QRunnable, QThread, QThreadPool, Signal

from immich_ml_desktop.errors import UserError

log = logging.getLogger(__name__)


class WorkerSignals(QObject):
    """Lives on the GUI thread, so every emit from a worker thread is delivered there (queued)."""

    progress = Signal(object)
    done = Signal(object)
    failed = Signal(object)  # the exception


class Worker(QRunnable):
    """Runs `fn(*args, **kwargs)`; with `progress=True` it also passes `progress=<emit>` to `fn`."""

    def __init__(self, fn: Callable[..., Any], *args: Any, progress: bool = False, low_priority: bool = False,
                 **kwargs: Any) -> None:
        super().__init__()
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.low_priority = low_priority
        self.signals = WorkerSignals()
        if progress:
            self.kwargs["progress"] = self.signals.progress.emit
        self.setAutoDelete(False)  # Python owns it (see _running); Qt must not free it under us

    def run(self) -> None:
        if self.low_priority:
            lower_thread_priority()
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as e:  # every failure goes back to the page that asked
            if not isinstance(e, UserError):
                log.exception("Background task %s failed", getattr(self.fn, "__name__", self.fn))
            self._emit(self.signals.failed, e)
        else:
            self._emit(self.signals.done, result)

    @staticmethod
    def _emit(signal, value: Any) -> None:
        try:
            signal.emit(value)
        except RuntimeError:  # the window closed while this ran: nobody is left to tell
            log.debug("Result of a background task dropped: its window is gone")


_LOW_NICE = 10
_lowered: set[int] = set()


def lower_thread_priority() -> None:
    """Make this thread (and the threads it starts: decoders, ONNX Runtime's pool) yield the CPU to the
    GUI. Linux nice values are per thread and inherited by new threads; elsewhere Qt's priority works."""
    tid = threading.get_native_id()
    if tid in _lowered:
        return
    _lowered.add(tid)
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), _LOW_NICE))
        except OSError as e:  # pragma: no cover - a sandbox that forbids it; work just competes evenly
            log.debug("Could not lower the priority of a background thread: %s", e)
    else:
        QThread.currentThread().setPriority(QThread.Priority.LowPriority)


_job_pool: QThreadPool | None = None


def job_pool() -> QThreadPool:
    """The pool of long jobs (indexing, pushes) at low priority. Its threads stay low once lowered
    (an unprivileged process cannot raise a nice value back), so quick tasks use the global pool."""
    global _job_pool
    if _job_pool is None:
        _job_pool = QThreadPool()
        _job_pool.setMaxThreadCount(2)
    return _job_pool


_running: set[Worker] = set()  # keeps workers (and their signal objects) alive until they report


def run_task(
    fn: Callable[..., Any],
    *args: Any,
    on_done: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    on_progress: Callable[[Any], None] | None = None,
    long_job: bool = False,
    network: bool = False,
    **kwargs: Any,
) -> Worker:
    """Start `fn` in the background; callbacks run on the GUI thread. `on_progress` turns on progress;
    `long_job` runs it at low priority on the job pool, so the GUI stays fluid however busy it is.

    `network`: `fn` only talks to a server and changes nothing here (a connection test, a status read,
    a settings call): it runs on a daemon thread that quitting does not wait for. A server that accepts
    and never answers would otherwise hold the app open until the HTTP timeout (httpx cannot interrupt a
    blocking read from another thread; closing its client does not wake it)."""
    worker = Worker(fn, *args, progress=on_progress is not None, low_priority=long_job, **kwargs)
    if on_progress is not None:
        worker.signals.progress.connect(on_progress)
    if on_done is not None:
        worker.signals.done.connect(on_done)
    if on_error is not None:
        worker.signals.failed.connect(on_error)
    worker.signals.done.connect(lambda _r: _running.discard(worker))
    worker.signals.failed.connect(lambda _e: _running.discard(worker))
    _running.add(worker)
    if network:
        threading.Thread(target=worker.run, name=f"net-{getattr(fn, '__name__', 'task')}", daemon=True).start()
    else:
        (job_pool() if long_job else QThreadPool.globalInstance()).start(worker)
    return worker


def finish_background_work(msecs: int) -> bool:
    """At quit: drop the tasks that have not started and wait up to `msecs` in all for the running ones
    (long jobs have been asked to cancel); True when they all finished. Network tasks (daemon threads)
    are not waited for. Polls with short sleeps, which release the GIL: a running task that needs it
    to finish gets it (QThreadPool.waitForDone would hold it while waiting)."""
    pools = ([_job_pool] if _job_pool is not None else []) + [QThreadPool.globalInstance()]
    for pool in pools:
        pool.clear()
    deadline = time.monotonic() + msecs / 1000
    while any(pool.activeThreadCount() for pool in pools):
        if time.monotonic() >= deadline:
            log.warning("Quitting with background work still running")
            return False
        time.sleep(0.01)
    return True


def relay(signal) -> Callable[..., None]:
    """A plain callback for Qt-free code (jobs) that emits `signal`, and stays harmless once the page
    that owns the signal has been closed."""

    def emit(*args: Any) -> None:
        try:
            signal.emit(*args)
        except RuntimeError:
            pass  # the window closed while the job was still reporting

    return emit


# The core's messages name what to type on a command line; in the window the same advice names the field
# or button. Matched on the core's actual wording (tests/test_ui_small_things.py raises the real errors).
WINDOW_WORDS: list[tuple[str, str]] = [
    (r"choose another with --port", "choose another Port on the Server page"),
    (r"with --host\.", "as Host on the Server page."),
    (r"Limit it with --allow ADDRESS", "Limit it with Allowed on the Server page"),
    (r"Add it with `serve --allow ([^`]+)` \(or in Settings\)", r"Add \1 to Allowed on the Server page"),
    (r"start the server with --forward URL \(or set it on the Server page\)", "set Forward to on the Server page"),
    (r"[Rr]un `immich-ml-desktop models download [^`]+`", "Press Download missing models on the Settings page"),
    (r"\b([Oo]r p|P)oint --cache-dir at a folder that has it", r"\1oint Model folder (Settings) at a folder that has it"),
    (r"[Rr]un `immich-ml-desktop models verify`( and download the model again)?",
     "Download the model again (Settings: Download missing models)"),
    (r"\(see `immich-ml-desktop models list`\)", "(the Settings page lists them)"),
    (r"run `immich-ml-desktop models import FOLDER`", "copy its folder into the Model folder (Settings)"),
    (r"pass --api-key or set IMMICH_API_KEY", "enter one with Connect… on the Push page"),
    (r"pass it with --api-key or IMMICH_API_KEY", "enter it with Connect… on the Push page"),
    (r"pass --server or set IMMICH_URL", "enter it with Connect… on the Push page"),
    (r"--cache-dir", "Model folder (Settings)"),
    (r"--device", "Device (Settings)"),
    (r"--library\b", "Library file (Settings)"),
]


def window_words(text: str) -> str:
    """`text` with command-line advice turned into the window's words."""
    import re

    for pattern, replacement in WINDOW_WORDS:
        text = re.sub(pattern, replacement, text)
    return text


def describe_error(error: BaseException) -> str:
    """Plain words for the user: a UserError's own message (in the window's words), anything else
    marked as unexpected."""
    if isinstance(error, UserError):
        return window_words(str(error))
    return f"Something went wrong: {type(error).__name__}: {error}"
