"""The real main window (offscreen): pages, keyboard navigation, state and settings kept between runs."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt

from immich_ml_desktop.settings import Settings
from _ui_helpers import activate, finish_background_work, make_window, ui_settings  # noqa: F401 - fixture


def test_window_remembers_geometry_and_page(qtbot, tmp_path: Path, models_dir: Path) -> None:
    state = tmp_path / "window.ini"
    window = make_window(qtbot, ui_settings(tmp_path, models_dir), state)
    activate(qtbot, window)
    names = list(window.pages)
    assert names == ["Library", "Search", "People", "Push", "Server", "Settings"]
    qtbot.keyClick(window, Qt.Key(Qt.Key.Key_1.value + len(names) - 1), Qt.KeyboardModifier.ControlModifier)
    assert window.stack.currentWidget() is window.page("Settings")
    window.resize(781, 555)
    size = (window.width(), window.height())
    window.close()

    again = make_window(qtbot, Settings.load(), state)
    assert again.stack.currentWidget() is again.page("Settings")
    assert (again.width(), again.height()) == size == (781, 555)


def test_settings_page_saves_and_rejects_in_place(qtbot, tmp_path: Path, models_dir: Path) -> None:
    window = make_window(qtbot, ui_settings(tmp_path, models_dir), tmp_path / "w.ini")
    page = window.page("Settings")
    window.show_page("Settings")
    qtbot.waitUntil(lambda: page.device.findData("openvino:CPU") >= 0 or page.device.count() > 2, timeout=10000)
    assert page.clip_model.findText("tiny-random-clip") >= 0, "models on disk are offered"
    page.threads.setValue(3)
    page.clip_model.setCurrentText("")
    assert not page.apply()
    assert page.message.isVisible() and "CLIP model" in page.message.text()
    page.clip_model.setCurrentText("tiny-random-clip")
    assert page.apply()
    assert Settings.load().threads == 3
    assert "tiny-random-clip" in window.model_label.text()


def test_settings_page_offers_the_catalogue_and_shows_download_progress(qtbot, tmp_path: Path, models_dir: Path) -> None:
    from immich_ml_desktop.model_store.store import DownloadProgress

    window = make_window(qtbot, ui_settings(tmp_path, models_dir), tmp_path / "w.ini")
    page = window.page("Settings")
    assert page.clip_model.findText("ViT-B-32__openai") >= 0 and page.face_model.findText("buffalo_l") >= 0
    assert page.clip_model.findText("tiny-random-clip") < page.clip_model.findText("ViT-B-32__openai"), "on disk first"
    window.show_page("Settings")
    # What the model store reports from its download thread arrives on the GUI thread as a progress bar.
    page._report_download(DownloadProgress("ViT-B-32__openai", "downloading", "visual/model.onnx", 0, 0, 50_000_000, 200_000_000))
    qtbot.waitUntil(lambda: page.download_bar.isVisible())
    assert page.download_bar.value() == 250 and "50 of 200 MB" in page.download_bar.text()
