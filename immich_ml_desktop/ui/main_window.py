"""The main window: a sidebar of pages, the pages themselves, and a status bar with device and models.

Geometry and the current page persist in QSettings; the app's own settings persist via `Settings.save()`.
"""

from __future__ import annotations

import importlib
import logging

from PySide6.QtCore import QSettings, QSize, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QMainWindow, QStackedWidget, QWidget

from immich_ml_desktop.settings import APP_NAME
from immich_ml_desktop.ui.context import AppContext
from immich_ml_desktop.ui.workers import run_task

log = logging.getLogger(__name__)


PAGE_MODULES = [
    ("library_page", "LibraryPage"),
    ("search_page", "SearchPage"),
    ("people_page", "PeoplePage"),
    ("push_page", "PushPage"),
    ("server_page", "ServerPage"),
    ("settings_page", "SettingsPage"),
]


def _page_classes() -> list[type]:
    """The pages in sidebar order."""
    classes = []
    for module_name, class_name in PAGE_MODULES:
        try:
            module = importlib.import_module(f"immich_ml_desktop.ui.{module_name}")
        except ModuleNotFoundError as e:
            if e.name == f"immich_ml_desktop.ui.{module_name}":
                continue  # page not built in this checkout
            raise
        classes.append(getattr(module, class_name))
    return classes


class MainWindow(QMainWindow):
    quit_requested = Signal()  # Quit (menu, Ctrl+Q, the tray): run_app ends the event loop

    def __init__(self, context: AppContext, *, qsettings: QSettings | None = None,
                 tray_available: bool | None = None) -> None:
        super().__init__()
        self.context = context
        self.qsettings = qsettings or QSettings(APP_NAME, APP_NAME)
        self.setWindowTitle("Immich ML Desktop")
        self.setMinimumSize(QSize(720, 480))

        self.sidebar = QListWidget()
        self.sidebar.setObjectName("sidebar")
        self.sidebar.setFixedWidth(150)
        self.sidebar.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.stack = QStackedWidget()
        self.pages: dict[str, QWidget] = {}
        for number, cls in enumerate(_page_classes(), start=1):
            page = cls(context, self)
            self.pages[page.page_name] = page
            self.stack.addWidget(page)
            item = QListWidgetItem(page.page_name)
            item.setToolTip(f"{page.page_tip} (Ctrl+{number})")
            item.setSizeHint(QSize(140, 36))
            self.sidebar.addItem(item)
            action = QAction(self)
            action.setShortcut(QKeySequence(f"Ctrl+{number}"))
            action.triggered.connect(lambda _=False, row=number - 1: self.sidebar.setCurrentRow(row))
            self.addAction(action)
        self.sidebar.currentRowChanged.connect(self._show_page)

        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        row.addWidget(self.sidebar)
        row.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        self.device_label = QLabel("Device: starting…")
        self.model_label = QLabel()
        self.device_label.setToolTip("The device the models run on; change it on the Settings page")
        self.model_label.setToolTip("The CLIP and face models in use; change them on the Settings page")
        for widget in (self.model_label, self.device_label):
            widget.setContentsMargins(12, 0, 12, 0)
        self.statusBar().addPermanentWidget(self.model_label)
        self.statusBar().addPermanentWidget(self.device_label)
        context.status.connect(lambda text: self.statusBar().showMessage(text, 8000))
        context.engine_changed.connect(self._show_engine)
        context.settings_changed.connect(self._show_models)
        self._show_models(context.settings)

        quit_action = QAction("Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.quit_app)
        self.addAction(quit_action)

        from immich_ml_desktop.ui.tray import Companion

        self._quitting = False
        self.companion = Companion(self, available=tray_available)

        if context.engine_if_ready is not None:
            self._show_engine(context.engine_if_ready)
        self._restore_state()

    # pages ----------------------------------------------------------------------------------------
    def page(self, name: str) -> QWidget:
        return self.pages[name]

    def show_page(self, name: str) -> None:
        self.sidebar.setCurrentRow(list(self.pages).index(name))

    def _show_page(self, row: int) -> None:
        self.stack.setCurrentIndex(row)
        shown = getattr(self.stack.currentWidget(), "page_shown", None)
        if shown is not None:
            shown()

    # status bar -----------------------------------------------------------------------------------
    def _start_engine(self) -> None:
        run_task(self.context.warm_up, on_error=lambda e: self.device_label.setText(f"Device: unavailable ({e})"))

    def _show_engine(self, engine) -> None:
        self.device_label.setText(f"Device: {engine.device.id}")
        self.device_label.setToolTip(engine.device.description)

    def _show_models(self, settings) -> None:
        self.model_label.setText(f"CLIP: {settings.clip_model}   Faces: {settings.face_model}")
        engine = self.context.engine_if_ready
        if engine is None:
            self.device_label.setText(f"Device: {settings.device} (loads on first use)")
            self._start_engine()

    # persistence ----------------------------------------------------------------------------------
    def _restore_state(self) -> None:
        geometry = self.qsettings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:  # first start: roomy, but never taller or wider than the screen (laptops: 768 px)
            screen = self.screen().availableGeometry() if self.screen() is not None else None
            width, height = 1280, 820
            if screen is not None:
                width, height = min(width, screen.width() - 40), min(height, screen.height() - 60)
            self.resize(max(width, 800), max(height, 560))
        try:
            row = int(self.qsettings.value("window/page", 0, type=int))  # type: ignore[call-overload]
        except (TypeError, ValueError):
            row = 0
        self.sidebar.setCurrentRow(row if 0 <= row < self.sidebar.count() else 0)

    # the tray --------------------------------------------------------------------------------------
    @property
    def close_to_tray(self) -> bool:
        """Closing the window keeps the app running in the tray (where the desktop has one)."""
        return self.companion.available and bool(self.qsettings.value("tray/close_to_tray", True, type=bool))

    def set_close_to_tray(self, on: bool) -> None:
        self.qsettings.setValue("tray/close_to_tray", bool(on))

    def hide_to_tray(self) -> None:
        self._save_state()
        self.hide()
        if not self.qsettings.value("tray/told", False, type=bool):  # say so the first time
            self.qsettings.setValue("tray/told", True)
            self.companion.notify(
                "Immich ML Desktop is still running",
                "It keeps serving and indexing in the background. Open the window or quit from the tray icon's menu.",
                force=True,
            )

    def show_from_tray(self) -> None:
        self.showNormal()
        self.raise_()
        self.activateWindow()

    def quit_app(self) -> None:
        """Quit for real: stop the pages' work, close the window, end the event loop."""
        self._quitting = True
        self.close()
        self.quit_requested.emit()

    def _save_state(self) -> None:
        self.qsettings.setValue("window/geometry", self.saveGeometry())
        self.qsettings.setValue("window/page", self.sidebar.currentRow())
        self.qsettings.sync()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        if not self._quitting and self.close_to_tray:
            event.ignore()
            self.hide_to_tray()
            return
        self._save_state()
        self.companion.close()
        for page in self.pages.values():
            if hasattr(page, "shutdown"):
                page.shutdown()
        super().closeEvent(event)
