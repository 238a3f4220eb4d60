"""Library page of the real window: indexing in the background with progress, pause, resume, cancel,
failures with reasons, and a GUI thread that never stalls (measured with a 10 ms heartbeat)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path


from _ui_helpers import Heartbeat, finish_background_work, make_window, ui_settings, wait_until  # noqa: F401



def _copy_photos(photos_dir: Path, dest: Path, count: int) -> list[Path]:
    """`count` distinct JPEG files (copies of the shared photos under new names)."""
    dest.mkdir(parents=True, exist_ok=True)
    sources = sorted(p for p in (photos_dir / "photoprism" / "assets" / "examples").glob("*.jpg"))
    sources += sorted((photos_dir / "face_recognition" / "examples").glob("*.jpg"))
    out = []
    for i in range(count):
        src = sources[i % len(sources)]
        out.append(Path(shutil.copyfile(src, dest / f"{i:03d}-{src.name}")))
    return out


def _indexed(page) -> int:
    return page.last_progress.done if page.last_progress is not None else 0


def test_index_progress_pause_resume_cancel_without_freezing(qtbot, tmp_path: Path, models_dir: Path, photos_dir: Path) -> None:
    """Runs in a process of its own: the heartbeat measures the window as a user runs it, not the
    servers and thread pools that earlier tests of this session leave running in the same process."""
    if os.environ.get("IMMICH_ML_DESKTOP_UI_CHILD") != "1":
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{__file__}::{test_index_progress_pause_resume_cancel_without_freezing.__name__}"],
            env={**os.environ, "IMMICH_ML_DESKTOP_UI_CHILD": "1"}, capture_output=True, text=True, timeout=240,
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        return
    folder = tmp_path / "photos"
    _copy_photos(photos_dir, folder, 60)
    window = make_window(qtbot, ui_settings(tmp_path, models_dir, library_folders=[str(folder)]), tmp_path / "w.ini")
    page = window.page("Library")
    window.show_page("Library")
    # At start-up the window discovers devices and does the slow first imports in the background (they
    # hold the GIL for a few 100 ms); that is before indexing, so the heartbeat starts once it is done.
    wait_until(qtbot, lambda: window.context.is_warm, timeout=30)
    beat = Heartbeat()
    beat.start()

    page.index_button.click()
    assert page.running and not page.index_button.isEnabled()
    wait_until(qtbot, lambda: _indexed(page) >= 3, timeout=60)
    assert page.progress.maximum() == 60
    assert "images/s" in page.speed_label.text() or "estimating" in page.speed_label.text()

    page.pause_button.click()
    assert page.pause_button.text() == "&Resume"
    wait_until(qtbot, lambda: page.last_progress.state == "paused", timeout=60)
    paused_at = page.job._done
    qtbot.wait(1200)
    assert page.job._done == paused_at, "no image is finished while paused"
    assert page.progress.value() == paused_at

    page.pause_button.click()
    wait_until(qtbot, lambda: page.job is not None and page.job._done >= paused_at + 2, timeout=30)

    wait_until(qtbot, lambda: page.grid.grid_model.rowCount() > 0, timeout=10)  # the grid fills while indexing
    asked_at = page.job._done
    in_flight = 2 * page.job.workers
    page.cancel_button.click()
    wait_until(qtbot, lambda: not page.running, timeout=60)
    beat.stop()

    # Cancel starts no new photo: only those already with the workers finish (counted, not timed).
    assert page.last_summary.cancelled and page.last_summary.indexed - asked_at <= in_flight
    assert "Cancelled" in page.speed_label.text()
    assert len(beat.gaps) > 100
    # The window stays responsive: the GUI thread's own work between two 10 ms beats stays under 100 ms
    # (its CPU time, which the app controls; the wall-clock gap also holds the OS's and the GIL's waits,
    # which a busy 2-core machine stretches). A wall-clock gap of seconds would still be a freeze.
    assert beat.max_busy_ms < 100, f"the GUI thread computed for {beat.max_busy_ms:.0f} ms at a stretch while indexing"
    assert beat.max_gap_ms < 2000, f"the window froze for {beat.max_gap_ms:.0f} ms while indexing"


def test_failures_list_shows_a_corrupt_file_and_grid_the_rest(qtbot, tmp_path: Path, models_dir: Path, photos_dir: Path) -> None:
    folder = tmp_path / "photos"
    _copy_photos(photos_dir, folder, 3)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    window = make_window(qtbot, ui_settings(tmp_path, models_dir, library_folders=[str(folder)]), tmp_path / "w.ini")
    page = window.page("Library")
    assert page.grid_stack.currentWidget() is page.grid_empty

    page.index_button.click()
    wait_until(qtbot, lambda: page.last_summary is not None, timeout=60)
    wait_until(qtbot, lambda: page.grid.grid_model.rowCount() == 3, timeout=10)
    assert page.grid_stack.currentWidget() is page.grid
    assert page.failures.rowCount() == 1
    assert page.failures.item(0, 0).text().endswith("broken.jpg")
    assert page.failures.item(0, 1).text()  # a reason in words
    assert page.tabs.tabText(1) == "Failures (1)"
    assert "3 indexed" in page.stats_label.text() and "1 failed" in page.stats_label.text()

    # The grid's thumbnails are decoded in the background and arrive as pixmaps.
    model = page.grid.grid_model
    for row in range(3):
        model.data(model.index(row), role=1)
    page.loader.wait(10000)
    wait_until(qtbot, lambda: all(model.loader._cache.get(t.key) is not None for t in model.tiles), timeout=10)


def test_index_without_folders_says_what_to_do(qtbot, tmp_path: Path, models_dir: Path) -> None:
    window = make_window(qtbot, ui_settings(tmp_path, models_dir), tmp_path / "w.ini")
    page = window.page("Library")
    page.index_button.click()
    assert page.message.isVisible() and "Add a folder" in page.message.text()
    assert not page.running
