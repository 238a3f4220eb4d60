"""The README's first command on a fresh Linux machine: the window opens, or the app says in one line
what is missing (no display; the xcb plugin's libraries, with Debian/Ubuntu and Fedora package names)
instead of Qt aborting with exit 134. And OpenVINO's telemetry writes nothing into the user's home.

The missing libraries are made missing for real: the app runs in a private mount namespace
(`unshare -m`, root only) where each library file is covered by /dev/null, so the dynamic loader fails
exactly as on a machine without the package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from immich_ml_desktop.ui import preflight

ROOT = Path(__file__).resolve().parent.parent
LIBDIR = Path("/usr/lib/x86_64-linux-gnu")
MASKED = ["libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1"]  # what stock Debian 12 may lack


def _env(tmp_path: Path, **changes: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")}
    env.update(
        PYTHONPATH=str(ROOT), IMMICH_ML_DESKTOP_CONFIG_DIR=str(tmp_path / "config"),
        IMMICH_ML_DESKTOP_CACHE_DIR=str(tmp_path / "cache"),
    )
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def _app(env: dict[str, str], prefix: list[str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m immich_ml_desktop` with no arguments: what the README's first command runs."""
    cmd = (prefix or []) + [sys.executable, "-m", "immich_ml_desktop"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _can_mask() -> bool:
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0 and all((LIBDIR / lib).exists() for lib in MASKED)


def _masked(libs: list[str]) -> list[str]:
    mounts = " && ".join(f"mount --bind /dev/null {LIBDIR / lib}" for lib in libs)
    return ["unshare", "-m", "sh", "-c", f'{mounts} && exec "$@"', "sh"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the display check is Linux-only")
def test_without_a_display_the_app_says_so_in_one_line(tmp_path: Path) -> None:
    proc = _app(_env(tmp_path))
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: the window needs a display")
    assert "immich-ml-desktop --help" in lines[0] and "headless" in lines[0]
    assert "xcb-cursor" not in proc.stderr  # Qt's misleading message never appears


@pytest.mark.skipif(not _can_mask(), reason="needs root, unshare and the xcb libraries present to hide them")
def test_missing_xcb_libraries_are_named_with_their_packages(tmp_path: Path) -> None:
    """A display is set (the check for libraries comes before connecting to it), the libraries a stock
    Debian lacks are hidden: one line with the libraries and both distributions' packages."""
    proc = _app(_env(tmp_path, DISPLAY=":99"), prefix=_masked(MASKED))
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    for soname in MASKED:
        assert soname in line
    assert "sudo apt install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 (Debian/Ubuntu)" in line
    assert "sudo dnf install xcb-util-cursor xcb-util-wm xcb-util-keysyms (Fedora)" in line


@pytest.mark.skipif(not _can_mask(), reason="needs root, unshare and the xcb libraries present to hide them")
def test_the_probe_finds_what_the_dynamic_loader_cannot_load(tmp_path: Path) -> None:
    """The app's own probe, run where one library is hidden, names that one and only that one."""
    code = "from immich_ml_desktop.ui.preflight import missing_libraries as m; print(','.join(m()))"
    cmd = _masked(["libxcb-cursor.so.0"]) + [sys.executable, "-c", code]
    proc = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "libxcb-cursor.so.0"
    assert preflight.missing_libraries() == []  # and outside the namespace this machine has them all


def test_the_package_hint_covers_every_library_it_probes() -> None:
    hint = preflight.install_hint(list(preflight.LIBRARIES))
    assert "apt install" in hint and "dnf install" in hint and "the package that has" not in hint
    assert preflight.install_hint(["libnot-a-real-one.so.7"]).endswith("the package that has libnot-a-real-one.so.7")


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed (apt-get install xvfb)")
def test_with_a_display_the_window_opens(tmp_path: Path) -> None:
    """The README's command on this machine with an X server: a window titled Immich ML Desktop appears."""
    display = f":{200 + os.getpid() % 500}"
    xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    app = None
    try:
        assert preflight._x_server_answers(display) or _wait(lambda: preflight._x_server_answers(display))
        env = _env(tmp_path, DISPLAY=display)
        app = subprocess.Popen([sys.executable, "-m", "immich_ml_desktop"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        found = _wait(lambda: app.poll() is not None or _window_named(display, "Immich ML Desktop"), timeout=90)
        assert found and app.poll() is None, app.stderr.read() if app.poll() is not None else "no window"
    finally:
        if app is not None:
            app.terminate()
            app.wait(30)
        xvfb.terminate()
        xvfb.wait(10)


def _wait(predicate, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _window_named(display: str, name: str) -> bool:
    if shutil.which("xwininfo") is None:
        pytest.skip("xwininfo is not installed (apt-get install x11-utils)")
    tree = subprocess.run(["xwininfo", "-root", "-tree"], env={"DISPLAY": display}, capture_output=True, text=True)
    return f'"{name}"' in tree.stdout


def test_openvino_writes_no_telemetry_into_home(tmp_path: Path) -> None:
    """`import openvino` on its own writes ~/intel/openvino_ga_cid and ~/intel/stats; the app (its
    entry point, which every command and the window go through) writes nothing there."""
    pytest.importorskip("openvino")
    bare, app_home = tmp_path / "bare-home", tmp_path / "app-home"
    bare.mkdir()
    app_home.mkdir()
    env = _env(tmp_path, HOME=str(bare))
    subprocess.run([sys.executable, "-c", "import openvino"], env=env, check=True, timeout=120)
    written = sorted(p.name for p in (bare / "intel").iterdir()) if (bare / "intel").exists() else []
    if not written:
        pytest.skip("this OpenVINO writes no telemetry files: nothing to keep out of the home")
    assert "openvino_ga_cid" in written

    env = _env(tmp_path, HOME=str(app_home))
    code = ("import sys; from immich_ml_desktop.main import main; rc = main(['devices']);"
            "import openvino; print('openvino', openvino.__version__); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "openvino" in proc.stdout  # OpenVINO was imported and used (device discovery)
    # Nothing of OpenVINO's: no ~/intel at all. (ONNX Runtime keeps a device id under the XDG cache,
    # ~/.cache/Microsoft/DeveloperTools; that is a cache folder, not telemetry in the home itself.)
    assert not (app_home / "intel").exists(), sorted(p.name for p in (app_home / "intel").iterdir())
    assert [p.name for p in app_home.iterdir() if p.name != ".cache"] == []
