"""Start at login, with each platform's documented mechanism:

- Linux (and other freedesktop desktops): a desktop entry in `$XDG_CONFIG_HOME/autostart/` (the XDG
  Autostart specification; GNOME, KDE, Xfce, LXQt and others read it at login).
- Windows: a value under `HKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion\\Run` (Microsoft's
  "Run and RunOnce registry keys"; Explorer runs each value's command line at logon). Chosen over a
  Startup-folder shortcut, which needs COM (IShellLink) to write a .lnk.
- macOS: a launchd property list in `~/Library/LaunchAgents/` with `RunAtLoad` (launchd.plist(5);
  launchd loads the user's agents at login).

Each writes the command that starts the app hidden in the tray (`immich-ml-desktop --tray`). Qt-free:
plain files, `plistlib` and `winreg` (the registry module is passed in, so the Windows code is unit-tested
here on a stand-in that records what it writes).
"""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from collections.abc import Mapping
from typing import Any

APP_ID = "immich-ml-desktop"
DISPLAY_NAME = "Immich ML Desktop"
MAC_LABEL = "io.github.immich-ml-desktop"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
TRAY_FLAG = "--tray"


def launch_command() -> list[str]:
    """The command that starts this installation of the app in the tray."""
    if getattr(sys, "frozen", False):  # an installed (PyInstaller) app: the executable itself
        return [sys.executable, TRAY_FLAG]
    bin_dir = Path(sys.executable).parent
    for name in (APP_ID, f"{APP_ID}.exe"):  # the console script pip put next to this Python
        script = bin_dir / name
        if script.is_file():
            return [str(script), TRAY_FLAG]
    found = shutil.which(APP_ID)
    if found:
        return [found, TRAY_FLAG]
    return [sys.executable, "-m", "immich_ml_desktop", TRAY_FLAG]


# Linux ------------------------------------------------------------------------------------------------
def desktop_exec(command: list[str]) -> str:
    """An `Exec=` value (Desktop Entry spec, "The Exec key"): arguments with reserved characters are
    double-quoted, with `"`, `` ` ``, `$` and `\\` escaped inside quotes; a literal `%` is `%%`."""
    parts = []
    for arg in command:
        arg = arg.replace("%", "%%")
        if arg and not re.search(r"[\s\"'\\><~|&;$*?#()`]", arg):
            parts.append(arg)
        else:
            parts.append('"' + re.sub(r'(["`$\\])', r"\\\1", arg) + '"')
    # The spec's string-value escaping applies on top: a backslash in the value is written twice.
    return " ".join(parts).replace("\\", "\\\\")


class XdgAutostart:
    def __init__(self, env: Mapping[str, str] | None = None, home: Path | None = None) -> None:
        environ: Mapping[str, str] = os.environ if env is None else env
        base = environ.get("XDG_CONFIG_HOME") or str((home or Path.home()) / ".config")
        self.path = Path(base) / "autostart" / f"{APP_ID}.desktop"

    def enable(self, command: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entry = (
            "[Desktop Entry]\n"
            "Type=Application\n"
            f"Name={DISPLAY_NAME}\n"
            "Comment=Immich's machine learning on this computer, in the system tray\n"
            f"Exec={desktop_exec(command)}\n"
            f"Icon={APP_ID}\n"
            "Terminal=false\n"
            "X-GNOME-Autostart-enabled=true\n"
        )
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(entry, encoding="utf-8")
        os.replace(tmp, self.path)

    def disable(self) -> None:
        self.path.unlink(missing_ok=True)

    def is_enabled(self) -> bool:
        if not self.path.is_file():
            return False
        text = self.path.read_text(encoding="utf-8", errors="replace")
        return not re.search(r"^Hidden\s*=\s*true\s*$", text, re.MULTILINE | re.IGNORECASE)

    def describe(self) -> str:
        return str(self.path)


# Windows ----------------------------------------------------------------------------------------------
class WindowsRunKey:
    """`registry` is the `winreg` module (or a stand-in with the same functions)."""

    def __init__(self, registry: Any = None) -> None:
        if registry is None:
            import winreg as registry  # noqa: PLC0415 - Windows only
        self.reg = registry

    def enable(self, command: list[str]) -> None:
        with self.reg.CreateKeyEx(self.reg.HKEY_CURRENT_USER, RUN_KEY, 0, self.reg.KEY_SET_VALUE) as key:
            self.reg.SetValueEx(key, DISPLAY_NAME, 0, self.reg.REG_SZ, subprocess.list2cmdline(command))

    def disable(self) -> None:
        try:
            with self.reg.OpenKey(self.reg.HKEY_CURRENT_USER, RUN_KEY, 0, self.reg.KEY_SET_VALUE) as key:
                self.reg.DeleteValue(key, DISPLAY_NAME)
        except FileNotFoundError:
            pass  # not enabled

    def is_enabled(self) -> bool:
        try:
            with self.reg.OpenKey(self.reg.HKEY_CURRENT_USER, RUN_KEY, 0, self.reg.KEY_READ) as key:
                self.reg.QueryValueEx(key, DISPLAY_NAME)
            return True
        except FileNotFoundError:
            return False

    def describe(self) -> str:
        return f"HKEY_CURRENT_USER\\{RUN_KEY}\\{DISPLAY_NAME}"


# macOS ------------------------------------------------------------------------------------------------
class MacLaunchAgent:
    def __init__(self, home: Path | None = None) -> None:
        self.path = (home or Path.home()) / "Library" / "LaunchAgents" / f"{MAC_LABEL}.plist"

    def enable(self, command: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        agent = {
            "Label": MAC_LABEL,
            "ProgramArguments": list(command),
            "RunAtLoad": True,
            "ProcessType": "Interactive",
        }
        with open(self.path, "wb") as f:
            plistlib.dump(agent, f)

    def disable(self) -> None:
        self.path.unlink(missing_ok=True)

    def is_enabled(self) -> bool:
        return self.path.is_file()

    def describe(self) -> str:
        return str(self.path)


def for_this_platform(platform: str = sys.platform, **kwargs: Any):
    """The start-at-login mechanism of `platform` (sys.platform values)."""
    if platform.startswith("win"):
        return WindowsRunKey(kwargs.get("registry"))
    if platform == "darwin":
        return MacLaunchAgent(kwargs.get("home"))
    return XdgAutostart(kwargs.get("env"), kwargs.get("home"))
