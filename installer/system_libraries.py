"""The system libraries the frozen app's window needs on Linux, and the Debian/Ubuntu packages that carry them.

PyInstaller bundles most of what Qt links (libX11, the libxcb-* extensions, xkbcommon, fontconfig, freetype,
glib, dbus, ...) but, by its own exclude list, never the libraries tied to the display server and the GPU
driver: libxcb itself, libGL/libEGL (glvnd) and the Wayland client libraries. Those, and a font with a
fontconfig configuration, must come from the system. Measured: `ldd` on every ELF file of the frozen app inside
a fresh `mmdebstrap --variant=minbase bookworm` finds exactly these missing (tests/test_installer.py repeats
that scan on each build and fails on any library not listed here).

One table for three uses:
- build_installer.py: the .deb's Depends, the AppImage's bundled copies, the tar.gz's README;
- installer/entry.py: before the window opens, `window_problem()` says in one line what to install (instead of
  Qt aborting, or Python's ImportError traceback);
- tests/test_installer.py: the fresh-system scan and the .deb's dependency check.
"""

from __future__ import annotations

import ctypes
import os
import sys

# soname -> the Debian/Ubuntu package that has it; grouped by when the window needs it.
ANY_PLATFORM = {"libGL.so.1": "libgl1", "libEGL.so.1": "libegl1"}  # linked by libQt6Gui itself
X11 = {"libxcb.so.1": "libxcb1"}  # the xcb platform plugin (X11, and XWayland)
WAYLAND = {
    "libwayland-client.so.0": "libwayland-client0",
    "libwayland-cursor.so.0": "libwayland-cursor0",
    "libwayland-egl.so.1": "libwayland-egl1",
}
# A fontconfig configuration and at least one font: without them every character is drawn as a box.
# (Debian's libfontconfig1 depends on fontconfig-config, which depends on fonts-dejavu-core or another font.)
FONT_PACKAGES = ("fontconfig-config", "fonts-dejavu-core")
# Linked by Qt plugins a desktop session never loads, so missing them is fine: soname -> why.
OPTIONAL = {
    "libgtk-3.so.0": "GTK platform theme (loaded on GTK desktops only, which have GTK)",
    "libgdk-3.so.0": "GTK platform theme (loaded on GTK desktops only, which have GTK)",
    "libdrm.so.2": "eglfs/linuxfb console platforms and Wayland's DRM server-buffer plugin",
}
GLIBC_PACKAGE = "libc6"


def all_required() -> dict[str, str]:
    return {**ANY_PLATFORM, **X11, **WAYLAND}


def packages() -> list[str]:
    """What a Debian/Ubuntu system must install for the window, on X11 and Wayland (the .deb's Depends)."""
    return sorted(set(all_required().values()) | {"libfontconfig1"})


def apt_command(pkgs: list[str] | None = None) -> str:
    return "sudo apt-get install " + " ".join(pkgs if pkgs is not None else [*packages(), *FONT_PACKAGES])


def _platform(environ: os._Environ | dict[str, str]) -> str:
    """The Qt platform the window will use: QT_QPA_PLATFORM's first choice, else Qt's own default."""
    chosen = environ.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip()
    if chosen:
        return chosen
    # Qt 6 picks Wayland in a Wayland session and falls back to xcb (XWayland) when Wayland cannot load
    return "xcb"


def _loads(soname: str) -> bool:
    try:
        ctypes.CDLL(soname, mode=os.RTLD_LAZY | os.RTLD_LOCAL)  # the loader's own search, as Qt's would be
        return True
    except OSError:
        return False


def _font_count(environ: os._Environ | dict[str, str]) -> int | None:
    """Fonts fontconfig finds (None when fontconfig itself cannot load: then Qt fails on its own message)."""
    config = environ.get("FONTCONFIG_FILE") or "fonts.conf"
    if not os.path.isabs(config):
        config = os.path.join(environ.get("FONTCONFIG_PATH") or "/etc/fonts", config)
    if not os.path.exists(config):
        return 0  # no configuration: fontconfig would print its own error and find nothing
    try:
        fc = ctypes.CDLL("libfontconfig.so.1")
    except OSError:
        return None

    class FcFontSet(ctypes.Structure):
        _fields_ = [("nfont", ctypes.c_int), ("sfont", ctypes.c_int), ("fonts", ctypes.c_void_p)]

    fc.FcInitLoadConfigAndFonts.restype = ctypes.c_void_p
    fc.FcPatternCreate.restype = ctypes.c_void_p
    fc.FcObjectSetCreate.restype = ctypes.c_void_p
    fc.FcFontList.restype = ctypes.POINTER(FcFontSet)
    fc.FcFontList.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    fc.FcFontSetDestroy.argtypes = [ctypes.POINTER(FcFontSet)]
    fc.FcPatternDestroy.argtypes = [ctypes.c_void_p]
    fc.FcObjectSetDestroy.argtypes = [ctypes.c_void_p]
    fc.FcConfigDestroy.argtypes = [ctypes.c_void_p]
    config = fc.FcInitLoadConfigAndFonts()
    if not config:
        return 0
    pattern, objects = fc.FcPatternCreate(), fc.FcObjectSetCreate()
    fonts = fc.FcFontList(config, pattern, objects)
    count = fonts.contents.nfont if fonts else 0
    if fonts:
        fc.FcFontSetDestroy(fonts)
    fc.FcObjectSetDestroy(objects)
    fc.FcPatternDestroy(pattern)
    fc.FcConfigDestroy(config)
    return count


def window_problem(environ: os._Environ | dict[str, str] | None = None) -> str | None:
    """One line saying which packages to install before the window can open, or None if nothing is missing."""
    if not sys.platform.startswith("linux"):
        return None
    environ = os.environ if environ is None else environ
    platform = _platform(environ)
    needed = dict(ANY_PLATFORM)
    if platform == "xcb":
        needed |= X11
    elif platform.startswith("wayland"):
        needed |= WAYLAND
    missing = {soname: package for soname, package in needed.items() if not _loads(soname)}
    pkgs = sorted(set(missing.values()))
    if platform not in ("offscreen", "minimal") and _font_count(environ) == 0:
        pkgs += list(FONT_PACKAGES)
        missing["fonts"] = "fonts"
    if not pkgs:
        return None
    what = ", ".join(missing)
    return (
        f"error: the window needs system libraries that are not installed ({what}); on Debian/Ubuntu: "
        f"`{apt_command(pkgs)}` (other systems: see README.txt). Commands such as `immich-ml-desktop --help` work without them."
    )
