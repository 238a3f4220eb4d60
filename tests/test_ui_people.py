"""People page of the real window on a real library (indexed from shared photos with the test packs):
merge, move a face out, rename, reject, undo, redo, and the same state after a restart."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import QItemSelectionModel

from _ui_helpers import finish_background_work, make_window, ui_settings, wait_until  # noqa: F401 - fixture
from conftest import CLIP_PACK, FACE_PACK
from immich_ml_desktop.settings import Settings

FACE_PHOTOS = [
    "face_recognition/examples/knn_examples/train/obama/obama.jpg",
    "face_recognition/examples/knn_examples/train/obama/obama2.jpg",
    "face_recognition/examples/knn_examples/train/biden/biden.jpg",
    "face_recognition/examples/knn_examples/train/biden/biden2.jpg",
    "face_recognition/examples/knn_examples/train/rose_leslie/img1.jpg",
    "face_recognition/examples/knn_examples/train/rose_leslie/img2.jpg",
    "face_recognition/examples/knn_examples/train/alex_lacamoire/img1.jpg",
]


@pytest.fixture
def library(tmp_path: Path, photos_dir: Path, cpu_engine) -> tuple[Path, Path, list[int]]:
    """A library whose faces are in three groups of two (made with the People API), the rest unassigned."""
    from immich_ml_desktop.library.folders import FolderSource
    from immich_ml_desktop.library.people import People
    from immich_ml_desktop.library.store import LibraryStore
    from immich_ml_desktop.services.index import IndexJob

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, rel in enumerate(FACE_PHOTOS):
        shutil.copyfile(photos_dir / rel, folder / f"{i}.jpg")
    path = tmp_path / "library.sqlite3"
    with LibraryStore(path) as store:
        IndexJob(store, cpu_engine, FolderSource([folder]), clip_model=CLIP_PACK, face_model=FACE_PACK).run()
        faces = [f.id for f in store.faces(model=FACE_PACK)]
        assert len(faces) >= 6, "the test photos should give at least six faces"
        people = People(store, FACE_PACK)
        groups = [people.move_faces(faces[i:i + 2]) for i in (0, 2, 4)]
    return path, folder, groups


def _select(grid, ids) -> None:
    grid.selectionModel().clearSelection()
    for row, tile in enumerate(grid.grid_model.tiles):
        payload_id = getattr(tile.payload, "id", getattr(tile.payload, "face_id", None))
        if payload_id in ids:
            grid.selectionModel().select(grid.grid_model.index(row), QItemSelectionModel.SelectionFlag.Select)


def _groups(page) -> dict[int, tuple[str | None, int]]:
    return {t.payload.id: (t.payload.name, t.payload.face_count) for t in page.group_grid.grid_model.tiles}


def test_review_actions_undo_redo_and_restart(qtbot, tmp_path: Path, models_dir: Path, library) -> None:
    path, folder, (ga, gb, gc) = library
    settings = ui_settings(tmp_path, models_dir, library_path=str(path), library_folders=[str(folder)])
    window = make_window(qtbot, settings, tmp_path / "w.ini")
    window.show_page("People")
    page = window.page("People")
    wait_until(qtbot, lambda: len(_groups(page)) == 3)
    assert page.stack.currentWidget() is page.groups_view

    # merge two groups
    _select(page.group_grid, {ga, gb})
    page.merge_button.click()
    wait_until(qtbot, lambda: len(_groups(page)) == 2)
    merged = next(g for g, (_n, count) in _groups(page).items() if count == 4)

    # open it, move one face out into a new group
    page.open_group(merged)
    wait_until(qtbot, lambda: page.stack.currentWidget() is page.detail_view and page.face_grid.grid_model.rowCount() == 4)
    moved = page.face_grid.grid_model.tiles[0].payload.face_id
    _select(page.face_grid, {moved})
    page.new_group_button.click()
    wait_until(qtbot, lambda: page.face_grid.grid_model.rowCount() == 3)
    assert len(_groups(page)) == 3

    # rename
    page.name_edit.setText("Barack")
    page.name_edit.returnPressed.emit()
    wait_until(qtbot, lambda: _groups(page).get(merged, (None,))[0] == "Barack")

    # reject a face (not this person)
    rejected = page.face_grid.grid_model.tiles[0].payload.face_id
    _select(page.face_grid, {rejected})
    page.reject_button.click()
    wait_until(qtbot, lambda: page.face_grid.grid_model.rowCount() == 2)
    assert "Reject" in page.undo_button.toolTip() or page.undo_button.isEnabled()

    # undo brings the face back, redo rejects it again
    page.undo_button.click()
    wait_until(qtbot, lambda: page.face_grid.grid_model.rowCount() == 3)
    assert page.redo_button.isEnabled()
    page.redo_button.click()
    wait_until(qtbot, lambda: page.face_grid.grid_model.rowCount() == 2 and not page.redo_button.isEnabled())

    # clicking a face shows its whole photo
    page._show_face_photo(page.face_grid.grid_model.index(0))
    wait_until(qtbot, lambda: page.photo.pixmap() is not None and not page.photo.pixmap().isNull())

    page.show_groups()
    wait_until(qtbot, lambda: page.stack.currentWidget() is page.groups_view)
    before = _groups(page)
    window.close()

    # restart: a new window on the same library file finds the same state, and can still undo
    again = make_window(qtbot, Settings.load(), tmp_path / "w.ini")
    again.show_page("People")
    page2 = again.page("People")
    wait_until(qtbot, lambda: _groups(page2) == before)
    assert before[merged] == ("Barack", 2)
    assert page2.undo_button.isEnabled()
    page2.undo_button.click()  # undo survives the restart: the rejected face returns
    wait_until(qtbot, lambda: _groups(page2).get(merged) == ("Barack", 3))


def test_people_page_empty_state(qtbot, tmp_path: Path, models_dir: Path) -> None:
    window = make_window(qtbot, ui_settings(tmp_path, models_dir), tmp_path / "w.ini")
    window.show_page("People")
    page = window.page("People")
    wait_until(qtbot, lambda: page.stack.currentWidget() is page.empty)
    assert "Library page" in page.empty.text()
    page.merge_selected()
    assert "Select two or more" in page.message.text()


def test_a_grid_of_thousands_of_faces_stays_quick(qtbot, tmp_path: Path, photos_dir: Path) -> None:
    """5,000 face tiles: filling the grid and painting a scrolled screenful each take well under 100 ms;
    only the visible tiles ask for pixels."""
    import time

    from immich_ml_desktop.ui.photo_grid import PhotoGrid, Tile
    from immich_ml_desktop.ui.thumbnails import ThumbnailLoader

    photo = str(photos_dir / FACE_PHOTOS[0])
    loader = ThumbnailLoader(size=112)
    grid = PhotoGrid(loader)
    qtbot.addWidget(grid)
    grid.resize(900, 700)
    grid.show()
    tiles = [Tile(key=f"f{i}", path=photo, title=f"#{i}", crop=(100 + i % 50, 100, 300, 300), space=None) for i in range(5000)]
    started = time.perf_counter()
    grid.grid_model.set_tiles(tiles)
    qtbot.wait(1)
    filled_ms = (time.perf_counter() - started) * 1000
    grid.verticalScrollBar().setValue(grid.verticalScrollBar().maximum() // 2)
    started = time.perf_counter()
    grid.viewport().repaint()
    paint_ms = (time.perf_counter() - started) * 1000
    assert filled_ms < 100 and paint_ms < 100, (filled_ms, paint_ms)
    requested = len(loader._pending) + len(loader._cache)
    assert 0 < requested < 300, f"{requested} tiles asked for pixels; only the visible ones should"
    loader.clear()
    loader.wait()
