"""Settings page: the models found on disk are listed and marked, and the list follows a new model
folder on Apply; "Saved." appears beside Apply; Clear caches empties the app's derived caches, says how
much it freed and keeps models, library and settings."""

from __future__ import annotations

import os
from pathlib import Path


from _ui_helpers import finish_background_work, make_window, ui_settings, wait_until  # noqa: F401 - fixture
from conftest import CLIP_PACK, FACE_PACK


def _pack_folder(tmp_path: Path, models_dir: Path, name: str) -> Path:
    """A model folder holding one CLIP pack under a new name (files linked from the shared pack)."""
    root = tmp_path / "other-models"
    src = models_dir / "clip" / CLIP_PACK
    for file in src.rglob("*"):
        if file.is_file():
            dest = root / "clip" / name / file.relative_to(src)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(file, dest)
    return root


def test_models_on_disk_are_marked_and_follow_the_folder_on_apply(qtbot, tmp_path: Path, models_dir: Path) -> None:
    window = make_window(qtbot, ui_settings(tmp_path, models_dir), tmp_path / "w.ini")
    page = window.page("Settings")
    window.show_page("Settings")
    clip = page.clip_model
    assert clip.itemText(0) == CLIP_PACK and page.is_present(clip, CLIP_PACK)
    assert not page.is_present(clip, "ViT-B-32__openai")  # Immich's catalogue, not downloaded here
    assert page.is_present(page.face_model, FACE_PACK)
    assert page.clip_note.text().startswith("✓ on disk: ") and CLIP_PACK in page.clip_note.text()
    clip.setCurrentText("ViT-B-32__openai")
    assert page.clip_note.text().startswith("Not on disk yet")
    clip.setCurrentText(CLIP_PACK)

    other = _pack_folder(tmp_path, models_dir, "my-own-clip")
    page.cache_dir.setText(str(other))
    assert page.apply()
    # Listed and marked at once, not only after Revert; the chosen model stays chosen.
    assert clip.itemText(0) == "my-own-clip" and page.is_present(clip, "my-own-clip")
    assert clip.currentText() == CLIP_PACK and not page.is_present(clip, CLIP_PACK)
    assert page.clip_note.text().startswith("Not on disk yet")


def test_saved_appears_beside_apply(qtbot, tmp_path: Path, models_dir: Path) -> None:
    window = make_window(qtbot, ui_settings(tmp_path, models_dir), tmp_path / "w.ini")
    page = window.page("Settings")
    window.show_page("Settings")
    page.threads.setValue(2)
    page.apply_button.click()
    qtbot.wait(20)
    assert page.saved_note.text() == "Saved." and page.saved_note.isVisible()
    note, apply = page.saved_note.geometry(), page.apply_button.geometry()
    assert abs(note.center().y() - apply.center().y()) <= 4  # the same row
    assert 0 <= apply.left() - note.right() <= page.revert_button.width() + 40  # just left of Revert/Apply
    assert not page.message.isVisible()
    page.threads.setValue(3)  # an edit after Apply: not saved yet, so "Saved." goes
    assert page.saved_note.text() == ""
    page.apply_button.click()
    assert page.saved_note.text() == "Saved."
    page.clip_model.setCurrentText("")  # an error in place, and "Saved." goes
    assert not page.apply()
    assert page.saved_note.text() == "" and page.message.isVisible()


