"""Start at login. Linux's XDG autostart entry is written and checked for real here (the file, its
Exec line run as a desktop would, desktop-file-validate where installed, the Settings checkbox). Windows
and macOS cannot run here: their mechanisms are unit-tested on what they write, the Windows registry
through a stand-in for `winreg` (simulated platform), the macOS LaunchAgent as a real plist file in a
temporary home (simulated platform)."""

from __future__ import annotations

import configparser
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _ui_helpers import finish_background_work, make_window, ui_settings  # noqa: F401 - fixture
from immich_ml_desktop.ui import autostart


def _desktop_entry(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(path, encoding="utf-8")
    return dict(parser["Desktop Entry"])


def _exec_argv(value: str) -> list[str]:
    """Undo the Desktop Entry spec's escaping the way a launcher does: first the string escapes (a
    doubled backslash is one), then the Exec quoting (inside double quotes a backslash escapes `"`,
    `` ` ``, `$` and itself), then `%%` is a literal `%`."""
    value = value.replace("\\\\", "\\")
    args, current, quoted, i, started = [], "", False, 0, False
    while i < len(value):
        c = value[i]
        if quoted and c == "\\" and i + 1 < len(value) and value[i + 1] in '"`$\\':
            current, i = current + value[i + 1], i + 2
            continue
        if c == '"':
            quoted, started = not quoted, True
        elif c == " " and not quoted:
            if started or current:
                args.append(current)
            current, started = "", False
        else:
            current += c
        i += 1
    if started or current:
        args.append(current)
    return [a.replace("%%", "%") for a in args]


def test_xdg_autostart_entry_starts_this_app_in_the_tray(tmp_path: Path) -> None:
    entry_point = autostart.XdgAutostart(env={"XDG_CONFIG_HOME": str(tmp_path / "config")})
    assert not entry_point.is_enabled()
    command = autostart.launch_command()
    assert command[-1] == "--tray"
    entry_point.enable(command)
    path = tmp_path / "config" / "autostart" / "immich-ml-desktop.desktop"
    assert entry_point.path == path and entry_point.is_enabled()
    fields = _desktop_entry(path)
    assert fields["Type"] == "Application" and fields["Name"] == "Immich ML Desktop"
    argv = _exec_argv(fields["Exec"])
    assert argv == command
    # What the desktop would run at login is this app: the same program answers --version.
    check = subprocess.run(argv[:-1] + ["--version"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "immich-ml-desktop" in check.stdout, check.stderr
    if shutil.which("desktop-file-validate"):
        report = subprocess.run(["desktop-file-validate", str(path)], capture_output=True, text=True)
        assert report.returncode == 0 and "error" not in report.stdout.lower(), report.stdout
    entry_point.disable()
    assert not path.exists() and not entry_point.is_enabled()


def test_desktop_exec_quotes_and_escapes_as_the_spec_says() -> None:
    command = ["/opt/My Apps/immich-ml-desktop", "--tray", 'say "hi"', "100%", "back\\slash", "$HOME"]
    value = autostart.desktop_exec(command)
    assert value.startswith('"/opt/My Apps/immich-ml-desktop" --tray ')
    assert "100%%" in value and "\\\\$HOME" in value
    assert _exec_argv(value) == command


def test_a_hidden_autostart_entry_counts_as_off(tmp_path: Path) -> None:
    entry_point = autostart.XdgAutostart(env={"XDG_CONFIG_HOME": str(tmp_path)})
    entry_point.enable(["immich-ml-desktop", "--tray"])
    entry_point.path.write_text(entry_point.path.read_text() + "Hidden=true\n")  # how desktops switch one off
    assert not entry_point.is_enabled()


class _FakeWinreg:
    """Stands in for `winreg` (simulated Windows): the same names and calling conventions, a dict behind."""

    HKEY_CURRENT_USER, KEY_SET_VALUE, KEY_READ, REG_SZ = "HKCU", 2, 0x20019, 1

    def __init__(self) -> None:
        self.values: dict[tuple[str, str, str], tuple[int, str]] = {}
        self.calls: list[str] = []

    class _Key:
        def __init__(self, root: str, sub: str) -> None:
            self.root, self.sub = root, sub

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            return None

    def CreateKeyEx(self, root, sub, reserved, access):  # noqa: N802 - winreg's names
        self.calls.append(f"CreateKeyEx {root}\\{sub} access={access}")
        return self._Key(root, sub)

    def OpenKey(self, root, sub, reserved, access):  # noqa: N802
        self.calls.append(f"OpenKey {root}\\{sub} access={access}")
        return self._Key(root, sub)

    def SetValueEx(self, key, name, reserved, kind, value):  # noqa: N802
        self.values[(key.root, key.sub, name)] = (kind, value)

    def QueryValueEx(self, key, name):  # noqa: N802
        if (key.root, key.sub, name) not in self.values:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        kind, value = self.values[(key.root, key.sub, name)]
        return value, kind

    def DeleteValue(self, key, name):  # noqa: N802
        if self.values.pop((key.root, key.sub, name), None) is None:
            raise FileNotFoundError(2, "The system cannot find the file specified")


def test_windows_run_key_value_simulated_platform() -> None:
    reg = _FakeWinreg()
    run = autostart.for_this_platform("win32", registry=reg)
    assert isinstance(run, autostart.WindowsRunKey) and not run.is_enabled()
    exe = r"C:\Users\Ana Lima\AppData\Local\Programs\Immich ML Desktop\immich-ml-desktop.exe"
    run.enable([exe, "--tray"])
    key = ("HKCU", r"Software\Microsoft\Windows\CurrentVersion\Run", "Immich ML Desktop")
    assert reg.values[key] == (reg.REG_SZ, f'"{exe}" --tray')  # quoted: the path has spaces
    assert run.is_enabled()
    assert any(c.startswith("CreateKeyEx HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run") for c in reg.calls)
    run.disable()
    assert key not in reg.values and not run.is_enabled()
    run.disable()  # already off: no error


def test_macos_launch_agent_plist_simulated_platform(tmp_path: Path) -> None:
    agent = autostart.for_this_platform("darwin", home=tmp_path)
    assert isinstance(agent, autostart.MacLaunchAgent) and not agent.is_enabled()
    exe = "/Applications/Immich ML Desktop.app/Contents/MacOS/immich-ml-desktop"
    agent.enable([exe, "--tray"])
    path = tmp_path / "Library" / "LaunchAgents" / "io.github.immich-ml-desktop.plist"
    assert agent.path == path and agent.is_enabled()
    with open(path, "rb") as f:
        plist = plistlib.load(f)
    assert plist == {"Label": "io.github.immich-ml-desktop", "ProgramArguments": [exe, "--tray"],
                     "RunAtLoad": True, "ProcessType": "Interactive"}
    assert path.read_bytes().startswith(b"<?xml")  # an XML plist, as launchd reads
    agent.disable()
    assert not path.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the real autostart folder is Linux's")
def test_settings_page_turns_start_at_login_on_and_off(qtbot, tmp_path: Path, models_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    entry = tmp_path / "xdg" / "autostart" / "immich-ml-desktop.desktop"
    window = make_window(qtbot, ui_settings(tmp_path, models_dir), tmp_path / "w.ini", tray_available=True)
    page = window.page("Settings")
    window.show_page("Settings")
    assert not page.start_at_login.isChecked() and str(entry) in page.start_at_login.toolTip()
    page.start_at_login.setChecked(True)
    assert not entry.exists()  # written on Apply, like every setting
    assert page.apply()
    assert entry.is_file() and _exec_argv(_desktop_entry(entry)["Exec"])[-1] == "--tray"
    page.close_to_tray.setChecked(False)
    page.start_at_login.setChecked(False)
    assert page.apply()
    assert not entry.exists() and not window.close_to_tray


def test_the_login_command_is_understood_by_both_entry_points(tmp_path: Path) -> None:
    """`--tray` (what every login entry runs) reaches the window opener from the console script and from
    the installed app's entry point (installer/entry.py); without a display both say so, neither
    rejects the option."""
    import os

    root = Path(__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env.update(PYTHONPATH=f"{root}{os.pathsep}{root / 'installer'}", IMMICH_ML_DESKTOP_CONFIG_DIR=str(tmp_path / "c"),
               IMMICH_ML_DESKTOP_CACHE_DIR=str(tmp_path / "k"))
    for cmd in ([sys.executable, "-m", "immich_ml_desktop", "--tray"], [sys.executable, str(root / "installer" / "entry.py"), "--tray"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert "unrecognized arguments" not in proc.stderr, (cmd, proc.stderr)
        assert proc.returncode != 0 and "display" in proc.stderr.lower(), (cmd, proc.returncode, proc.stderr[-1500:])
    from immich_ml_desktop.cli import build_parser

    assert build_parser().parse_args(["--tray"]).tray is True
