"""Helpers for the window tests: a real MainWindow on an isolated settings file, a GUI-thread heartbeat."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PySide6.QtCore import QElapsedTimer, QSettings, QThreadPool, QTimer

from immich_ml_desktop.settings import Settings
from immich_ml_desktop.ui.app import make_application
from immich_ml_desktop.ui.context import AppContext
from immich_ml_desktop.ui.main_window import MainWindow


@pytest.fixture(autouse=True)
def finish_background_work():
    """Background tasks of a test finish before the next test (and before the interpreter exits)."""
    yield
    QThreadPool.globalInstance().waitForDone(30000)


def make_window(qtbot, settings: Settings, state_file: Path, engine=None, tray_available: bool = False) -> MainWindow:
    """A shown MainWindow whose window state lives in `state_file` (never the user's QSettings).
    `tray_available`: whether its tray companion acts as if the desktop had a tray (offscreen has none)."""
    make_application()
    settings.save()
    context = AppContext(settings, engine=engine)
    window = MainWindow(context, qsettings=QSettings(str(state_file), QSettings.Format.IniFormat),
                        tray_available=tray_available)
    qtbot.addWidget(window, before_close_func=lambda w: setattr(w, "_quitting", True))  # teardown quits for real
    window.show()
    return window


def activate(qtbot, window) -> None:
    """Shortcuts only reach the active window. (QTest.qWaitForWindowActive would sleep holding the GIL.)"""
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)


def ui_settings(tmp_path: Path, models_dir: Path, **changes) -> Settings:
    """Settings for a test: the shared model packs, a library file in tmp_path, no downloads."""
    from conftest import CLIP_PACK, FACE_PACK

    values = dict(
        device="cpu",
        model_cache_dir=str(models_dir),
        clip_model=CLIP_PACK,
        face_model=FACE_PACK,
        library_path=str(tmp_path / "library.sqlite3"),
        allow_downloads=False,
        model_ttl=0.0,
    )
    values.update(changes)
    return Settings(**values)


class Heartbeat:
    """A 10 ms QTimer on the GUI thread. `max_gap_ms`: the longest the event loop went without a beat
    (wall clock: includes waiting for a core or the GIL, which depends on the machine's load);
    `max_busy_ms`: the most CPU the GUI thread itself spent between two beats (what the app's code on
    that thread controls: a slot that decodes, sorts or queries for long shows here on any machine)."""

    def __init__(self) -> None:
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.clock = QElapsedTimer()
        self.gaps: list[float] = []
        self.busy: list[float] = []
        self._last = 0.0
        self._last_cpu = 0.0
        self.timer.timeout.connect(self._beat)

    def start(self) -> None:
        self.clock.start()
        self._last = self.clock.nsecsElapsed() / 1e6
        self._last_cpu = time.thread_time() * 1000
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def _beat(self) -> None:
        now, cpu = self.clock.nsecsElapsed() / 1e6, time.thread_time() * 1000
        self.gaps.append(now - self._last)
        self.busy.append(cpu - self._last_cpu)
        self._last, self._last_cpu = now, cpu

    @property
    def max_gap_ms(self) -> float:
        return max(self.gaps, default=0.0)

    @property
    def max_busy_ms(self) -> float:
        return max(self.busy, default=0.0)


def wait_until(qtbot, predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        qtbot.wait(20)
