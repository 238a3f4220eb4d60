"""Screenshots of the real window for the docs: run on an X display (Xvfb) with a tray host, e.g.

    Xvfb :51 -screen 0 1400x900x24 -nolisten tcp &
    DISPLAY=:51 trayer --edge top --align right --widthtype pixel --width 160 --heighttype pixel --height 28 &
    DISPLAY=:51 python tests/_ui_screens.py --photos ../shared/photos --out /tmp/shots

It indexes the photos (tiny test packs unless told otherwise) into a throw-away library and grabs the
Library page (idle, then while indexing), Search, People (grid with a suggestion chosen, one group open),
Server (running, a window of 1100 px), Settings (after Apply) and the tray (its menu, the "still running"
message). Each grab is saved twice: the window as Qt paints it, and the whole X screen (`-x11.png`,
ImageMagick's `import`) as the display shows it. Features a checkout lacks are skipped, so the same
script takes the "before" shots on an older checkout (PYTHONPATH pointing at it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", default=os.environ.get("IMMICH_ML_SHARED", str(ROOT.parent / "shared")) + "/photos")
    parser.add_argument("--models", default=os.environ.get("IMMICH_ML_SHARED", str(ROOT.parent / "shared")) + "/models")
    parser.add_argument("--out", default="/tmp/shots")
    parser.add_argument("--platform", default="xcb", help="Qt platform (xcb: a real X display)")
    parser.add_argument("--extra-models", nargs="*", default=[], help="more model caches (e.g. with ViT-B-32__openai)")
    parser.add_argument("--clip-model", default="tiny-random-clip")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", nargs="*", default=None, help="grab only these (library, search, people, server, settings, tray)")
    args = parser.parse_args()
    os.environ["QT_QPA_PLATFORM"] = args.platform
    work = Path(tempfile.mkdtemp(prefix="ui-screens-"))
    os.environ["IMMICH_ML_DESKTOP_CONFIG_DIR"] = str(work / "config")
    os.environ["IMMICH_ML_DESKTOP_CACHE_DIR"] = str(work / "cache")
    os.environ["XDG_CONFIG_HOME"] = str(work / "xdg")  # start at login is written here, not into ~/.config
    wanted = set(args.only or ["library", "search", "people", "server", "settings", "tray"])

    from PySide6.QtCore import QPoint, QSettings
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    from immich_ml_desktop.settings import Settings
    from immich_ml_desktop.ui.app import make_application
    from immich_ml_desktop.ui.context import AppContext
    from immich_ml_desktop.ui.main_window import MainWindow

    app = make_application()
    print("Qt platform:", QGuiApplication.platformName(), file=sys.stderr)
    if args.platform == "xcb":
        assert QGuiApplication.platformName() == "xcb", "not on a real X display"
    settings = Settings(
        device=args.device, model_cache_dir=args.models, extra_model_dirs=args.extra_models,
        clip_model=args.clip_model, face_model="test-scrfd25g-r512",
        library_path=str(work / "library.sqlite3"), library_folders=[str(Path(args.photos).resolve())],
        allow_downloads=False, server_port=3013,
    )
    settings.save()
    context = AppContext(settings)
    window = MainWindow(context, qsettings=QSettings(str(work / "window.ini"), QSettings.Format.IniFormat))
    window.resize(1280, 800)
    window.move(0, 36)  # below the tray host's panel at the top
    window.show()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def pump(seconds: float, until=None) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not (until and until()):
            app.processEvents()
            time.sleep(0.02)

    def grab(name: str, screen_only: bool = False) -> None:
        pump(0.7)
        path = out / name
        if not screen_only:
            window.grab().save(str(path))
            print("saved", path, file=sys.stderr)
        if args.platform == "xcb" and shutil.which("import"):
            screen = path.with_name(path.stem + "-x11.png")
            subprocess.run(["import", "-window", "root", str(screen)], check=False)
            print("saved", screen, file=sys.stderr)

    pump(60, lambda: context.is_warm)
    library = window.page("Library")
    window.show_page("Library")
    if "library" in wanted:
        grab("ui-library-idle.png")
    library.index_button.click()
    pump(300, lambda: library.last_progress is not None and library.last_progress.done >= 40)
    pump(3)  # let the grid catch up with its thumbnails
    if "library" in wanted:
        grab("ui-library-indexing.png")
    pump(900, lambda: library.last_summary is not None)

    if "search" in wanted:
        search = window.page("Search")
        window.show_page("Search")
        search.query.setText("a person smiling")
        search.search()
        pump(60, lambda: search.last_hits)
        pump(5, lambda: search.loader.pool.activeThreadCount() == 0)
        grab("ui-search.png")

    people = window.page("People")
    window.show_page("People")
    people.regroup()
    pump(120, lambda: not people.busy and people.groups)
    pump(8, lambda: people.loader.pool.activeThreadCount() == 0)
    if "people" in wanted:
        suggestions = people.suggestion_list
        if suggestions.count() and suggestions.item(0).flags():
            suggestions.setCurrentItem(suggestions.item(0))
        pump(3)
        grab("ui-people.png")
        if people.groups:
            people.open_group(people.groups[0].id)
            pump(20, lambda: people.stack.currentWidget() is people.detail_view and people.face_grid.grid_model.rowCount())
            pump(5)
            people.face_grid.setCurrentIndex(people.face_grid.grid_model.index(0))
            people._show_face_photo(people.face_grid.grid_model.index(0))
            pump(10, lambda: people.photo.pixmap() is not None and not people.photo.pixmap().isNull())
            grab("ui-people-group.png")
            people.show_groups()
            pump(10, lambda: people.stack.currentWidget() is people.groups_view)
            pump(3)
            grab("ui-people-back.png")

    if "server" in wanted:
        window.resize(1100, 760)
        window.show_page("Server")
        server = window.page("Server")
        server.preload.setChecked(True)
        server.start_button.click()
        pump(60, lambda: server.server is not None)
        pump(4)
        grab("ui-server.png")
        window.resize(1280, 800)

    if "settings" in wanted:
        page = window.page("Settings")
        window.show_page("Settings")
        pump(20, lambda: page.device.count() > 1)
        page.apply()
        pump(2)
        grab("ui-settings.png")

    companion = getattr(window, "companion", None)
    if "tray" in wanted and companion is not None and companion.available:
        window.show_page("Server")
        pump(3)
        companion.update()
        geometry = companion.icon.geometry()
        companion.menu.popup(QPoint(max(0, geometry.left() - 160), geometry.bottom() + 4))
        pump(2)
        grab("ui-tray-menu.png", screen_only=True)
        companion.menu.hide()
        window.close()  # into the tray: says so the first time
        pump(3)
        grab("ui-tray-closed.png", screen_only=True)
        window.quit_app()
    else:
        window.close()
    context.pool.waitForDone(20000)
    context.close()
    QApplication.quit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