def test_clear_caches_frees_the_derived_files_and_keeps_the_rest(qtbot, tmp_path: Path, models_dir: Path,
                                                                  monkeypatch) -> None:
    from immich_ml_desktop.paths import app_cache_dir

    monkeypatch.setenv("IMMICH_ML_DESKTOP_CACHE_DIR", str(tmp_path / "app-cache"))  # this test's own

    cache = app_cache_dir()
    derived = {
        cache / "openvino-cache" / "1234.blob": 300_000,
        cache / "openvino-cache" / "precision-verdicts.json": 1_000,
        cache / "batch-axis" / "clip-visual-ab12.onnx": 700_000,
    }
    kept_models = cache / "models" / "clip" / "some-pack" / "visual" / "model.onnx"  # the default model cache
    for path, size in {**derived, kept_models: 5_000}.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    settings = ui_settings(tmp_path, models_dir)
    window = make_window(qtbot, settings, tmp_path / "w.ini")
    answers = window.context.answers()  # open, as the running server would hold it
    answers.put("ab" * 32, "entries", b'{"clip":"[0.5]"}', origin="index")
    library = Path(settings.library_path)
    page = window.page("Settings")
    window.show_page("Settings")
    page.clear_button.click()
    wait_until(qtbot, lambda: page.clear_button.isEnabled() and page.message.isVisible())
    assert page.message.text().startswith("Caches cleared: 1.0 MB freed"), page.message.text()
    assert "1 answers kept for Immich's requests were dropped" in page.message.text()
    assert answers.stats().answers == 0 and answers.path.is_file()  # emptied in place, still usable
    answers.put("cd" * 32, "entries", b"{}")
    assert answers.get("cd" * 32, "entries") == b"{}"
    assert not any(p.exists() for p in derived)
    assert (cache / "openvino-cache").is_dir()  # the folders stay for the engine that writes there next
    assert kept_models.read_bytes() == b"x" * 5_000
    assert Path(settings.model_cache_dir, "clip", CLIP_PACK, "visual", "model.onnx").is_file()
    assert not library.exists() or library.stat().st_size > 0
    # Nothing left to clear: says so with zero, and loses nothing.
    page.clear_button.click()
    wait_until(qtbot, lambda: page.clear_button.isEnabled() and "0.0 MB freed" in page.message.text())
    assert kept_models.exists()


def test_ocr_download_progress_is_shown_too(qtbot, tmp_path: Path, models_dir: Path) -> None:
    """OCR files come through the model's own file download, which reports (file, done, total)."""
    from immich_ml_desktop.model_store.fetcher import fetch_verified  # noqa: F401 - the caller of this form
    window = make_window(qtbot, ui_settings(tmp_path, models_dir), tmp_path / "w.ini")
    page = window.page("Settings")
    window.show_page("Settings")
    window.context.download_progress("ch_PP-OCRv5_det_mobile.onnx", 1_000_000, 4_000_000)
    qtbot.waitUntil(page.download_bar.isVisible)
    assert page.download_bar.value() == 250 and "ch_PP-OCRv5_det_mobile.onnx: 1 of 4 MB" in page.download_bar.text()


def test_the_window_opens_with_a_settings_file_holding_a_wrong_type(qtbot, tmp_path: Path, models_dir: Path,
                                                                      caplog, monkeypatch) -> None:
    """Issue 13 item 6: `{"threads": "4"}` or `{"device": [1, 2]}` in settings.json crashed the window as it
    read the file (what `run_app` does first); the bad fields fall back to their defaults, the rest stay."""
    import json
    import logging

    from immich_ml_desktop.settings import Settings

    # Whatever earlier tests of the session did to logging (a level, a library's logging config that
    # disables existing loggers), this test reads the settings module's warnings.
    caplog.set_level(logging.WARNING, logger="immich_ml_desktop.settings")
    for name in ("immich_ml_desktop", "immich_ml_desktop.settings"):
        monkeypatch.setattr(logging.getLogger(name), "disabled", False)
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
    ui_settings(tmp_path, models_dir).save()
    raw = json.loads(Settings.path().read_text())
    Settings.path().write_text(json.dumps({**raw, "threads": "4", "device": [1, 2]}))
    settings = Settings.load()
    assert settings.threads == 0 and settings.device == "auto" and settings.clip_model == CLIP_PACK
    assert sum("Ignoring the setting" in r.getMessage() for r in caplog.records) == 2
    window = make_window(qtbot, settings, tmp_path / "w.ini")
    page = window.page("Settings")
    window.show_page("Settings")
    assert page.threads.value() == 0 and page.is_present(page.clip_model, CLIP_PACK)


def test_the_rotated_face_pass_is_a_check_box_that_keeps_the_other_passes(qtbot, tmp_path: Path, models_dir: Path) -> None:
    """Unchecking "faces at an angle" saves the settings without the rotated pass and keeps the other passes
    as the settings file had them (here without the bright one); checking it puts it back."""
    from immich_ml_desktop.settings import Settings

    settings = ui_settings(tmp_path, models_dir)
    settings.face_passes = ["padded", "rotated"]
    window = make_window(qtbot, settings, tmp_path / "w.ini")
    page = window.page("Settings")
    window.show_page("Settings")
    assert page.rotated_pass.isChecked()
    page.rotated_pass.setChecked(False)
    assert page.saved_note.text() == ""
    assert page.apply()
    assert Settings.load().face_passes == ["padded"]
    page.rotated_pass.setChecked(True)
    assert page.apply()
    assert Settings.load().face_passes == ["padded", "rotated"]
