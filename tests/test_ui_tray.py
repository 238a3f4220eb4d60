"""The tray companion: its state (serving with requests/s, indexing with progress, idle, error), its
menu (open window, start/stop serving, pause/resume indexing, quit), closing the window into the tray
(said once), and notifications when a long job ends or fails.

Offscreen Qt has no tray host, so these tests build the window with `tray_available=True`: the
companion's state, menu and close-to-tray logic run for real, only the icon is not drawn anywhere. The
last test runs the same window on a real X server (Xvfb) with a real tray host (trayer) and checks the
icon is embedded there.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from _ui_helpers import finish_background_work, make_window, ui_settings, wait_until  # noqa: F401 - fixture
from immich_ml_desktop.ui.tray import tray_state

ROOT = Path(__file__).resolve().parent.parent


class _P:
    def __init__(self, state: str, done: int, total: int) -> None:
        self.state, self.done, self.total = state, done, total


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tray_state_says_what_the_app_does() -> None:
    assert tray_state(None, None, None).lines == ("Idle",) and tray_state(None, None, None).kind == "idle"
    serving = tray_state(("http://127.0.0.1:3003", 4.25), None, None)
    assert serving.kind == "serving" and serving.lines == ("Serving at http://127.0.0.1:3003: 4.2 requests/s",)
    both = tray_state(("http://h:1", 0.0), _P("indexing", 70, 178), None)
    assert both.kind == "indexing" and both.lines[1] == "Indexing: 70 of 178 (39%)"
    assert tray_state(None, _P("paused", 5, 10), None).lines == ("Indexing paused at 5 of 10",)
    assert tray_state(None, _P("scanning", 0, 0), None).lines == ("Indexing: looking for photos…",)
    failed = tray_state(("http://h:1", 1.0), None, "Indexing stopped: disk full")
    assert failed.kind == "error" and failed.lines[0] == "Error: Indexing stopped: disk full"
    assert failed.tooltip.startswith("Immich ML Desktop\n")


def test_tray_menu_starts_and_stops_the_server_and_shows_its_rate(qtbot, tmp_path: Path, models_dir: Path) -> None:
    port = _free_port()
    window = make_window(qtbot, ui_settings(tmp_path, models_dir, server_port=port), tmp_path / "w.ini",
                         tray_available=True)
    tray = window.companion
    assert tray.state.kind == "idle" and tray.serve_action.text() == "&Start serving"
    assert not tray.pause_action.isEnabled()  # nothing to pause
    assert [a.text() for a in tray.menu.actions() if a.text()] == [
        "&Open window", "&Start serving", "&Pause indexing", "&Quit"]

    tray.serve_action.trigger()
    wait_until(qtbot, lambda: window.page("Server").server is not None, timeout=30)
    assert httpx.get(f"http://127.0.0.1:{port}/ping", timeout=5).text == "pong"
    tray.update()
    assert tray.state.kind == "serving" and tray.serve_action.text() == "&Stop serving"
    assert f"Serving at http://127.0.0.1:{port}:" in tray.icon.toolTip() and "requests/s" in tray.icon.toolTip()

    tray.serve_action.trigger()
    wait_until(qtbot, lambda: window.page("Server").start_button.isEnabled() and window.page("Server").server is None)
    tray.update()
    assert tray.state.kind == "idle" and tray.serve_action.text() == "&Start serving"
    window.quit_app()


def test_tray_pauses_and_resumes_indexing_and_notifies_when_it_ends(qtbot, tmp_path: Path, models_dir: Path,
                                                                    photos_dir: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, src in enumerate(sorted(photos_dir.rglob("*.jpg"))[:12]):
        shutil.copyfile(src, folder / f"{i}.jpg")
    window = make_window(qtbot, ui_settings(tmp_path, models_dir, library_folders=[str(folder)]), tmp_path / "w.ini",
                         tray_available=True)
    tray, library = window.companion, window.page("Library")
    library.start_index()
    tray.update()
    assert tray.state.kind == "indexing" and tray.pause_action.isEnabled()
    tray.pause_action.trigger()
    assert library.paused and tray.pause_action.text() == "&Resume indexing"
    wait_until(qtbot, lambda: library.last_progress is not None and library.last_progress.state == "paused", timeout=60)
    tray.update()
    assert "Indexing paused at" in tray.icon.toolTip()

    window.hide_to_tray()  # the user is elsewhere: the end of the job is notified
    tray.sent.clear()
    tray.pause_action.trigger()
    assert not library.paused
    wait_until(qtbot, lambda: not library.running, timeout=120)
    assert [t for t, text, failed in tray.sent if "Indexing finished" in text and not failed], tray.sent
    tray.update()
    assert tray.state.kind == "idle" and not tray.pause_action.isEnabled()
    window.quit_app()


def test_a_failed_job_turns_the_tray_red_until_the_next_success(qtbot, tmp_path: Path, models_dir: Path) -> None:
    window = make_window(qtbot, ui_settings(tmp_path, models_dir), tmp_path / "w.ini", tray_available=True)
    tray = window.companion
    window.hide_to_tray()
    tray.sent.clear()
    window.context.job_finished.emit("push", "The push failed: Immich answered 500", True)
    assert tray.state.kind == "error" and "The push failed" in tray.icon.toolTip()
    assert tray.sent == [("Immich ML Desktop: failed", "The push failed: Immich answered 500", True)]
    window.context.job_finished.emit("push", "Push 1a2b applied: 3 of 3 steps", False)
    assert tray.state.kind == "idle"
    # The server starting is not news worth a notification; its failure is.
    window.context.job_finished.emit("server", "ML server running at http://127.0.0.1:1", False)
    assert len(tray.sent) == 2
    window.quit_app()


def test_closing_the_window_keeps_serving_in_the_tray_and_says_so_once(qtbot, tmp_path: Path, models_dir: Path) -> None:
    port = _free_port()
    state = tmp_path / "w.ini"
    window = make_window(qtbot, ui_settings(tmp_path, models_dir, server_port=port), state, tray_available=True)
    quits = []
    window.quit_requested.connect(lambda: quits.append(1))
    server_page = window.page("Server")
    server_page.start_button.click()
    wait_until(qtbot, lambda: server_page.server is not None, timeout=30)

    window.close()
    assert not window.isVisible() and not quits
    assert [t for t, _text, _f in window.companion.sent] == ["Immich ML Desktop is still running"]
    assert httpx.get(f"http://127.0.0.1:{port}/ping", timeout=5).text == "pong"  # still serving

    window.companion.open_action.trigger()
    assert window.isVisible()
    window.close()  # the second time it goes quietly
    assert len(window.companion.sent) == 1 and not window.isVisible()

    window.companion.quit_action.trigger()  # Quit for real: the server stops, the loop is told to end
    assert quits == [1] and server_page.server is None
    wait_until(qtbot, lambda: _refused(port), timeout=15)


def _refused(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2)
    except httpx.ConnectError:
        return True
    return False


def test_without_a_tray_closing_the_window_quits(qtbot, tmp_path: Path, models_dir: Path) -> None:
    port = _free_port()
    window = make_window(qtbot, ui_settings(tmp_path, models_dir, server_port=port), tmp_path / "w.ini",
                         tray_available=False)
    server_page = window.page("Server")
    server_page.start_button.click()
    wait_until(qtbot, lambda: server_page.server is not None, timeout=30)
    window.close()
    assert server_page.server is None and window.companion.sent == []
    wait_until(qtbot, lambda: _refused(port), timeout=15)


TRAY_SCRIPT = r"""
import sys
from PySide6.QtCore import QSettings, QTimer
from PySide6.QtWidgets import QSystemTrayIcon
from immich_ml_desktop.settings import Settings
from immich_ml_desktop.ui.app import make_application
from immich_ml_desktop.ui.context import AppContext
from immich_ml_desktop.ui.main_window import MainWindow

