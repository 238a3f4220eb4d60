"""Entry point of the desktop window: `immich-ml-desktop` with no arguments calls `run_app()`."""

from __future__ import annotations

import logging
import os
import sys

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from immich_ml_desktop.settings import APP_NAME, Settings
from immich_ml_desktop.ui.context import AppContext
from immich_ml_desktop.ui.main_window import MainWindow
from immich_ml_desktop.ui.workers import finish_background_work

QUIT_WAIT_MS = 1500  # how long quitting waits for cancelled jobs to wind down (the 3 s quit bound)
log = logging.getLogger(__name__)

STYLE = """
QListWidget#sidebar { border: none; font-size: 14px; padding-top: 8px; }
QListWidget#sidebar::item { padding: 6px 12px; }
QLabel[role="title"] { font-size: 18px; font-weight: 600; }
QLabel[role="hint"] { color: #5f6670; }
QLabel[role="error"] { color: #b3261e; }
QListView::item { padding: 3px; border-radius: 4px; }
QListView::item:selected { background: #3d8ee6; color: white; }
QLabel[role="empty"] { color: #5f6670; font-size: 14px; padding: 24px; }
"""


def app_icon() -> QIcon:
    """The app icon in every size the installers made; an empty icon in a checkout without them."""
    icon = QIcon()
    try:
        from immich_ml_desktop.app_resources import icon_paths

        for path in icon_paths():
            icon.addFile(str(path))
    except (ImportError, FileNotFoundError) as e:
        log.info("No app icon: %s", e)
    return icon


def make_application(argv: list[str] | None = None) -> QApplication:
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(argv if argv is not None else sys.argv[:1])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    app.setApplicationDisplayName("Immich ML Desktop")
    app.setWindowIcon(app_icon())
    app.setStyleSheet(STYLE)
    return app


def run_app(start_in_tray: bool = False) -> int:
    """The window's event loop. `start_in_tray` (start at login) keeps the window hidden where the
    desktop has a tray. Quitting stops every job and leaves within a few seconds: long jobs are asked to
    cancel and are waited for (briefly); network calls still waiting on a server are abandoned."""
    app = make_application()
    context = AppContext(Settings.load())
    window = MainWindow(context)
    if window.companion.available:
        app.setQuitOnLastWindowClosed(False)  # a hidden window (in the tray) is not a reason to quit
    window.quit_requested.connect(app.quit)
    app.lastWindowClosed.connect(lambda: None if window.close_to_tray else app.quit())
    if not (start_in_tray and window.companion.available):
        window.show()
    code = 1
    try:
        code = app.exec()
    finally:
        finished = finish_background_work(QUIT_WAIT_MS)
        if finished:
            context.close()
    if not finished:
        # Work that did not stop within QUIT_WAIT_MS of being cancelled (a device discovery or a model load
        # in C code, a job between two checks of its cancel flag): Qt's thread pool would wait for it at
        # exit, for as long as it takes. Nothing is lost by not waiting: settings and window state are
        # saved, the library commits each photo in its own transaction (SQLite rolls back the one in
        # flight), a push's log records each step once done (resume redoes the one in flight).
        log.warning("Quitting without waiting for background work that is still running")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
