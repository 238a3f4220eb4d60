"""Settings page: device and runtime, precision, threads, models, folders; downloads missing models."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QStyle,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QWidget,
)

from immich_ml_desktop.settings import FACE_PASSES, PRECISIONS, Settings
from immich_ml_desktop.ui.workers import describe_error, run_task
from immich_ml_desktop.ui.widgets import Page, label

TASK_DIRS = {"clip": "clip", "face": "facial-recognition"}
PRESENT_MARK = "✓"


def models_on_disk(settings: Settings, kind: str) -> dict[str, Path]:
    """Complete packs of `kind` in every model folder (the primary first): name -> its folder."""
    from immich_ml_desktop.model_store.catalog import REQUIRED_FILES
    from immich_ml_desktop.models.base import ModelTask

    task = ModelTask.SEARCH if kind == "clip" else ModelTask.FACIAL_RECOGNITION
    found: dict[str, Path] = {}
    for root in [settings.model_cache_dir, *settings.extra_model_dirs]:
        folder = Path(root) / TASK_DIRS[kind]
        if not folder.is_dir():
            continue
        for pack in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if pack.name not in found and all((pack / rel).is_file() for rel in REQUIRED_FILES[task]):
                found[pack.name] = pack
    return found


def known_models(settings: Settings, kind: str) -> list[tuple[str, Path | None]]:
    """Models on disk in every model folder first (with their folder), then the rest of Immich's
    catalogue (None: not on disk), without duplicates."""
    from immich_ml_desktop.model_store import catalog
    from immich_ml_desktop.models.base import ModelTask

    on_disk = models_on_disk(settings, kind)
    task = ModelTask.SEARCH if kind == "clip" else ModelTask.FACIAL_RECOGNITION
    rest = [e.name for e in catalog.entries(task) if e.name not in on_disk]
    return [*on_disk.items(), *((name, None) for name in dict.fromkeys(rest))]


def model_sources() -> str:
    """Where downloads come from, read from the code that downloads them (hosts, not guesses)."""
    from urllib.parse import urlparse

    from immich_ml_desktop.model_store.store import ModelStore

    hub = urlparse(ModelStore('.').endpoint).netloc or "Hugging Face"
    text = f"CLIP and face models from {hub} (immich-app)"
    try:
        from immich_ml_desktop.models.base import ModelType
        from immich_ml_desktop.models.ocr import model_file

        text += f", OCR models from {urlparse(model_file(DEFAULT_OCR_MODEL, ModelType.DETECTION).url).netloc} (RapidOCR)"
    except Exception:  # noqa: BLE001 - OCR's runtime missing: no OCR downloads to describe
        pass
    return text


DEFAULT_OCR_MODEL = "PP-OCRv5_mobile"  # Immich's default OCR model


class _DownloadSignals(QObject):
    progress = Signal(str, int, int)  # model, done bytes, total bytes


class SettingsPage(Page):
    page_name = "Settings"
    page_tip = "Device, precision, threads, models and folders"

    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(
            "Settings",
            "Where the models run and which ones. Changes take effect when you press Apply; "
            "a running server keeps its models until you restart it.",
            parent,
        )
        self.context = context
        form = QFormLayout()
        form.setHorizontalSpacing(16)
        form.setVerticalSpacing(10)

        self.device = QComboBox()
        self.device.setToolTip("auto picks the fastest device that works on this machine")
        self.device.addItem("auto (fastest available)", "auto")
        self.device_note = label("Looking for devices…", "hint")
        form.addRow("&Device", self.device)
        form.addRow("", self.device_note)

        self.precision = QComboBox()
        self.precision.addItems(list(PRECISIONS))
        self.precision.setToolTip(
            "Inference precision on OpenVINO devices.\n"
            "auto: the device's faster precision (bf16 on new CPUs, f16 on GPUs) for each model whose vectors stay "
            "interchangeable with Immich's (checked once per model), f32 for the others.\n"
            "f32: exact everywhere. bf16/f16: fastest; face vectors drift slightly from Immich's."
        )
        form.addRow("&Precision", self.precision)

        self.threads = QSpinBox()
        self.threads.setRange(0, 256)
        self.threads.setSpecialValueText("automatic (all cores)")
        self.threads.setToolTip("Threads per model; 0 lets the runtime use every core")
        form.addRow("&Threads", self.threads)

        self.clip_model = QComboBox()
        self.clip_model.setEditable(True)
        self.clip_model.setToolTip("The CLIP model for smart search; must match the one Immich is set to")
        form.addRow("&CLIP model", self.clip_model)
        self.clip_note = label("", "hint")
        form.addRow("", self.clip_note)
        self.face_model = QComboBox()
        self.face_model.setEditable(True)
        self.face_model.setToolTip("The face detection and recognition model pack (Immich's default is buffalo_l)")
        form.addRow("Face m&odel", self.face_model)
        self.face_note = label("", "hint")
        form.addRow("", self.face_note)
        self.rotated_pass = QCheckBox("Look for faces at an angle too (photos &without faces index slower)")
        self.rotated_pass.setToolTip("Where Immich's detection finds no face, also try the photo turned 35 degrees "
                                     "each way: up to two more detector calls on every photo without a face")
        form.addRow("", self.rotated_pass)
        for combo, note in ((self.clip_model, self.clip_note), (self.face_model, self.face_note)):
            combo.currentTextChanged.connect(lambda _t, c=combo, n=note: self._show_model_note(c, n))

        self.cache_dir = QLineEdit()
        self.cache_dir.setToolTip("Model cache in Immich's layout (<folder>/clip/<model>/...); an existing Immich cache works")
        self.cache_dir.editingFinished.connect(self._refresh_models)
        form.addRow("Model &folder", self._with_browse(self.cache_dir, directory=True))
        self.library_path = QLineEdit()
        self.library_path.setToolTip("The library file that holds your indexed photos, faces and review decisions")
        form.addRow("&Library file", self._with_browse(self.library_path, directory=False))
        self.allow_downloads = QCheckBox("Download missing models when needed")
        self.allow_downloads.setToolTip("Models come from their publishers' hosts; see the note below")
        form.addRow("", self.allow_downloads)
        self.sources_note = label("", "hint")
        form.addRow("", self.sources_note)
        self.close_to_tray = QCheckBox("&Keep running in the system tray when the window is closed")
        self.close_to_tray.setToolTip("The server and indexing go on in the background; quit from the tray icon's menu")
        form.addRow("", self.close_to_tray)
        self.start_at_login = QCheckBox("Start at lo&gin (in the tray, window hidden)")
        form.addRow("", self.start_at_login)
        form_box = QWidget()
        form_box.setLayout(form)
        form_box.setMaximumWidth(900)
        self.body.addWidget(form_box)

        self.download_bar = QProgressBar()
        self.download_bar.setTextVisible(True)
        self.download_bar.hide()
        self.body.addWidget(self.download_bar)

        buttons = QHBoxLayout()
        self.download_button = QPushButton("Download &missing models")
        self.download_button.setToolTip("Fetch the chosen CLIP and face models if they are not in the model folder")
        self.download_button.clicked.connect(self.download_missing)
        self.clear_button = QPushButton("Clear cac&hes")
        self.clear_button.setToolTip(
            "Delete what the app derived (compiled models, batch-axis copies, precision checks, the answers kept for "
            "Immich's requests); they are rebuilt when next needed. Models, the library and the settings are kept."
        )
        self.clear_button.clicked.connect(self.clear_caches)
        self.revert_button = QPushButton("&Revert")
        self.revert_button.clicked.connect(self.load_from_settings)
        self.apply_button = QPushButton("&Apply")
        self.apply_button.setDefault(True)
        self.apply_button.clicked.connect(self.apply)
        self.saved_note = label("", "hint", wrap=False)  # "Saved." right beside Apply
        buttons.addWidget(self.download_button)
        buttons.addWidget(self.clear_button)
        buttons.addStretch(1)
        buttons.addWidget(self.saved_note)
        buttons.addWidget(self.revert_button)
        buttons.addWidget(self.apply_button)
        self.body.addLayout(buttons)
        self.body.addStretch(1)

        clear_saved = lambda *_a: self.saved_note.setText("")  # noqa: E731 - an edit after Apply is not saved yet
        for signal in (self.device.currentIndexChanged, self.precision.currentIndexChanged, self.threads.valueChanged,
                       self.clip_model.editTextChanged, self.face_model.editTextChanged, self.cache_dir.textEdited,
                       self.library_path.textEdited, self.allow_downloads.toggled, self.close_to_tray.toggled,
                       self.rotated_pass.toggled,
                       self.start_at_login.toggled):
            signal.connect(clear_saved)

        self._download_signals = _DownloadSignals(self)
        self._download_signals.progress.connect(self._show_download)
        context.download_progress = self._report_download
        self._devices_loaded = False
        self.load_from_settings()

    def _with_browse(self, edit: QLineEdit, *, directory: bool) -> QWidget:
        row = QWidget()
        layout = QHBoxLayout(row)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(edit, 1)
        button = QPushButton("Browse…")
        button.setToolTip("Choose with a file dialog")

        def browse() -> None:
            if directory:
                chosen = QFileDialog.getExistingDirectory(self, "Model folder", edit.text())
            else:
                chosen, _ = QFileDialog.getSaveFileName(
                    self, "Library file", edit.text(), "Library (*.sqlite3 *.db);;All files (*)",
                    options=QFileDialog.Option.DontConfirmOverwrite,
                )
            if chosen:
                edit.setText(chosen)

        button.clicked.connect(browse)
        layout.addWidget(button)
        return row

    # showing and applying ---------------------------------------------------------------------------
    def page_shown(self) -> None:
        self._load_desktop_options()  # the tray may have appeared after this page was built
        if not self._devices_loaded:
            self._devices_loaded = True
            from immich_ml_desktop.models.runtime import discover_devices

            run_task(discover_devices, on_done=self._show_devices, on_error=self.message.show_error)
            run_task(model_sources, on_done=lambda text: self.sources_note.setText(f"Downloads: {text}."))

    def _show_devices(self, devices) -> None:
        current = self.context.settings.device
        for dev in devices:
            if self.device.findData(dev.id) < 0:
                self.device.addItem(f"{dev.id} — {dev.description}", dev.id)
        self.device.setCurrentIndex(max(0, self.device.findData(current)))
        auto = devices[0].id if devices else "none"
        self.device_note.setText(f"{len(devices)} device(s) found; auto uses {auto}.")

    def load_from_settings(self) -> None:
        s = self.context.settings
        if self.device.findData(s.device) < 0:
            self.device.addItem(s.device, s.device)
        self.device.setCurrentIndex(self.device.findData(s.device))
        self.precision.setCurrentText(s.precision)
        self.threads.setValue(s.threads)
        self.cache_dir.setText(s.model_cache_dir)
        self.library_path.setText(s.library_path)
        self.allow_downloads.setChecked(s.allow_downloads)
        self.rotated_pass.setChecked("rotated" in s.face_passes)
        self._fill_models(s, s.clip_model, s.face_model)
        self._load_desktop_options()
        self.message.clear_message()
        self.saved_note.setText("")

    def _load_desktop_options(self) -> None:
        window = self.window()
        self.close_to_tray.setEnabled(bool(getattr(getattr(window, "companion", None), "available", False)))
        self.close_to_tray.setChecked(self.close_to_tray.isEnabled() and getattr(window, "close_to_tray", False))
        if not self.close_to_tray.isEnabled():
            self.close_to_tray.setToolTip("This desktop has no system tray: closing the window quits")
        self.start_at_login.setChecked(self._autostart().is_enabled())
        self.start_at_login.setToolTip(f"Written to {self._autostart().describe()}")

    @staticmethod
    def _autostart():
        from immich_ml_desktop.ui import autostart

        return autostart.for_this_platform()

    # models on disk -----------------------------------------------------------------------------------
    def _fill_models(self, settings: Settings, clip: str, face: str) -> None:
        """Both model lists from the folders of `settings`: packs on disk first, marked ✓, then the catalogue."""
        for combo, kind, value in ((self.clip_model, "clip", clip), (self.face_model, "face", face)):
            combo.blockSignals(True)
            combo.clear()
            for name, folder in known_models(settings, kind):
                combo.addItem(name)
                row = combo.count() - 1
                if folder is not None:
                    combo.setItemData(row, str(folder), Qt.ItemDataRole.UserRole)
                    combo.setItemData(row, f"On disk: {folder}", Qt.ItemDataRole.ToolTipRole)
                    combo.setItemIcon(row, self._present_icon())
                else:
                    combo.setItemData(row, "Not on disk: downloaded when first needed (if downloads are allowed)",
                                      Qt.ItemDataRole.ToolTipRole)
            combo.setCurrentText(value)
            combo.blockSignals(False)
        self._show_model_note(self.clip_model, self.clip_note)
        self._show_model_note(self.face_model, self.face_note)

    def _present_icon(self):
        return self.style().standardIcon(QStyle.StandardPixmap.SP_DialogApplyButton)

    def _refresh_models(self) -> None:
        """The model folder changed: list what is in it now (keeping the chosen names)."""
        folder = self.cache_dir.text().strip() or self.context.settings.model_cache_dir
        probe = self.context.updated_settings(model_cache_dir=folder)
        self._fill_models(probe, self.clip_model.currentText().strip(), self.face_model.currentText().strip())

    def is_present(self, combo: QComboBox, name: str | None = None) -> bool:
        row = combo.findText(combo.currentText() if name is None else name)
        return row >= 0 and combo.itemData(row, Qt.ItemDataRole.UserRole) is not None

    def _show_model_note(self, combo: QComboBox, note) -> None:
        name = combo.currentText().strip()
        row = combo.findText(name)
        folder = combo.itemData(row, Qt.ItemDataRole.UserRole) if row >= 0 else None
        if not name:
            note.setText("")
        elif folder:
            note.setText(f"{PRESENT_MARK} on disk: {folder}")
        else:
            note.setText("Not on disk yet: Download missing models fetches it (or it is fetched when first needed).")

    def edited_settings(self) -> Settings:
        return self.context.updated_settings(
            device=self.device.currentData() or "auto",
            precision=self.precision.currentText(),
            threads=self.threads.value(),
            clip_model=self.clip_model.currentText().strip(),
            face_model=self.face_model.currentText().strip(),
            model_cache_dir=self.cache_dir.text().strip(),
            library_path=self.library_path.text().strip(),
            allow_downloads=self.allow_downloads.isChecked(),
            face_passes=self._face_passes(),
        )

    def _face_passes(self) -> list[str]:
        """The passes in the settings, with the rotated one as the check box says (the others are kept)."""
        kept = set(self.context.settings.face_passes) - {"rotated"}
        return [p for p in FACE_PASSES if p in kept or (p == "rotated" and self.rotated_pass.isChecked())]

    def apply(self) -> bool:
        try:
            settings = self.edited_settings()
            if not settings.clip_model or not settings.face_model:
                raise ValueError("Choose a CLIP model and a face model.")
            self.context.apply_settings(settings)
            self._apply_desktop_options()
        except (ValueError, OSError) as e:
            self.saved_note.setText("")
            self.message.show_error(str(e))
            return False
        self.message.clear_message()
        self._refresh_models()  # a new model folder: its own models are listed now, not after Revert
        self.saved_note.setText("Saved.")
        self.context.status.emit("Settings saved")
        return True

    def _apply_desktop_options(self) -> None:
        from immich_ml_desktop.ui.autostart import launch_command

        window = self.window()
        if self.close_to_tray.isEnabled() and hasattr(window, "set_close_to_tray"):
            window.set_close_to_tray(self.close_to_tray.isChecked())
        autostart = self._autostart()
        if self.start_at_login.isChecked() != autostart.is_enabled():
            if self.start_at_login.isChecked():
                autostart.enable(launch_command())
            else:
                autostart.disable()

    # caches -----------------------------------------------------------------------------------------
    def clear_caches(self) -> None:
        from immich_ml_desktop.paths import clear_derived_caches

        settings = self.context.settings
        keep = [settings.model_cache_dir, *settings.extra_model_dirs, settings.library_path]
        self.clear_button.setEnabled(False)

        def clear() -> tuple[int, list[str], int]:
            # The answer cache may be open (the server answers from it): emptied in place, not deleted under it.
            answers = self.context.answers()
            dropped = 0
            if answers is not None:
                dropped = answers.clear()
                keep.extend(answers.path.with_name(answers.path.name + extra) for extra in ("", "-wal", "-shm"))
            return (*clear_derived_caches(keep), dropped)

        def done(result) -> None:
            freed, kept, dropped = result
            self.clear_button.setEnabled(True)
            text = f"Caches cleared: {freed / 1e6:.1f} MB freed; what was in them is rebuilt when next needed."
            if dropped:
                text += f" {dropped} answers kept for Immich's requests were dropped (`immich index` makes them again)."
            if kept:
                text += f" {len(kept)} item(s) in use were kept: {kept[0]}"
            self.message.show_note(text)

        def failed(error: BaseException) -> None:
            self.clear_button.setEnabled(True)
            self.message.show_error(error)

        run_task(clear, on_done=done, on_error=failed)

    # downloads --------------------------------------------------------------------------------------
    def _report_download(self, *args) -> None:
        """Download progress from a download thread, shown on the GUI thread: the model store's
        DownloadProgress, or (file name, done, total) from a model's own files (OCR)."""
        if len(args) == 3:
            name, done, total = args
        else:
            p = args[0]
            name, done, total = p.model, p.done, p.total
        self._download_signals.progress.emit(str(name), int(done), int(total))

    def _show_download(self, name: str, done: int, total: int) -> None:
        self.download_bar.show()
        if total > 0:
            self.download_bar.setRange(0, 1000)
            self.download_bar.setValue(int(1000 * done / total))
            self.download_bar.setFormat(f"Downloading {name}: {done / 1e6:.0f} of {total / 1e6:.0f} MB")
        else:
            self.download_bar.setRange(0, 0)
            self.download_bar.setFormat(f"Downloading {name}…")

    def download_missing(self) -> None:
        if not self.apply():
            return
        settings = self.context.settings
        self.download_button.setEnabled(False)
        self.message.show_note("Checking the model folder…")

        def fetch() -> list[str]:
            engine = self.context.engine()
            fetched = []
            started = time.monotonic()
            for task, types, name in (
                ("clip", ("visual", "textual"), settings.clip_model),
                ("facial-recognition", ("detection", "recognition"), settings.face_model),
            ):
                for model_type in types:
                    model = engine.get_model(task, model_type, name, load=False)
                    if not model.cached:
                        if not engine.allow_downloads:
                            from immich_ml_desktop.errors import ModelNotFoundError

                            raise ModelNotFoundError(
                                f"{name} is not in {settings.model_cache_dir}; tick 'Download missing models' "
                                "or copy the model there."
                            )
                        engine.download(model, progress=self._report_download)
                        fetched.append(f"{name} ({model_type})")
            return [f"{len(fetched)} file set(s) fetched in {time.monotonic() - started:.0f} s"] if fetched else []

        def done(result: list[str]) -> None:
            self.download_button.setEnabled(True)
            self.download_bar.hide()
            self.message.show_note(result[0] if result else "Every chosen model is already in the model folder.")
            self._refresh_models()
            if result:
                self.context.job_finished.emit("download", f"Models downloaded: {result[0]}", False)

        def failed(error: BaseException) -> None:
            self.download_button.setEnabled(True)
            self.download_bar.hide()
            self.message.show_error(error)
            self.context.job_finished.emit("download", f"Download failed: {describe_error(error)}", True)

        run_task(fetch, on_done=done, on_error=failed)

    def shutdown(self) -> None:
        self.context.download_progress = None

