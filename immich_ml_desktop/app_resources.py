"""Where the app's own files (icons) are, the same in a source checkout, a pip install and a frozen app.

Qt-free on purpose: the window, the installers and the tests all ask here, e.g.
`QIcon(str(icon_path(256)))`.
"""

from __future__ import annotations

from pathlib import Path

# In a PyInstaller build this module's __file__ points inside the bundle (sys._MEIPASS), where the spec
# copies `immich_ml_desktop/resources/`; everywhere else it is the package folder itself.
RESOURCES_DIR = Path(__file__).resolve().parent / "resources"
ICONS_DIR = RESOURCES_DIR / "icons"
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def icon_path(size: int = 256) -> Path:
    """The app icon PNG of the smallest size >= `size` (the largest if `size` exceeds them all)."""
    chosen = next((s for s in ICON_SIZES if s >= size), ICON_SIZES[-1])
    path = ICONS_DIR / f"immich-ml-desktop-{chosen}.png"
    if not path.is_file():
        raise FileNotFoundError(f"App icon {path} is missing: reinstall the app (or run resources/make_icons.py).")
    return path


def icon_paths() -> list[Path]:
    """Every icon size, smallest first: hand them all to QIcon so each screen density gets a sharp one."""
    return [icon_path(s) for s in ICON_SIZES]
