"""The system-tray companion: what the app is doing (serving, indexing, idle, an error) in the icon and
its tooltip, a menu (open the window, start/stop serving, pause/resume indexing, quit), and desktop
notifications when a long job ends or fails while the window is hidden or in the background.

The tray reads the pages' own state once a second (the server's request rate, the index job's progress)
rather than adding signals to them; the state and the menu are computed by plain functions, so they are
tested without a tray host as well as with one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from PySide6.QtCore import QObject, QRectF, Qt, QTimer
from PySide6.QtGui import QAction, QColor, QIcon, QPainter, QPixmap
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

log = logging.getLogger(__name__)

STATE_COLOURS = {"serving": "#2e9d4f", "indexing": "#3d8ee6", "idle": "#8a8f98", "error": "#d93025"}
# Jobs whose success is worth a notification (a server start is not: the user just asked for it).
NOTIFY_ON_SUCCESS = {"index", "push", "download", "immich-jobs"}


@dataclass(frozen=True)
class TrayState:
    kind: str  # serving | indexing | idle | error (the icon's colour: the most urgent of them)
    lines: tuple[str, ...]  # the tooltip, one line per activity

    @property
    def tooltip(self) -> str:
        return "Immich ML Desktop\n" + "\n".join(self.lines)


def tray_state(serving: tuple[str, float] | None, indexing, error: str | None) -> TrayState:
    """`serving`: (url, requests per second) or None; `indexing`: the index job's last IndexProgress
    (None when no job runs); `error`: the latest failure not yet followed by a success."""
    lines = []
    kind = "idle"
    if serving is not None:
        url, rate = serving
        lines.append(f"Serving at {url}: {rate:.1f} requests/s")
        kind = "serving"
    if indexing is not None:
        p = indexing
        if p.state in ("scanning", "loading") or not p.total:
            lines.append("Indexing: looking for photos…" if p.state == "scanning" else "Indexing: loading the models…")
        elif p.state == "paused":
            lines.append(f"Indexing paused at {p.done:,} of {p.total:,}")
        else:
            lines.append(f"Indexing: {p.done:,} of {p.total:,} ({100 * p.done / p.total:.0f}%)")
        kind = "indexing"
    if error:
        lines.insert(0, f"Error: {error}")
        kind = "error"
    if not lines:
        lines.append("Idle")
    return TrayState(kind, tuple(lines))


def state_icon(base: QIcon, kind: str, size: int = 64) -> QIcon:
    """The app icon with a dot in the state's colour (bottom right), or the dot alone without an icon."""
    pix = QPixmap(size, size)
    pix.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pix)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    if not base.isNull():
        base.paint(painter, 0, 0, size, size)
        dot = QRectF(size * 0.52, size * 0.52, size * 0.46, size * 0.46)
    else:
        dot = QRectF(size * 0.1, size * 0.1, size * 0.8, size * 0.8)
    painter.setPen(QColor("white"))
    painter.setBrush(QColor(STATE_COLOURS[kind]))
    painter.drawEllipse(dot)
    painter.end()
    return QIcon(pix)


class Companion(QObject):
    """Owns the tray icon of a MainWindow. `available` is False where the desktop has no tray (the
    window then closes as any window does); the state and menu logic run either way."""

    def __init__(self, window, *, available: bool | None = None) -> None:
        super().__init__(window)
        self.window = window
        self.available = QSystemTrayIcon.isSystemTrayAvailable() if available is None else available
        self.errors: dict[str, str] = {}  # job kind -> its latest failure, until it next succeeds
        self.sent: list[tuple[str, str, bool]] = []  # notifications shown: (title, text, failed)
        self.state = TrayState("idle", ("Idle",))
        self._base_icon = window.windowIcon()
        self.icon = QSystemTrayIcon(state_icon(self._base_icon, "idle"), self)
        self.icon.setToolTip(self.state.tooltip)
        self.menu = QMenu()
        self.open_action = QAction("&Open window", self)
        self.open_action.triggered.connect(window.show_from_tray)
        self.serve_action = QAction("&Start serving", self)
        self.serve_action.triggered.connect(self._toggle_serving)
        self.pause_action = QAction("&Pause indexing", self)
        self.pause_action.triggered.connect(self._toggle_pause)
        self.quit_action = QAction("&Quit", self)
        self.quit_action.triggered.connect(window.quit_app)
        self.menu.addAction(self.open_action)
        self.menu.addSeparator()
        self.menu.addAction(self.serve_action)
        self.menu.addAction(self.pause_action)
        self.menu.addSeparator()
        self.menu.addAction(self.quit_action)
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._activated)
        window.context.job_finished.connect(self.job_finished)
        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self.update)
        self.update()
        if self.available:
            self.icon.show()
            self.timer.start()

    # what the pages are doing ---------------------------------------------------------------------
    def _server_page(self):
        return self.window.pages.get("Server")

    def _library_page(self):
        return self.window.pages.get("Library")

    def current_state(self) -> TrayState:
        server_page, library = self._server_page(), self._library_page()
        server = getattr(server_page, "server", None)
        serving = (server.url, server.stats.requests_per_second) if server is not None else None
        indexing = None
        if library is not None and library.running:
            indexing = library.last_progress or _Scanning()
        error = next(reversed(self.errors.values()), None)
        return tray_state(serving, indexing, error)

    def update(self) -> None:
        state = self.current_state()
        if state.kind != self.state.kind:
            self.icon.setIcon(state_icon(self._base_icon, state.kind))
        if state != self.state:
            self.icon.setToolTip(state.tooltip)
        self.state = state
        server_page, library = self._server_page(), self._library_page()
        serving = getattr(server_page, "server", None) is not None
        self.serve_action.setText("&Stop serving" if serving else "&Start serving")
        self.serve_action.setEnabled(server_page is not None and server_page.start_button.isEnabled())
        running = library is not None and library.running
        paused = running and library.paused
        self.pause_action.setText("&Resume indexing" if paused else "&Pause indexing")
        self.pause_action.setEnabled(running)

    # actions ----------------------------------------------------------------------------------------
    def _toggle_serving(self) -> None:
        page = self._server_page()
        if page is not None and page.start_button.isEnabled():
            page.toggle()
        self.update()

    def _toggle_pause(self) -> None:
        library = self._library_page()
        if library is not None and library.running:
            library.toggle_pause()
        self.update()

    def _activated(self, reason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            if self.window.isVisible() and not self.window.isMinimized():
                self.window.hide_to_tray()
            else:
                self.window.show_from_tray()

    # notifications ----------------------------------------------------------------------------------
    def job_finished(self, kind: str, text: str, failed: bool) -> None:
        if failed:
            self.errors.pop(kind, None)
            self.errors[kind] = text
        else:
            self.errors.pop(kind, None)
        self.update()
        if failed or kind in NOTIFY_ON_SUCCESS:
            self.notify("Immich ML Desktop: " + ("failed" if failed else "done"), text, failed=failed)

    def notify(self, title: str, text: str, *, failed: bool = False, force: bool = False) -> bool:
        """A desktop notification, when the window is hidden or not the active one (or `force`)."""
        if not force and self.window.isVisible() and self.window.isActiveWindow():
            return False
        self.sent.append((title, text, failed))
        if self.available:
            level = QSystemTrayIcon.MessageIcon.Critical if failed else QSystemTrayIcon.MessageIcon.Information
            self.icon.showMessage(title, text, level, 10000)
        return True

    def close(self) -> None:
        self.timer.stop()
        self.icon.hide()


class _Scanning:
    """Progress of an index job that has not reported yet."""

    state, done, total = "scanning", 0, 0
