"""Small widgets every page uses: a page title with a hint, an in-place message line, an empty state."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from immich_ml_desktop.ui.workers import describe_error, window_words


def label(text: str, role: str | None = None, *, wrap: bool = True) -> QLabel:
    widget = QLabel(text)
    widget.setWordWrap(wrap)
    if role:
        widget.setProperty("role", role)
    return widget


class MessageLine(QLabel):
    """Shows an error (red) or a note in place, next to what caused it; empty means hidden."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.hide()

    def show_error(self, error: BaseException | str) -> None:
        self._show(window_words(error) if isinstance(error, str) else describe_error(error), "error")

    def show_note(self, text: str) -> None:
        self._show(text, "hint")

    def clear_message(self) -> None:
        self.setText("")
        self.hide()

    def _show(self, text: str, role: str) -> None:
        self.setProperty("role", role)
        self.style().unpolish(self)
        self.style().polish(self)
        self.setText(text)
        self.setVisible(bool(text))


class Page(QWidget):
    """A page of the main window: a title, a hint, then the page's own content in `self.body`."""

    page_name = ""
    page_tip = ""

    def __init__(self, title: str, hint: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(20, 16, 20, 12)
        outer.setSpacing(10)
        outer.addWidget(label(title, "title"))
        self.hint = label(hint, "hint")
        outer.addWidget(self.hint)
        self.message = MessageLine()
        self.body = QVBoxLayout()
        self.body.setSpacing(10)
        outer.addLayout(self.body, 1)
        outer.addWidget(self.message)


def empty_state(text: str) -> QLabel:
    widget = label(text, "empty")
    widget.setAlignment(Qt.AlignmentFlag.AlignCenter)
    return widget
