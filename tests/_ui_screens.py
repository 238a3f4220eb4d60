"""Screenshots of the real window for the notes: run under a virtual X display, e.g.

    xvfb-run -s "-screen 0 1400x900x24" python tests/_ui_screens.py --photos ../shared/photos --out /work/notes

It indexes the photos (tiny test packs unless told otherwise) into a throw-away library, grabs the Library
page while indexing, groups the faces and grabs the People page (grid and one group's detail) and the
Server page. Each grab is saved twice: the window as Qt paints it, and the whole X screen (`-x11.png`,
ImageMagick's `import`) as the display shows it.
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
    parser.add_argument("--photos", default=str(ROOT.parent / "shared" / "photos"))
    parser.add_argument("--models", default=str(ROOT.parent / "shared" / "models"))
    parser.add_argument("--out", default="/work/notes")
    parser.add_argument("--platform", default="xcb", help="Qt platform (xcb: a real X display)")
    parser.add_argument("--extra-models", nargs="*", default=[], help="more model caches (e.g. with ViT-B-32__openai)")
    parser.add_argument("--clip-model", default="tiny-random-clip")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    os.environ["QT_QPA_PLATFORM"] = args.platform
    work = Path(tempfile.mkdtemp(prefix="ui-screens-"))
    os.environ["IMMICH_ML_DESKTOP_CONFIG_DIR"] = str(work / "config")
    os.environ["IMMICH_ML_DESKTOP_CACHE_DIR"] = str(work / "cache")

    from PySide6.QtCore import QSettings
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
        allow_downloads=False,
    )
    settings.save()
    context = AppContext(settings)
    window = MainWindow(context, qsettings=QSettings(str(work / "window.ini"), QSettings.Format.IniFormat))
    window.resize(1360, 860)
    window.show()
    out = Path(args.out)

    def pump(seconds: float, until=None) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not (until and until()):
            app.processEvents()
            time.sleep(0.02)

    def grab(name: str) -> None:
        pump(0.5)
        path = out / name
        window.grab().save(str(path))
        print("saved", path, file=sys.stderr)
        if args.platform == "xcb" and shutil.which("import"):
            screen = path.with_name(path.stem + "-x11.png")
            subprocess.run(["import", "-window", "root", str(screen)], check=False)
            print("saved", screen, file=sys.stderr)

    pump(30, lambda: context.is_warm)
    library = window.page("Library")
    window.show_page("Library")
    library.index_button.click()
    pump(300, lambda: library.last_progress is not None and library.last_progress.done >= 40)
    pump(3)  # let the grid catch up with its thumbnails
    grab("ui-library-indexing.png")
    pump(900, lambda: library.last_summary is not None)
    library.tabs.setCurrentIndex(1)
    grab("ui-library-failures.png")
    library.tabs.setCurrentIndex(0)

    people = window.page("People")
    window.show_page("People")
    people.regroup()
    pump(120, lambda: not people.busy and people.groups)
    pump(8, lambda: people.loader.pool.activeThreadCount() == 0)
    grab("ui-people.png")
    if people.groups:
        people.open_group(people.groups[0].id)
        pump(20, lambda: people.stack.currentWidget() is people.detail_view and people.face_grid.grid_model.rowCount())
        pump(5)
        people.face_grid.setCurrentIndex(people.face_grid.grid_model.index(0))
        people._show_face_photo(people.face_grid.grid_model.index(0))
        pump(10, lambda: people.photo.pixmap() is not None and not people.photo.pixmap().isNull())
        grab("ui-people-group.png")

    window.show_page("Server")
    server = window.page("Server")
    server.port.setValue(3013)
    server.start_button.click()
    pump(60, lambda: server.server is not None)
    grab("ui-server.png")
    window.close()
    context.pool.waitForDone(20000)
    context.close()
    QApplication.quit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
