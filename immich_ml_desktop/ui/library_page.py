"""Library page: the folders to index, the index job with progress, speed and ETA, pause/resume/cancel,
a thumbnail grid of indexed photos and the files that could not be indexed, with their reasons."""

from __future__ import annotations

import os

from PySide6.QtCore import QObject, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from immich_ml_desktop.ui.photo_grid import PhotoGrid, Tile
from immich_ml_desktop.ui.thumbnails import ThumbnailLoader
from immich_ml_desktop.ui.workers import describe_error, relay, run_task
from immich_ml_desktop.ui.widgets import Page, empty_state, label

STATE_WORDS = {
    "scanning": "Looking for photos…",
    "loading": "Loading the models…",
    "indexing": "Indexing",
    "paused": "Paused",
    "cancelled": "Cancelled",
    "finished": "Finished",
}


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "estimating time left…"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"about {seconds} s left"
    if seconds < 3600:
        return f"about {seconds // 60} min {seconds % 60:02d} s left"
    return f"about {seconds // 3600} h {seconds % 3600 // 60:02d} min left"


class IndexSignals(QObject):
    """The index job's plain callbacks, carried to the GUI thread."""

    progress = Signal(object)  # IndexProgress
    failure = Signal(object, str)  # Asset, reason


class LibraryPage(Page):
    page_name = "Library"
    page_tip = "Index folders of photos on this machine"

    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(
            "Library",
            "Add folders of photos and press Index: every photo gets its CLIP vector (for search) and its faces "
            "(for People). Indexing continues where it stopped; only new or changed photos are redone.",
            parent,
        )
        self.context = context
        self.job = None
        self.loader = ThumbnailLoader(size=144, parent=self)
        self._want_pause = self._want_cancel = False  # asked before the job object exists
        self.last_progress = None
        self.last_summary = None
        self._refreshing = False
        self._refresh_again = False

        # folders and controls
        top = QHBoxLayout()
        folders_box = QVBoxLayout()
        self.folders = QListWidget()
        self.folders.setMaximumHeight(96)
        self.folders.setToolTip("The folders the library indexes (with their subfolders)")
        self.folders.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        folders_box.addWidget(self.folders)
        folder_buttons = QHBoxLayout()
        self.add_button = QPushButton("&Add folder…")
        self.add_button.setToolTip("Choose a folder of photos to index")
        self.add_button.clicked.connect(self.choose_folder)
        self.remove_button = QPushButton("Remo&ve")
        self.remove_button.setToolTip("Stop indexing the selected folders (their photos leave the library on the next run)")
        self.remove_button.clicked.connect(self.remove_selected_folders)
        folder_buttons.addWidget(self.add_button)
        folder_buttons.addWidget(self.remove_button)
        folder_buttons.addStretch(1)
        folders_box.addLayout(folder_buttons)
        top.addLayout(folders_box, 1)

        controls = QVBoxLayout()
        self.index_button = QPushButton("&Index")
        self.index_button.setToolTip("Index new and changed photos in these folders (Ctrl+I)")
        self.index_button.setShortcut("Ctrl+I")
        self.index_button.setMinimumWidth(120)
        self.index_button.clicked.connect(lambda: self.start_index())
        self.immich_button = QPushButton("Index I&mmich")
        self.immich_button.setToolTip("Index the photos of the connected Immich server (its previews, as Immich's ML sees them)")
        self.immich_button.clicked.connect(lambda: self.start_index(immich=True))
        self.pause_button = QPushButton("&Pause")
        self.pause_button.setToolTip("Pause or resume indexing (Ctrl+P)")
        self.pause_button.setShortcut("Ctrl+P")
        self.pause_button.clicked.connect(self.toggle_pause)
        self.cancel_button = QPushButton("&Cancel")
        self.cancel_button.setToolTip("Stop indexing; what is done is kept and the next run continues from there")
        self.cancel_button.clicked.connect(self.cancel_index)
        for b in (self.index_button, self.immich_button, self.pause_button, self.cancel_button):
            controls.addWidget(b)
        controls.addStretch(1)
        top.addLayout(controls)
        self.body.addLayout(top)

        progress_row = QHBoxLayout()
        self.progress = QProgressBar()
        self._show_progress(0, 0, "")  # nothing run yet: an empty bar, not "0 / 1"
        self.speed_label = QLabel()
        self.speed_label.setMinimumWidth(330)
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.speed_label)
        self.body.addLayout(progress_row)
        self.current_label = label("", "hint", wrap=False)
        self.current_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.body.addWidget(self.current_label)
        self.stats_label = label("", "hint")
        self.body.addWidget(self.stats_label)

        # photos and failures
        self.tabs = QTabWidget()
        self.grid = PhotoGrid(self.loader)
        self.grid.doubleClicked.connect(self._open_photo)
        self.grid_stack = QStackedWidget()
        self.grid_empty = empty_state("No photos yet.\n\nAdd a folder of photos above, then press Index.")
        self.grid_stack.addWidget(self.grid_empty)
        self.grid_stack.addWidget(self.grid)
        self.failures = QTableWidget(0, 2)
        self.failures.setHorizontalHeaderLabels(["File", "Why it could not be indexed"])
        self.failures.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        self.failures.horizontalHeader().setStretchLastSection(True)
        self.failures.setColumnWidth(0, 420)
        self.failures.verticalHeader().hide()
        self.failures.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.failures.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.failures.setWordWrap(False)
        self.tabs.addTab(self.grid_stack, "Photos")
        self.tabs.addTab(self.failures, "Failures")
        self.body.addWidget(self.tabs, 1)

        self.signals = IndexSignals(self)
        self.signals.progress.connect(self._on_progress)
        self.signals.failure.connect(self._on_failure)
        self.grid_timer = QTimer(self)
        self.grid_timer.setInterval(1500)
        self.grid_timer.timeout.connect(self.refresh)
        context.settings_changed.connect(lambda _s: self.refresh())

        self._show_folders()
        self._set_running(False)
        self.refresh()

    # folders ------------------------------------------------------------------------------------------
    def _show_folders(self) -> None:
        self.folders.clear()
        for folder in self.context.settings.library_folders:
            self.folders.addItem(folder)
        if not self.context.settings.library_folders:
            self.folders.addItem("No folders yet: press Add folder…")
            self.folders.item(0).setFlags(Qt.ItemFlag.NoItemFlags)

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of photos to index", os.path.expanduser("~"))
        if folder:
            self.add_folder(folder)

    def add_folder(self, folder: str) -> None:
        folder = os.path.abspath(folder)
        if not os.path.isdir(folder):
            self.message.show_error(f"{folder} is not a folder.")
            return
        current = list(self.context.settings.library_folders)
        if folder not in current:
            self.context.apply_settings(self.context.updated_settings(library_folders=current + [folder]))
        self._show_folders()
        self.message.clear_message()

    def remove_selected_folders(self) -> None:
        chosen = {i.text() for i in self.folders.selectedItems()}
        remaining = [f for f in self.context.settings.library_folders if f not in chosen]
        self.context.apply_settings(self.context.updated_settings(library_folders=remaining))
        self._show_folders()

    # the index job ------------------------------------------------------------------------------------
    def start_index(self, immich: bool = False) -> None:
        from immich_ml_desktop.library.folders import FolderSource

        settings = self.context.settings
        if immich and not settings.immich_url:
            self.message.show_error("Connect to your Immich server first (Push page → Connect…).")
            return
        if not immich and not settings.library_folders:
            self.message.show_error("Add a folder of photos first (Add folder…), then press Index.")
            return
        self.message.clear_message()
        source = None  # Immich's source needs a connection: made on the worker
        if not immich:
            try:
                source = FolderSource(settings.library_folders)
            except Exception as e:  # noqa: BLE001 - UserError from the source, shown in place
                self.message.show_error(e)
                return
        self.progress.setRange(0, 0)  # busy until the scan says how many
        self.progress.show()
        self.speed_label.setText(STATE_WORDS["scanning"])
        self._set_running(True)

        def run():
            # The store, the Engine and the Immich connection are opened here, off the GUI thread.
            client = None
            if immich:
                from immich_ml_desktop.library.immich_source import ImmichSource

                client = self.context.immich_client()
                job_source = ImmichSource(client)
            else:
                job_source = source
            try:
                return self._run_job(job_source, settings)
            finally:
                if client is not None:
                    client.close()

        self._want_cancel = self._want_pause = False
        self.last_progress = None  # the tray shows this run's progress, not the last run's
        self.grid_timer.start()
        run_task(run, on_done=self._finished, on_error=self._failed, long_job=True)

    def _run_job(self, source, settings):
        """Runs on the job pool: build the job (store and Engine open off the GUI thread) and run it."""
        from immich_ml_desktop.services.index import IndexJob

        job = IndexJob(
            self.context.library(), self.context.engine(), source,
            clip_model=settings.clip_model, face_model=settings.face_model,
            face_min_score=settings.face_min_score, face_passes=settings.face_passes,
            progress=relay(self.signals.progress), failure=relay(self.signals.failure),
            answers=self.context.answers(),
        )
        self.job = job  # from here on the buttons reach the job directly
        if self._want_cancel:
            job.cancel()
        elif self._want_pause:
            job.pause()
        return job.run()

    def toggle_pause(self) -> None:
        paused = self._want_pause = not self._want_pause
        self.pause_button.setText("&Resume" if paused else "&Pause")
        if self.job is not None:
            self.job.pause() if paused else self.job.resume()
        self.speed_label.setText("Pausing…" if paused else "Resuming…")

    def cancel_index(self) -> None:
        self._want_cancel = True
        self.cancel_button.setEnabled(False)
        self.speed_label.setText("Stopping…")
        if self.job is not None:
            self.job.cancel()

    @property
    def running(self) -> bool:
        return not self.index_button.isEnabled()

    @property
    def paused(self) -> bool:
        return self.running and self._want_pause

    def _on_progress(self, p) -> None:
        if p.state in ("scanning", "loading"):
            self.progress.setRange(0, 0)
            self.progress.show()
            self.speed_label.setText(STATE_WORDS[p.state])
            return
        self._show_progress(p.done, p.total)
        if p.state == "paused":
            self.speed_label.setText(f"Paused at {p.done} of {p.total}")
        elif p.state == "indexing":
            self.speed_label.setText(f"{p.images_per_second:.1f} images/s, {format_eta(p.eta_seconds)}")
        else:
            self.speed_label.setText(STATE_WORDS.get(p.state, p.state))
        self.current_label.setText(p.current or "")
        self.last_progress = p

    def _on_failure(self, asset, reason: str) -> None:
        self._add_failure(asset.key, reason)
        self.tabs.setTabText(1, f"Failures ({self.failures.rowCount()})")

    def _add_failure(self, key: str, reason: str) -> None:
        row = self.failures.rowCount()
        self.failures.insertRow(row)
        item = QTableWidgetItem(key)
        item.setToolTip(key)
        self.failures.setItem(row, 0, item)
        reason_item = QTableWidgetItem(reason)
        reason_item.setToolTip(reason)
        self.failures.setItem(row, 1, reason_item)

    def _finished(self, summary) -> None:
        self._done_running()
        words = "Cancelled" if summary.cancelled else "Finished"
        self.speed_label.setText(
            f"{words}: {summary.indexed} indexed, {summary.failed} failed in {summary.seconds:.0f} s "
            f"({summary.images_per_second:.1f} images/s)"
        )
        if summary.total:
            self._show_progress(summary.indexed + summary.failed, summary.total)
        else:
            self._show_progress(1, 1, "Up to date")
        self.last_summary = summary
        self.context.status.emit(f"Indexing {words.lower()}: {summary.indexed} photos, {summary.faces} faces")
        self.context.job_finished.emit(
            "index", f"Indexing {words.lower()}: {summary.indexed} photos indexed, {summary.failed} failed, "
            f"{summary.faces} faces", False)

    def _show_progress(self, done: int, total: int, text: str = "%v / %m") -> None:
        """The bar shows a run's progress or its outcome; with nothing to show (before the first run,
        after an error) it is hidden rather than an empty box."""
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)
        self.progress.setFormat(text)
        self.progress.setVisible(bool(total) or bool(text))

    def _failed(self, error: BaseException) -> None:
        self._done_running()
        self._show_progress(0, 0, "")
        self.speed_label.setText("Stopped by an error")
        self.message.show_error(error)
        self.context.job_finished.emit("index", f"Indexing stopped: {describe_error(error)}", True)

    def _done_running(self) -> None:
        self.job = None
        self.grid_timer.stop()
        self._set_running(False)
        self.current_label.setText("")
        self.refresh()
        self.context.library_changed.emit()

    def _set_running(self, running: bool) -> None:
        self.index_button.setEnabled(not running)
        self.immich_button.setEnabled(not running)
        self.pause_button.setEnabled(running)
        self.cancel_button.setEnabled(running)
        self.add_button.setEnabled(not running)
        self.remove_button.setEnabled(not running)
        self.pause_button.setText("&Pause")
        self._want_pause = False

    # what the store holds -----------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read photos, failures and counts from the store in the background."""
        if self._refreshing:
            self._refresh_again = True
            return
        self._refreshing = True
        settings = self.context.settings

        def read():
            store = self.context.library()
            return (
                store.assets(indexed_only=True),
                store.failures(),
                store.stats(clip_model=settings.clip_model, face_model=settings.face_model),
            )

        run_task(read, on_done=self._show_store, on_error=self._store_failed)

    def _store_failed(self, error: BaseException) -> None:
        self._refreshing = False
        self.message.show_error(error)

    def _show_store(self, result) -> None:
        self._refreshing = False
        assets, failures, stats = result
        tiles = [
            Tile(key=f"a{a.id}", path=str(a.path) if a.path else None, title=os.path.basename(a.key),
                 tooltip=a.key, payload=a)
            for a in assets
        ]
        self.grid.grid_model.set_tiles(tiles, incremental=True)
        self.grid_stack.setCurrentWidget(self.grid if tiles else self.grid_empty)
        if not self.running:
            self.failures.setRowCount(0)
            reasons: dict[str, list[str]] = {}  # one row per file, though each model records its failure
            for f in failures:
                if f.reason not in reasons.setdefault(f.key, []):
                    reasons[f.key].append(f.reason)
            for key, why in reasons.items():
                self._add_failure(key, "; ".join(why))
        self.tabs.setTabText(1, f"Failures ({self.failures.rowCount()})")
        self.stats_label.setText(
            f"{stats['assets']:,} photos in the library · {stats['indexed']:,} indexed · {stats['failed']:,} failed · "
            f"{stats['faces']:,} faces"
        )
        if self._refresh_again:
            self._refresh_again = False
            self.refresh()

    def _open_photo(self, index) -> None:
        tile = self.grid.grid_model.tiles[index.row()]
        if tile.path:
            QDesktopServices.openUrl(QUrl.fromLocalFile(tile.path))

    def page_shown(self) -> None:
        if not self.running:
            self.refresh()

    def shutdown(self) -> None:
        self.grid_timer.stop()
        if self.job is not None:
            self.job.cancel()
        self.loader.clear()