app = make_application()
deadline = __import__("time").monotonic() + 30
while not QSystemTrayIcon.isSystemTrayAvailable():  # trayer may still be starting: wait for it to own the tray
    assert __import__("time").monotonic() < deadline, "no tray host"
    app.processEvents()
    __import__("time").sleep(0.1)
window = MainWindow(AppContext(Settings(device="cpu", allow_downloads=False)),
                    qsettings=QSettings(sys.argv[1], QSettings.Format.IniFormat))
window.show()
window.close()  # into the tray
started = __import__("time").monotonic()
def check():
    icon = window.companion.icon
    if icon.geometry().width() <= 0 and __import__("time").monotonic() - started < 30:
        QTimer.singleShot(200, check)  # the tray host has not embedded it yet
        return
    print("available", window.companion.available, "visible", icon.isVisible(), "hidden-window", not window.isVisible(),
          "width", icon.geometry().width(), "height", icon.geometry().height(), "told", len(window.companion.sent), flush=True)
    window.quit_app()
    app.quit()
QTimer.singleShot(500, check)
app.exec()
"""


def _missing_x_libraries() -> list[str]:
    from immich_ml_desktop.ui.preflight import missing_libraries

    return missing_libraries() if sys.platform.startswith("linux") else []


@pytest.mark.skipif(shutil.which("Xvfb") is None or shutil.which("trayer") is None,
                    reason="needs Xvfb and a tray host (apt-get install xvfb trayer)")
@pytest.mark.skipif(bool(_missing_x_libraries()), reason=f"Qt's xcb platform lacks {_missing_x_libraries()} (README's apt line)")
def test_the_icon_sits_in_a_real_tray_under_xvfb(tmp_path: Path) -> None:
    display = f":{700 + os.getpid() % 200}"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tray = None
    try:
        from immich_ml_desktop.ui.preflight import _x_server_answers

        wait_for = __import__("time").monotonic() + 15
        while not _x_server_answers(display):
            assert __import__("time").monotonic() < wait_for, "Xvfb did not start"
        env = dict(os.environ, DISPLAY=display, QT_QPA_PLATFORM="xcb", PYTHONPATH=str(ROOT),
                   IMMICH_ML_DESKTOP_CONFIG_DIR=str(tmp_path / "config"), IMMICH_ML_DESKTOP_CACHE_DIR=str(tmp_path / "cache"))
        tray = subprocess.Popen(["trayer", "--edge", "top", "--align", "right", "--widthtype", "pixel", "--width", "120",
                                 "--heighttype", "pixel", "--height", "32", "--SetDockType", "false"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proc = subprocess.run([sys.executable, "-c", TRAY_SCRIPT, str(tmp_path / "w.ini")], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        fields = proc.stdout.split()
        values = dict(zip(fields[::2], fields[1::2]))
        assert values["available"] == "True" and values["visible"] == "True" and values["hidden-window"] == "True"
        assert int(values["width"]) > 0 and int(values["height"]) > 0, proc.stdout  # the tray host gave the icon a place
        assert values["told"] == "1"  # "still running in the tray", said the first time
    finally:
        if tray is not None:
            tray.terminate()
            tray.wait(10)
        xvfb.terminate()
        xvfb.wait(10)
