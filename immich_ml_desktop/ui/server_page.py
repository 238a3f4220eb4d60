"""Server page: start/stop Immich's ML service on this machine and watch what it serves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from immich_ml_desktop.ui.workers import describe_error, run_task
from immich_ml_desktop.ui.widgets import Page, label

if TYPE_CHECKING:
    from immich_ml_desktop.server.ml_server import MlServer
    from immich_ml_desktop.services.send import SendJob

JOBS = ("smartSearch", "faceDetection", "ocr")  # Immich's jobs that call the ML service
ROUTE_WORDS = {"local": "on this machine", "forward": "handed on", "unavailable": "not served"}
ROUTE_TIPS = {"local": "Answered by this machine's models", "forward": "Handed on to the forward URL",
              "unavailable": "Answered with an error that names the task: nothing here serves it"}
TASK_WORDS = {
    ("clip", "visual"): "CLIP image", ("clip", "textual"): "CLIP text",
    ("facial-recognition", "detection"): "face detection", ("facial-recognition", "recognition"): "face recognition",
    ("ocr", "detection"): "OCR detection", ("ocr", "recognition"): "OCR recognition",
}


def task_words(task: str, model_type: str) -> str:
    return TASK_WORDS.get((task, model_type), f"{task} / {model_type}")
DEFAULT_OCR_MODEL = "PP-OCRv5_mobile"  # what Immich asks for unless its admin chose another
NOT_CONNECTED = "Connect to Immich on the Push page (Connect…) to register this server and start jobs."


@dataclass(frozen=True)
class TaskRow:
    task: str
    model_type: str
    model: str  # the model this task uses (the app's settings; Immich's default for OCR)
    route: str  # local | forward | unavailable
    present: bool  # its files are on disk (or ship with the app)
    source: str  # where its files come from
    served_by: str = ""  # the model class that answers it here (and, if not built in, where it comes from)


def model_source(model) -> str:
    """Where a model's files come from: the host of its own files (OCR: RapidOCR's), Immich's packs on
    Hugging Face (or the mirror in HF_ENDPOINT), or nowhere known."""
    from urllib.parse import urlparse

    from immich_ml_desktop.model_store import catalog
    from immich_ml_desktop.model_store.store import ModelStore

    sources = model.file_sources()
    if sources:
        return urlparse(sources[0].url).netloc
    if sources is None and catalog.lookup(model.model_name) is not None:
        return f"{urlparse(ModelStore('.').endpoint).netloc}/immich-app/{model.model_name}"
    if model.cached:
        return "your model folder (not in Immich's catalogue)"
    return "nowhere known: copy it into the model folder"


def task_rows(engine, settings, forward_url: str) -> list[TaskRow]:
    """Every task Immich may send, the model it uses here and whether that model is on disk."""
    from immich_ml_desktop.models.registry import BUILT_IN, model_classes, served_tasks
    from immich_ml_desktop.server.ml_server import IMMICH_TASKS

    local = set(served_tasks())
    names = {"clip": settings.clip_model, "facial-recognition": settings.face_model, "ocr": DEFAULT_OCR_MODEL}
    rows = []
    for task, model_type in IMMICH_TASKS:
        route = "local" if (task, model_type) in local else ("forward" if forward_url else "unavailable")
        name = names.get(task, "")
        present, source, served_by = False, "", ""
        if route == "local" and name:
            try:
                model = engine.get_model(task, model_type, name, load=False)
                present, source = model.cached, model_source(model)
                origin = next((i.source for i in model_classes(task, model_type) if i.cls is type(model)), BUILT_IN)
                served_by = type(model).__name__ + ("" if origin == BUILT_IN else f" ({origin})")
            except Exception as e:  # noqa: BLE001 - an unknown name: say so in the row
                source = describe_error(e)
        rows.append(TaskRow(task, model_type, name, route, present, source, served_by))
    return rows


class ServerPage(Page):
    page_name = "Server"
    page_tip = "Be Immich's machine-learning service"

    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(
            "ML server",
            "Immich sends its photos here and gets CLIP and face vectors back, computed on this machine. "
            "Start the server, then put its URL into Immich (Administration → Settings → Machine Learning) "
            "or let the app register it.",
            parent,
        )
        self.context = context
        self.server: MlServer | None = None
        s = context.settings

        form = QFormLayout()
        self.host = QLineEdit(s.server_host)
        self.host.setToolTip("127.0.0.1 accepts only this computer; 0.0.0.0 accepts the network (add allowed addresses)")
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(s.server_port)
        self.port.setToolTip("Immich's ML service listens on 3003 by default")
        self.allow = QLineEdit(", ".join(s.server_allow))
        self.allow.setPlaceholderText("e.g. 192.168.1.10, 10.0.0.0/24 (only this computer when empty)")
        self.allow.setToolTip("Addresses or networks allowed to use the server besides this computer")
        self.forward = QLineEdit(s.forward_url)
        self.forward.setPlaceholderText("e.g. http://immich-machine-learning:3003 (optional)")
        self.forward.setToolTip("Tasks this app does not run (e.g. OCR without its model) are handed on to this ML service")
        self.preload = QCheckBox("Load the CLIP and face models when the server starts")
        self.preload.setChecked(bool(s.server_preload))
        self.preload.setToolTip("The first request is then answered at full speed")
        form.addRow("&Host", self.host)
        form.addRow("&Port", self.port)
        form.addRow("&Allowed", self.allow)
        form.addRow("&Forward to", self.forward)
        form.addRow("", self.preload)
        box = QWidget()
        box.setLayout(form)
        box.setMaximumWidth(760)
        self.body.addWidget(box)

        row = QHBoxLayout()
        self.start_button = QPushButton("&Start server")
        self.start_button.setToolTip("Start or stop the ML server (Ctrl+Return)")
        self.start_button.setShortcut("Ctrl+Return")
        self.start_button.clicked.connect(self.toggle)
        self.url_label = QLabel("Not running.")
        self.url_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.copy_button = QPushButton("Copy URL")
        self.copy_button.setEnabled(False)
        self.copy_button.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.server.url if self.server else ""))
        row.addWidget(self.start_button)
        row.addWidget(self.url_label, 1)
        row.addWidget(self.copy_button)
        self.body.addLayout(row)

        stats_box = QGroupBox("Activity")
        grid = QGridLayout(stats_box)
        self.stat_labels: dict[str, QLabel] = {}
        for i, (key, text) in enumerate(
            (("requests", "Requests served"), ("speed", "Requests per second"), ("mean", "Mean answer time"),
             ("errors", "Errors"), ("forwarded", "Handed on"), ("per_task", "By task"))
        ):
            grid.addWidget(label(text, "hint"), i // 3 * 2, i % 3)
            value = QLabel("–")
            value.setStyleSheet("font-size: 16px;")
            self.stat_labels[key] = value
            grid.addWidget(value, i // 3 * 2 + 1, i % 3)
        self.body.addWidget(stats_box)

        immich_box = QGroupBox("Immich")
        immich_row = QHBoxLayout(immich_box)
        self.register_button = QPushButton("&Register in Immich")
        self.register_button.setToolTip("Put this server's URL first in Immich's machine-learning URLs (admin key); "
                                        "Immich's own service stays as a fallback")
        self.register_button.clicked.connect(lambda: self.immich_action("register"))
        self.unregister_button = QPushButton("U&nregister")
        self.unregister_button.setToolTip("Take this server's URL out of Immich's machine-learning URLs")
        self.unregister_button.clicked.connect(lambda: self.immich_action("unregister"))
        self.jobs_button = QPushButton("Start &jobs")
        self.jobs_button.setToolTip("Start Immich's Smart Search and Face Detection jobs for assets that miss them")
        self.jobs_button.clicked.connect(lambda: self.immich_action("jobs"))
        self.send_button = QPushButton("Send to &Immich")
        self.send_button.setToolTip("Get what the library computed for this Immich server into Immich: its Smart Search "
                                    "and Face Detection jobs are answered from the library through this server, then "
                                    "Immich's ML URLs are put back (admin key)")
        self.send_button.clicked.connect(self.toggle_send)
        self.send_job: SendJob | None = None
        self.immich_label = label(NOT_CONNECTED, "hint")
        self.immich_label.setWordWrap(True)
        for b in (self.register_button, self.unregister_button, self.jobs_button, self.send_button):
            immich_row.addWidget(b)
            b.setEnabled(False)  # until a connection is known
        immich_row.addWidget(self.immich_label, 1)
        self.body.addWidget(immich_box)

        tables = QHBoxLayout()
        self.models_table = self._table(["Model loaded", "Task", "Device", "Precision", "Idle"])
        header = self.models_table.horizontalHeader()
        header.setStretchLastSection(False)  # Device, Precision and Idle keep their width; name and task give way
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.models_table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.routes_table = self._table(["Task", "Model", "Here", "Served by", "Files come from"])
        routes_header = self.routes_table.horizontalHeader()
        routes_header.setStretchLastSection(False)
        for column, mode in enumerate((QHeaderView.ResizeMode.ResizeToContents, QHeaderView.ResizeMode.Stretch,
                                       QHeaderView.ResizeMode.ResizeToContents, QHeaderView.ResizeMode.Stretch,
                                       QHeaderView.ResizeMode.Stretch)):
            routes_header.setSectionResizeMode(column, mode)  # the long ones share the width, elided in the middle
        self.routes_table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.routes_table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        models_group = QGroupBox("Models loaded")
        QVBoxLayout(models_group).addWidget(self.models_table)
        tasks_group = QGroupBox("Tasks Immich sends")
        tasks_layout = QVBoxLayout(tasks_group)
        self.routes_table.setToolTip("Enter or double-click a missing model to download it")
        self.routes_table.itemActivated.connect(lambda item: self.download_missing(only={self.task_rows[item.row()].model}))
        tasks_layout.addWidget(self.routes_table)
        fetch_row = QHBoxLayout()
        self.missing_label = label("", "hint")
        self.fetch_button = QPushButton("&Download missing models")
        self.fetch_button.setToolTip("Fetch the models marked missing from where their files come from")
        self.fetch_button.clicked.connect(lambda: self.download_missing())
        self.fetch_button.hide()
        fetch_row.addWidget(self.missing_label, 1)
        fetch_row.addWidget(self.fetch_button)
        tasks_layout.addLayout(fetch_row)
        tables.addWidget(models_group, 2)
        tables.addWidget(tasks_group, 3)  # five columns, two of them long
        self.body.addLayout(tables, 1)
        self.task_rows: list[TaskRow] = []
        context.settings_changed.connect(self._settings_changed)

        from immich_ml_desktop.services.immich_ml import QueueWatch

        self.queue_watch = QueueWatch()
        self.queue_timer = QTimer(self)
        self.queue_timer.setInterval(5000)
        self.queue_timer.timeout.connect(self.refresh_queues)
        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self.refresh)
        self.refresh_connection()

    def _settings_changed(self, _settings) -> None:
        self.refresh_tasks()
        self.refresh_connection()

    @staticmethod
    def _table(headers: list[str]) -> QTableWidget:
        table = QTableWidget(0, len(headers))
        table.setHorizontalHeaderLabels(headers)
        table.verticalHeader().hide()
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        table.horizontalHeader().setStretchLastSection(True)
        table.setWordWrap(False)
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        table.setAlternatingRowColors(True)
        table.verticalHeader().setDefaultSectionSize(table.fontMetrics().height() + 8)  # six tasks fit
        return table

    # start / stop -----------------------------------------------------------------------------------
    def toggle(self) -> None:
        if self.server is None:
            self.start()
        else:
            self.stop()

    def start(self) -> None:
        allow = [a.strip() for a in self.allow.text().replace(";", ",").split(",") if a.strip()]
        settings = self.context.updated_settings(
            server_host=self.host.text().strip() or "127.0.0.1",
            server_port=self.port.value(),
            server_allow=allow,
            forward_url=self.forward.text().strip(),
            server_preload=[self.context.settings.clip_model, self.context.settings.face_model] if self.preload.isChecked() else [],
        )
        try:
            self.context.apply_settings(settings)
        except (ValueError, OSError) as e:
            self.message.show_error(str(e))
            return
        self.message.clear_message()
        self._busy("Starting…")

        def start_server():
            from immich_ml_desktop.server.ml_server import MlServer

            server = MlServer(
                self.context.engine(), settings.server_host, settings.server_port,
                allow=settings.server_allow, forward_url=settings.forward_url, answers=self.context.answers(),
            )
            server.start()
            try:
                if settings.server_preload:
                    server.preload(settings.server_preload)
            except BaseException:
                server.stop()
                raise
            return server

        run_task(start_server, on_done=self._started, on_error=self._failed)

    def _started(self, server) -> None:
        self.server = server
        self.start_button.setEnabled(True)
        self.start_button.setText("&Stop server")
        self.url_label.setText(f"Running at <b>{server.url}</b>")
        self.copy_button.setEnabled(True)
        self._set_fields_enabled(False)
        self.context.status.emit(f"ML server running at {server.url}")
        self.context.job_finished.emit("server", f"ML server running at {server.url}", False)
        self.timer.start()
        self.refresh()
        self.refresh_tasks()

    def _failed(self, error: BaseException) -> None:
        self.start_button.setEnabled(True)
        self.start_button.setText("&Start server")
        self.url_label.setText("Not running.")
        self.message.show_error(error)
        self.context.job_finished.emit("server", f"The ML server could not start: {describe_error(error)}", True)

    def stop(self) -> None:
        if self.send_job is not None:
            self.send_job.cancel()  # Immich's URLs go back before this server goes away
        server, self.server = self.server, None
        if server is None:
            return
        self.timer.stop()
        self._busy("Stopping…")
        run_task(server.stop, on_done=lambda _r: self._stopped(), on_error=self._failed)

    def _stopped(self) -> None:
        self.start_button.setEnabled(True)
        self.start_button.setText("&Start server")
        self.url_label.setText("Not running.")
        self.copy_button.setEnabled(False)
        self._set_fields_enabled(True)
        self.context.status.emit("ML server stopped")

    def _busy(self, text: str) -> None:
        self.start_button.setEnabled(False)
        self.url_label.setText(text)

    def _set_fields_enabled(self, enabled: bool) -> None:
        for w in (self.host, self.port, self.allow, self.forward, self.preload):
            w.setEnabled(enabled)

    # live figures -----------------------------------------------------------------------------------
    def refresh(self) -> None:
        if self.server is None:
            return
        stats = self.server.stats
        self.stat_labels["requests"].setText(f"{stats.requests:,}")
        self.stat_labels["speed"].setText(f"{stats.requests_per_second:.1f}")
        self.stat_labels["mean"].setText(f"{stats.mean_ms:.0f} ms" if stats.requests else "–")
        self.stat_labels["errors"].setText(f"{stats.errors:,}")
        self.stat_labels["forwarded"].setText(f"{stats.forwarded:,}")
        self.stat_labels["per_task"].setText(", ".join(f"{k} {v}" for k, v in sorted(stats.per_task.items())) or "–")
        models = self.server.engine.loaded_models()
        if len(models) != self.models_table.rowCount():
            self.refresh_tasks()  # a model loaded: the first request may have downloaded it
        self.models_table.setRowCount(len(models))
        for r, m in enumerate(models):
            row = (m["name"], task_words(m["task"], m["type"]), m["device"] or "", m["precision"] or "", f"{m['idle_seconds']:.0f} s")
            for c, value in enumerate(row):
                item = QTableWidgetItem(str(value))
                item.setToolTip(str(value))
                self.models_table.setItem(r, c, item)

    # the tasks and their models -------------------------------------------------------------------------
    def page_shown(self) -> None:
        self.refresh_tasks()
        self.refresh_connection()

    def refresh_tasks(self) -> None:
        settings = self.context.settings
        forward = self.server.forward_url if self.server is not None else settings.forward_url
        run_task(lambda: task_rows(self.context.engine(), settings, forward), on_done=self._show_tasks,
                 on_error=lambda e: self.missing_label.setText(describe_error(e)))

    def _show_tasks(self, rows: list[TaskRow]) -> None:
        self.task_rows = rows
        self.routes_table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            tip = ROUTE_TIPS[row.route]
            if row.route != "local":
                here = ROUTE_WORDS[row.route]
            elif row.present:
                here = "on this machine"
            else:
                here = "missing"
                tip = ("Missing: downloaded on the first request (downloads are allowed in Settings)"
                       if self.context.settings.allow_downloads else
                       "Missing: requests fail until it is downloaded (Download missing models, or Enter here)")
            values = (task_words(row.task, row.model_type), row.model, here, row.served_by,
                      row.source if row.route == "local" else "")
            for c, value in enumerate(values):
                item = QTableWidgetItem(value)
                item.setToolTip(tip if c == 2 else value)
                if c == 2 and row.route == "local" and not row.present:
                    item.setForeground(Qt.GlobalColor.darkRed)
                self.routes_table.setItem(r, c, item)
        missing = self.missing_models()
        from immich_ml_desktop.models.registry import plugin_problems

        problems = plugin_problems()  # a model package that failed to load: its tasks are not served
        text = "Missing: " + "; ".join(f"{name} (from {source})" for name, source in missing.items()) if missing else ""
        self.missing_label.setText("  ".join(filter(None, [text, *(f"Not loaded: {p}" for p in problems)])))
        self.fetch_button.setVisible(bool(missing))

    def missing_models(self) -> dict[str, str]:
        """Models a task served here needs but that are not on disk: name -> where they come from."""
        return {r.model: r.source for r in self.task_rows if r.route == "local" and not r.present and r.model}

    def download_missing(self, only: set[str] | None = None) -> None:
        """Download the missing models of the tasks served here (`only`: just these names)."""
        rows = [r for r in self.task_rows if r.route == "local" and not r.present and r.model
                and (only is None or r.model in only)]
        if not rows:
            return
        self.fetch_button.setEnabled(False)
        self.missing_label.setText("Downloading " + ", ".join(dict.fromkeys(r.model for r in rows)) + "…")

        def fetch() -> int:
            engine = self.context.engine()
            for r in rows:
                model = engine.get_model(r.task, r.model_type, r.model, load=False)
                if not model.cached:
                    engine.download(model, progress=lambda *a: None)
            return len(rows)

        def done(_n) -> None:
            self.fetch_button.setEnabled(True)
            self.context.job_finished.emit("download", "Models downloaded: " + ", ".join(dict.fromkeys(r.model for r in rows)), False)
            self.refresh_tasks()

        def failed(error: BaseException) -> None:
            self.fetch_button.setEnabled(True)
            self.message.show_error(error)
            self.context.job_finished.emit("download", f"Download failed: {describe_error(error)}", True)
            self.refresh_tasks()

        run_task(fetch, on_done=done, on_error=failed)

    # the connection to Immich ------------------------------------------------------------------------
    def refresh_connection(self) -> None:
        url = self.context.settings.immich_url

        def has_key() -> bool:
            from immich_ml_desktop.immich.credentials import saved_api_key

            return bool(url) and bool(self.context.immich_key or saved_api_key(url))

        run_task(has_key, on_done=self._show_connection, network=True)

    def _show_connection(self, connected: bool) -> None:
        for b in (self.register_button, self.unregister_button, self.jobs_button, self.send_button):
            b.setEnabled(connected)
        if not connected:
            self.immich_label.setText(NOT_CONNECTED)
        elif self.immich_label.text() == NOT_CONNECTED:
            self.immich_label.setText(f"Connected to {self.context.settings.immich_url}.")

    # Immich ---------------------------------------------------------------------------------------------
    def immich_action(self, what: str) -> None:
        settings = self.context.settings
        port = self.server.port if self.server is not None else settings.server_port
        self.immich_label.setText("Talking to Immich…")

        def act() -> str:
            from immich_ml_desktop.services import immich_ml

            with self.context.immich_client() as client:
                ml_url = immich_ml.reachable_url(client.base_url, port, settings.server_host)
                if what == "register":
                    urls, changed = immich_ml.register_url(client, ml_url)
                    return ("Registered" if changed else "Already first") + ": Immich's ML URLs are " + ", ".join(urls)
                if what == "unregister":
                    urls, changed = immich_ml.unregister_url(client, ml_url)
                    return ("Unregistered" if changed else f"{ml_url} was not registered") + "; ML URLs: " + ", ".join(urls)
                jobs = self._jobs(immich_ml.read_ml_config(client))
                immich_ml.start_jobs(client, jobs)
                return "Jobs started. " + self._queue_text(immich_ml.queue_counts(client, tuple(jobs)))

        def done(text: str) -> None:
            self.immich_label.setText(text)
            if what == "jobs":
                self.queue_timer.start()

        def failed(error: BaseException) -> None:
            self.immich_label.setText("")
            self.message.show_error(error)

        run_task(act, on_done=done, on_error=failed,
                 network=True)

    def _queue_text(self, counts) -> str:
        parts = []
        for c in counts:
            eta, rate = self.queue_watch.eta(c), self.queue_watch.rate(c)
            # Immich 3.1 counts no finished job: "done" is what left the queue while this page watched.
            text = f"{c.name}: {c.waiting} waiting, {c.active} active, {self.queue_watch.done(c)} done"
            if rate:
                text += f", {rate:.1f}/s"
            if eta:
                text += f", about {eta / 60:.0f} min left" if eta >= 90 else f", about {eta:.0f} s left"
            parts.append(text)
        return "; ".join(parts)

    def refresh_queues(self) -> None:
        """Immich's ML queues (and, next to them, our own request rate in Activity), every few seconds."""
        def read() -> tuple[str, bool]:
            from immich_ml_desktop.services import immich_ml

            with self.context.immich_client() as client:
                counts = immich_ml.queue_counts(client, tuple(self._jobs(immich_ml.read_ml_config(client))))
            return self._queue_text(counts), all(c.remaining == 0 for c in counts)

        def show(result) -> None:
            text, finished = result
            self.immich_label.setText(("Immich's jobs are done. " if finished else "") + text)
            if finished:
                self.queue_timer.stop()
                self.context.job_finished.emit("immich-jobs", "Immich's Smart Search and Face Detection jobs are done", False)

        def failed(error: BaseException) -> None:
            self.queue_timer.stop()
            self.message.show_error(error)

        run_task(read, on_done=show, on_error=failed,
                 network=True)

    @staticmethod
    def _jobs(ml) -> list[str]:
        """The ML jobs Immich has switched on (OCR only where it is)."""
        on = {"smartSearch": ml.clip_enabled, "faceDetection": ml.faces_enabled, "ocr": ml.ocr_enabled}
        return [job for job in JOBS if on[job]]

    # Send to Immich ---------------------------------------------------------------------------------
    def toggle_send(self) -> None:
        if self.send_job is not None:
            self.send_job.cancel()
            self.send_button.setEnabled(False)
            self.immich_label.setText("Stopping; putting Immich's ML URLs back…")
            return
        server = self.server
        if server is None:
            self.message.show_error("Start the server first: Immich sends its requests to it, and it answers them "
                                    "from the library.")
            return
        settings = self.context.settings
        self.immich_label.setText("Sending…")
        self.send_button.setText("Stop send&ing")

        def send(progress) -> object:
            from immich_ml_desktop.services import immich_ml
            from immich_ml_desktop.services import send as sending

            kinds = sending.library_kinds(self.context.library(), settings.clip_model, settings.face_model)
            with self.context.immich_client() as client:
                notes = sending.differences(immich_ml.read_ml_config(client), settings.clip_model, settings.face_model,
                                            settings.face_min_score)
                ml_url = immich_ml.reachable_url(client.base_url, server.port, settings.server_host)
                job = self.send_job = sending.SendJob(client, ml_url, kinds=kinds, stats=lambda: server.stats,
                                                      progress=progress, warnings=notes)
                return job.run()

        run_task(send, on_progress=self._send_progress, on_done=self._sent, on_error=self._send_failed, long_job=True)

    def _send_progress(self, p) -> None:
        parts = []
        for q in p.queues:
            text = f"{q.name}: {q.remaining} left, {q.done} done"
            if q.per_second and q.remaining:
                text += f", {q.per_second:.1f}/s"
            if q.eta and q.remaining:
                text += f", about {q.eta / 60:.0f} min left" if q.eta >= 90 else f", about {q.eta:.0f} s left"
            parts.append(text)
        self.immich_label.setText(f"Sending: {p.from_library} answers from the library, {p.computed} computed"
                                  + (f", {p.errors} errors" if p.errors else "") + ". " + "; ".join(parts))

    def _send_done(self) -> None:
        self.send_job = None
        self.send_button.setEnabled(True)
        self.send_button.setText("Send to &Immich")

    def _sent(self, summary) -> None:
        self._send_done()
        what = (f"{'Stopped' if summary.cancelled or summary.stalled else 'Sent'}: {summary.from_library} answers from the library, "
                f"{summary.computed} computed, {summary.errors} errors. Immich's ML URLs are back as they were.")
        self.immich_label.setText(" ".join([what, *summary.warnings]))
        self.context.job_finished.emit("immich-send", what, summary.cancelled or summary.stalled or bool(summary.errors))

    def _send_failed(self, error: BaseException) -> None:
        self._send_done()
        self.immich_label.setText("")
        self.message.show_error(error)

    def shutdown(self) -> None:
        if self.send_job is not None:
            self.send_job.cancel()  # its run puts Immich's ML URLs back before it returns
        self.timer.stop()
        self.queue_timer.stop()
        if self.server is not None:
            self.server.stop()
            self.server = None
