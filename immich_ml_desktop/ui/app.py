"""Entry point of the desktop window: `immich-ml-desktop` with no arguments calls `run_app()`."""

from __future__ import annotations

import logging
import sys

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from immich_ml_desktop.settings import APP_NAME, Settings
from immich_ml_desktop.ui.context import AppContext
from immich_ml_desktop.ui.main_window import MainWindow

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
    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv[:1])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    app.setApplicationDisplayName("Immich ML Desktop")
    app.setWindowIcon(app_icon())
    app.setStyleSheet(STYLE)
    return app


def run_app() -> int:
    app = make_application()
    context = AppContext(Settings.load())
    window = MainWindow(context)
    window.show()
    try:
        return app.exec()
    finally:
        context.pool.waitForDone(10000)  # background tasks finish before the interpreter goes away
        context.close()
