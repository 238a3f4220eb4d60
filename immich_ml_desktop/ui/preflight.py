"""Can the window open here? Checked before Qt is imported, because Qt aborts the process (exit 134)
when it cannot: with no display, and on a stock Linux desktop that lacks one of the libraries Qt's
`xcb` plugin links to (Qt 6.5+ needs `libxcb-cursor0`, which a fresh Debian or Ubuntu may not have;
Qt then names only that one, even when the real problem is that there is no display at all).

Qt-free on purpose (the point is to run before PySide6 loads). Each check answers one line that says
what to do; `immich_ml_desktop.main` prints it and exits 2 instead of letting Qt abort.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass

HEADLESS_HINT = "every job also runs headless without a window: `immich-ml-desktop --help` lists them"

# The system libraries PySide6's Qt (QtCore, QtGui, QtWidgets and the xcb platform plugin) links to,
# read with `readelf -d` from PySide6 6.12's libqxcb.so, libQt6XcbQpa.so.6 and libQt6Gui.so.6, with the
# package that ships each on Debian/Ubuntu and on Fedora. libc, libstdc++ and the like are left out:
# no desktop lacks them.
LIBRARIES: dict[str, tuple[str, str]] = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libgthread-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
}

# Qt platforms that need no display server.
NO_DISPLAY_PLATFORMS = ("offscreen", "minimal", "vnc", "eglfs", "linuxfb", "vkkhrdisplay", "minimalegl")


@dataclass(frozen=True)
class Problem:
    message: str  # one line, says what to do


def missing_libraries(sonames=None) -> list[str]:
    """The libraries the dynamic loader cannot load (each tried with dlopen, as Qt's loading would)."""
    missing = []
    for soname in sonames if sonames is not None else LIBRARIES:
        try:
            ctypes.CDLL(soname)
        except OSError:
            missing.append(soname)
    return missing


def install_hint(sonames: list[str]) -> str:
    debian = list(dict.fromkeys(LIBRARIES[s][0] for s in sonames if s in LIBRARIES))
    fedora = list(dict.fromkeys(LIBRARIES[s][1] for s in sonames if s in LIBRARIES))
    unknown = [s for s in sonames if s not in LIBRARIES]
    hint = f"sudo apt install {' '.join(debian)} (Debian/Ubuntu) or sudo dnf install {' '.join(fedora)} (Fedora)"
    return hint + (f", and the package that has {', '.join(unknown)}" if unknown else "")


def _platform(env) -> str:
    """The Qt platform plugin Qt will try first, as Qt picks it on Linux."""
    chosen = env.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    if chosen:
        return chosen
    if env.get("WAYLAND_DISPLAY") and env.get("XDG_SESSION_TYPE") == "wayland":
        return "wayland"
    return "xcb"


def _x_server_answers(display: str) -> bool:
    """Connect to the X server with libxcb (what Qt's xcb plugin does first) and disconnect."""
    try:
        xcb = ctypes.CDLL("libxcb.so.1")
    except OSError:
        return True  # reported as a missing library instead
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    connection = xcb.xcb_connect(display.encode(), None)
    try:
        return connection is not None and xcb.xcb_connection_has_error(connection) == 0
    finally:
        if connection is not None:
            xcb.xcb_disconnect(connection)


def window_problem(env=None, platform: str = sys.platform) -> Problem | None:
    """Why the window cannot open on this machine, or None. Linux only: Windows and macOS always have
    what Qt needs."""
    env = os.environ if env is None else env
    if not platform.startswith("linux"):
        return None
    qt_platform = _platform(env)
    if qt_platform in NO_DISPLAY_PLATFORMS or qt_platform == "wayland":
        return None  # Qt falls back or reports Wayland problems itself; the xcb checks do not apply
    display = env.get("DISPLAY", "")
    if not display:
        return Problem(f"the window needs a display, and there is none (DISPLAY is not set); {HEADLESS_HINT}.")
    missing = missing_libraries()
    if missing:
        return Problem(
            f"the window needs system libraries this machine lacks ({', '.join(missing)}); "
            f"install them: {install_hint(missing)}. Meanwhile {HEADLESS_HINT}."
        )
    if not _x_server_answers(display):
        return Problem(f"the window needs a display, and none answers at DISPLAY={display}; {HEADLESS_HINT}.")
    return None
