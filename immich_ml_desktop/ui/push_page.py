"""Push page: send the reviewed people to Immich: a plan first (dry run, nothing written), then apply
with progress, and undo the last push from its log."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QPushButton, QWidget

from immich_ml_desktop.ui.workers import describe_error, relay, run_task
from immich_ml_desktop.ui.widgets import Page, label


class PushSignals(QObject):
    step = Signal(int, int, str)  # done, total, what


class PushPage(Page):
    page_name = "Push"
    page_tip = "Send reviewed people to Immich (plan, apply, undo)"

    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(
            "Push people to Immich",
            "Review faces on the People page first (name, merge, hide). Plan shows what would change in Immich, "
            "without writing anything; Apply does it step by step and keeps an undo log.",
            parent,
        )
        self.context = context
        self.plan = None
        row = QHBoxLayout()
        self.server_label = QLabel()
        self.connect_button = QPushButton("&Connect…")
        self.connect_button.setToolTip("Immich server address and API key")
        self.connect_button.clicked.connect(self.open_connect)
        row.addWidget(self.server_label, 1)
        row.addWidget(self.connect_button)
        self.body.addLayout(row)

        buttons = QHBoxLayout()
        self.all_groups = QCheckBox("Include groups I have not reviewed")
        self.all_groups.setToolTip("Normally only groups you named, merged, moved faces into or hid are pushed")
        self.plan_button = QPushButton("&Plan (dry run)")
        self.plan_button.setToolTip("Match your groups to Immich's faces and list the changes; nothing is written")
        self.plan_button.clicked.connect(self.make_plan)
        self.apply_button = QPushButton("&Apply")
        self.apply_button.setToolTip("Write the planned changes to Immich (they can be undone)")
        self.apply_button.clicked.connect(self.apply)
        self.undo_button = QPushButton("&Undo last push")
        self.undo_button.setToolTip("Put Immich's people back as they were before the last push")
        self.undo_button.clicked.connect(self.undo)
        buttons.addWidget(self.all_groups)
        buttons.addStretch(1)
        for b in (self.plan_button, self.apply_button, self.undo_button):
            buttons.addWidget(b)
        self.body.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.hide()
        self.body.addWidget(self.progress)
        self.step_label = label("", "hint")
        self.body.addWidget(self.step_label)
        self.plan_text = QPlainTextEdit()
        self.plan_text.setReadOnly(True)
        self.plan_text.setPlaceholderText("No plan yet. Connect to Immich, then press Plan.")
        self.body.addWidget(self.plan_text, 1)

        self.signals = PushSignals(self)
        self.signals.step.connect(self._on_step)
        context.settings_changed.connect(lambda _s: self._show_server())
        self._show_server()
        self._set_busy(False)

    def _show_server(self) -> None:
        url = self.context.settings.immich_url
        self.server_label.setText(f"Immich server: <b>{url}</b>" if url else "Not connected to an Immich server yet.")

    def open_connect(self) -> None:
        from immich_ml_desktop.ui.connect_dialog import ConnectDialog

        ConnectDialog(self.context, self).exec()

    def _set_busy(self, busy: bool) -> None:
        self.plan_button.setEnabled(not busy)
        self.apply_button.setEnabled(not busy and self.plan is not None and self.plan.state == "planned")
        self.undo_button.setEnabled(not busy)
        self.connect_button.setEnabled(not busy)

    def _failed(self, error: BaseException, what: str | None = None) -> None:
        self._set_busy(False)
        self.progress.hide()
        self.step_label.setText("")  # "Reading Immich's faces…" must not stay after an error
        self.message.show_error(error)
        if what:
            self.context.job_finished.emit("push", f"{what} failed: {describe_error(error)}", True)

    # plan / apply / undo ------------------------------------------------------------------------------
    def make_plan(self) -> None:
        include_all = self.all_groups.isChecked()
        face_model = self.context.settings.face_model
        self.message.clear_message()
        self._set_busy(True)
        self.step_label.setText("Reading Immich's faces and people…")

        def plan():
            from immich_ml_desktop.errors import InvalidInputError
            from immich_ml_desktop.library.people import People
            from immich_ml_desktop.services.push import build_plan, reviewed_people

            people = reviewed_people(People(self.context.library(), face_model), include_unreviewed=include_all)
            if not people:
                raise InvalidInputError(
                    "No reviewed face groups with faces on this server's photos: index the server on the Library "
                    "page, then name, merge or hide groups on the People page (or include unreviewed groups)."
                )
            with self.context.immich_client() as client:
                return build_plan(client, people)

        run_task(plan, on_done=self._show_plan, on_error=self._failed, network=True)

    def _show_plan(self, plan) -> None:
        self.plan = plan
        self._set_busy(False)
        self.step_label.setText("Dry run: nothing was written to Immich. Press Apply to make these changes.")
        self.plan_text.setPlainText("\n".join(plan.describe()))

    def apply(self) -> None:
        plan = self.plan
        if plan is None:  # Apply is enabled only once a dry run made a plan
            return
        self._set_busy(True)
        self.progress.setRange(0, max(1, len(plan.steps)))
        self.progress.setValue(0)
        self.progress.show()

        def run():
            from immich_ml_desktop.services.push import PushRun, pushes_dir

            plan.save(pushes_dir(self.context.settings.library_path) / f"push-{plan.id}.json")
            with self.context.immich_client() as client:
                return PushRun(client, plan, progress=relay(self.signals.step)).apply()

        run_task(run, on_done=lambda p: self._done(p, "applied"), on_error=lambda e: self._failed(e, "The push"),
                 long_job=True)

    def undo(self) -> None:
        self._set_busy(True)
        self.message.clear_message()

        def run():
            from immich_ml_desktop.errors import InvalidInputError
            from immich_ml_desktop.services.push import PushPlan, PushRun, pushes_dir

            folder = pushes_dir(self.context.settings.library_path)
            plan = PushPlan.latest(folder)
            if plan is None:
                raise InvalidInputError("Nothing to undo: no push has been applied from this library.")
            with self.context.immich_client() as client:
                return PushRun(client, plan, progress=relay(self.signals.step)).revert()

        self.progress.setRange(0, 0)
        self.progress.show()
        run_task(run, on_done=lambda p: self._done(p, "undone"), on_error=lambda e: self._failed(e, "Undoing the push"),
                 long_job=True)

    def _on_step(self, done: int, total: int, what: str) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)
        self.step_label.setText(f"[{done}/{total}] {what}")

    def _done(self, plan, verb: str) -> None:
        self.plan = plan
        self._set_busy(False)
        self.progress.hide()
        done, total = plan.progress()
        self.step_label.setText(f"Push {plan.id} {plan.state}: {done} of {total} steps {verb}. Log: {plan.path}")
        self.context.status.emit(f"Push {verb}")
        self.context.job_finished.emit("push", f"Push {plan.id} {verb}: {done} of {total} steps", False)
