"""Connect dialog: the Immich server's URL and an API key (kept in the OS keyring), with a Test button
that says plainly whether the server answers, its version, and what the key may and may not do."""

from __future__ import annotations

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QFormLayout, QLineEdit, QPushButton, QVBoxLayout, QWidget

from immich_ml_desktop.ui.workers import run_task
from immich_ml_desktop.ui.widgets import MessageLine, label


def check_connection(url: str, key: str) -> str:
    """One paragraph for the user: server version, key name, admin or not, features the key cannot use."""
    from immich_ml_desktop.immich.client import FEATURES, ImmichClient

    with ImmichClient(url, key, retries=1) as client:
        version = client.check_version()
        check = client.check_key()
    admin = {True: "an admin key", False: "not an admin key", None: "admin unknown"}[check.is_admin]
    lines = [f"Connected: Immich {version} at {client.base_url}; key '{check.name}' ({admin})."]
    for feature in FEATURES:
        lacks = check.missing.get(feature)
        lines.append(f"• {feature}: " + ("ok" if not lacks else "needs " + ", ".join(lacks)))
    return "\n".join(lines)


NO_KEYRING = ("This computer has no keyring (e.g. GNOME Keyring or KWallet), so the key is kept only until "
              "the app closes: you will enter it again after a restart.")


def keyring_available() -> bool:
    """Whether `keyring` has a backend that can store secrets (its `fail` backend means none)."""
    try:
        import keyring
        from keyring.backends import fail

        return not isinstance(keyring.get_keyring(), fail.Keyring)
    except Exception:  # noqa: BLE001 - a broken keyring install counts as none
        return False


class ConnectDialog(QDialog):
    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        from immich_ml_desktop.immich.credentials import saved_api_key

        self.context = context
        self.setWindowTitle("Connect to Immich")
        self.setMinimumWidth(520)
        layout = QVBoxLayout(self)
        layout.addWidget(label(
            "The address you open Immich at, and an API key (Immich → Account Settings → API Keys). "
            "The key is kept in this computer's keyring.", "hint"))
        form = QFormLayout()
        self.url = QLineEdit(context.settings.immich_url)
        self.url.setPlaceholderText("https://photos.example.com")
        self.url.setToolTip("With or without /api")
        self.key = QLineEdit(context.immich_key or "")
        self.key.setEchoMode(QLineEdit.EchoMode.Password)
        self.key.setPlaceholderText("API key")
        form.addRow("&Address", self.url)  # not "&Server": Alt+S is Save
        form.addRow("API &key", self.key)
        self.keyring_note = label(NO_KEYRING, "error")
        self.keyring_note.hide()
        form.addRow("", self.keyring_note)
        layout.addLayout(form)
        self.verdict = MessageLine()
        layout.addWidget(self.verdict)
        self.test_button = QPushButton("&Test")
        self.test_button.setToolTip("Check the server and what this key may do (nothing is changed)")
        self.test_button.clicked.connect(self.test)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.addButton(self.test_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.last_verdict = ""
        # The keyring is asked off the GUI thread: its first use loads its backends (seconds on a busy machine).
        url = context.settings.immich_url

        def ask_keyring() -> tuple[bool, str | None]:
            return keyring_available(), (saved_api_key(url) if url and not context.immich_key else None)

        run_task(ask_keyring, on_done=self._show_keyring)

    def _show_keyring(self, result) -> None:
        available, saved = result
        if not available:
            self.keyring_note.show()
        if saved and not self.key.text():
            self.key.setText(saved)

    def test(self) -> None:
        url, key = self.url.text().strip(), self.key.text().strip()
        if not url:
            self.verdict.show_error("Enter the address of your Immich server.")
            return
        self.test_button.setEnabled(False)
        self.verdict.show_note("Testing…")

        def done(text: str) -> None:
            self.test_button.setEnabled(True)
            self.last_verdict = text
            self.verdict.show_note(text)

        def failed(error: BaseException) -> None:
            self.test_button.setEnabled(True)
            self.last_verdict = str(error)
            self.verdict.show_error(error)

        run_task(check_connection, url, key, on_done=done, on_error=failed, network=True)

    def save(self) -> None:
        from immich_ml_desktop.immich.credentials import save_api_key

        url, key = self.url.text().strip(), self.key.text().strip()
        if not url or not key:
            self.verdict.show_error("Enter both the server address and an API key.")
            return
        self.context.immich_key = key  # before the settings change: pages re-check the connection then
        self.context.apply_settings(self.context.updated_settings(immich_url=url))
        if not save_api_key(url, key) and not self.keyring_note.isVisible():
            # The keyring refused it: say so here, where the key was typed; Save again closes.
            self.keyring_note.setText("The keyring did not take the key, so it is kept only until the app closes. "
                                      "Press Save again to continue.")
            self.keyring_note.show()
            return
        self.accept()
