"""People page of the real window on a real library (indexed from shared photos with the test packs):
merge, move a face out, rename, reject, undo, redo, and the same state after a restart."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import QItemSelectionModel, Qt

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
    """5,000 face tiles: filling the grid and painting a scrolled screenful touch only the visible tiles
    (what the code controls; the milliseconds depend on the machine's load and are only printed):
    the delegate paints about a screenful, and only visible tiles ask for pixels."""
    import time

    from immich_ml_desktop.ui.photo_grid import PhotoGrid, Tile, TileDelegate
    from immich_ml_desktop.ui.thumbnails import ThumbnailLoader

    class CountingDelegate(TileDelegate):
        painted = 0

        def paint(self, painter, option, index) -> None:
            CountingDelegate.painted += 1
            super().paint(painter, option, index)

    photo = str(photos_dir / FACE_PHOTOS[0])
    loader = ThumbnailLoader(size=112)
    grid = PhotoGrid(loader)
    grid.setItemDelegate(CountingDelegate(loader.size, grid.gridSize(), 1, grid))
    qtbot.addWidget(grid)
    grid.resize(900, 700)
    grid.show()
    tiles = [Tile(key=f"f{i}", path=photo, title=f"#{i}", crop=(100 + i % 50, 100, 300, 300), space=None) for i in range(5000)]
    started = time.perf_counter()
    grid.grid_model.set_tiles(tiles)
    qtbot.wait(1)
    filled_ms = (time.perf_counter() - started) * 1000
    grid.verticalScrollBar().setValue(grid.verticalScrollBar().maximum() // 2)
    CountingDelegate.painted = 0
    started = time.perf_counter()
    grid.viewport().repaint()
    paint_ms = (time.perf_counter() - started) * 1000
    cells = (grid.viewport().width() // grid.gridSize().width() + 1) * (grid.viewport().height() // grid.gridSize().height() + 2)
    print(f"fill {filled_ms:.1f} ms, paint {paint_ms:.1f} ms, {CountingDelegate.painted} tiles painted")
    assert 0 < CountingDelegate.painted <= cells, (CountingDelegate.painted, cells)
    requested = len(loader._pending) + len(loader._cache)
    assert 0 < requested < 300, f"{requested} tiles asked for pixels; only the visible ones should"
    loader.clear()
    loader.wait()


def _painted_tiles(grid):
    """For each tile as painted on screen: (does the line under its picture hold text pixels, is its
    face crop drawn whole into a full-size square). Reads the grid's own pixels, what the user sees,
    and assumes nothing of how tiles are painted beyond "picture on top, centred; label under it"."""
    image = grid.viewport().grab().toImage()
    background = image.pixelColor(image.width() - 2, image.height() - 2)
    icon = grid.iconSize().width()
    line = grid.fontMetrics().height()
    tiles = []
    for row in range(grid.grid_model.rowCount()):
        index = grid.grid_model.index(row)
        cell = grid.visualRect(index)
        label_top = cell.top() + icon + 2
        inked = sum(
            1 for x in range(cell.left() + 2, cell.right() - 2) for y in range(label_top, min(label_top + line + 6, cell.bottom()))
            if _far(image.pixelColor(x, y), background)
        )
        pix = grid.grid_model.data(index, Qt.ItemDataRole.DecorationRole).toImage().scaled(icon, icon)
        left = cell.left() + (cell.width() - icon) // 2
        samples = [(x, y) for x in range(4, icon - 4, 9) for y in range(4, icon - 4, 9)]
        whole = False
        for top in range(cell.top(), cell.top() + 9):  # the picture's top margin is the painter's business
            misses = sum(_far(image.pixelColor(left + x, top + y), pix.pixelColor(x, y)) for x, y in samples)
            whole = whole or misses <= len(samples) // 10
        tiles.append((inked > 20, whole))
    return tiles


def _far(a, b) -> bool:
    return abs(a.red() - b.red()) + abs(a.green() - b.green()) + abs(a.blue() - b.blue()) > 60


def test_opening_a_group_and_going_back_keeps_every_tile_intact(qtbot, tmp_path: Path, models_dir: Path, library,
                                                                cpu_engine) -> None:
    """Every tile keeps its label and a full-size face crop after a group was opened and left. The
    reported bug: all tiles but the last lost their labels and had squashed crops. Its cause: with
    uniform item sizes Qt measures the *last* item for every cell; once the last group's cover is a
    small crop (a small photo), every cell shrank to it. So the last group here is one from small photos."""
    from PIL import Image

    from immich_ml_desktop.library.folders import FolderSource
    from immich_ml_desktop.library.people import People
    from immich_ml_desktop.library.store import LibraryStore
    from immich_ml_desktop.services.index import IndexJob

    path, folder, groups = library
    small = tmp_path / "small"
    small.mkdir()
    with Image.open(folder / "0.jpg") as im:  # one person's photo at 170 px: a face of some 60 px
        for name in ("s1.jpg", "s2.jpg"):
            im.resize((170, int(170 * im.height / im.width))).save(small / name, quality=95)
    with LibraryStore(path) as store:
        before = {f.id for f in store.faces(model=FACE_PACK)}
        IndexJob(store, cpu_engine, FolderSource([folder, small]), clip_model=CLIP_PACK, face_model=FACE_PACK).run()
        new = sorted({f.id for f in store.faces(model=FACE_PACK)} - before)
        assert len(new) >= 2, "the small photos should give a face each"
        last = People(store, FACE_PACK).move_faces(new[:2])  # two faces, the highest id: the last tile
    window = make_window(qtbot, ui_settings(tmp_path, models_dir, library_path=str(path),
                                            library_folders=[str(folder), str(small)]), tmp_path / "w.ini")
    window.resize(1100, 760)
    window.show_page("People")
    page = window.page("People")
    wait_until(qtbot, lambda: len(_groups(page)) == 4)
    grid, size = page.group_grid, page.loader.size
    assert grid.grid_model.tiles[-1].payload.id == last
    wait_until(qtbot, lambda: all(page.loader.pixmap(t.key, None) is not None for t in grid.grid_model.tiles))
    assert page.loader.pixmap(grid.grid_model.tiles[-1].key, None).width() < size  # the small crop is last
    wait_until(qtbot, lambda: all(whole for _label, whole in _painted_tiles(grid)))
    assert _painted_tiles(grid) == [(True, True)] * 4

    for row in (0, 2):  # by keyboard (Enter on a tile) and back by the button
        grid.setCurrentIndex(grid.grid_model.index(row))
        grid.activated.emit(grid.grid_model.index(row))
        wait_until(qtbot, lambda: page.stack.currentWidget() is page.detail_view and page.face_grid.grid_model.rowCount())
        page._show_face_photo(page.face_grid.grid_model.index(0))
        wait_until(qtbot, lambda: page.photo.pixmap() is not None and not page.photo.pixmap().isNull())
        page.back_button.click()
        wait_until(qtbot, lambda: page.stack.currentWidget() is page.groups_view)
        qtbot.wait(50)
        assert _painted_tiles(grid) == [(True, True)] * 4
        assert {grid.visualRect(grid.grid_model.index(r)).size().toTuple() for r in range(4)} == {grid.gridSize().toTuple()}
    order = sorted(_groups(page), key=lambda g: (-_groups(page)[g][1], g))
    assert [t.title for t in grid.grid_model.tiles] == [f"Unnamed #{g}\n2 faces" for g in order]


def test_suggestions_show_both_faces_and_select_both_groups(qtbot, tmp_path: Path, models_dir: Path, library, monkeypatch) -> None:
    from immich_ml_desktop.library import people as people_module

    monkeypatch.setattr(people_module, "SUGGEST_SIMILARITY", -1.0)  # every pair is suggested: deterministic
    path, folder, (ga, gb, gc) = library
    window = make_window(qtbot, ui_settings(tmp_path, models_dir, library_path=str(path), library_folders=[str(folder)]),
                         tmp_path / "w.ini")
    window.show_page("People")
    page = window.page("People")
    wait_until(qtbot, lambda: len(_groups(page)) == 3 and page.suggestions)
    suggestions = page.suggestion_list
    first = suggestions.item(0)
    s = first.data(Qt.ItemDataRole.UserRole)
    # Same words as the tiles: "Unnamed #<id>", both faces side by side in the icon.
    assert first.text().startswith(f"Unnamed #{s.group_a} ↔ Unnamed #{s.group_b}\n2 + 2 faces, ")
    assert {f"Unnamed #{s.group_a}\n2 faces", f"Unnamed #{s.group_b}\n2 faces"} <= {t.title for t in page.group_grid.grid_model.tiles}
    wait_until(qtbot, lambda: page.loader.pixmap(f"f{page.groups[0].cover_face_id}", None) is not None)
    qtbot.wait(50)
    icon = first.icon().pixmap(suggestions.iconSize()).toImage()
    half = icon.width() // 2
    left = icon.pixelColor(half // 2, icon.height() // 2)
    right = icon.pixelColor(half + half // 2, icon.height() // 2)
    grey = (0xD9, 0xDD, 0xE3)  # the placeholder: a face not shown
    assert (left.red(), left.green(), left.blue()) != grey and (right.red(), right.green(), right.blue()) != grey

    suggestions.setCurrentItem(first)  # choosing a suggestion selects both of its groups on the left
    assert {g.id for g in page.selected_groups()} == {s.group_a, s.group_b}

    page.dismiss_button.click()
    wait_until(qtbot, lambda: all({x.group_a, x.group_b} != {s.group_a, s.group_b} for x in page.suggestions))
    assert len(_groups(page)) == 3
    nxt = suggestions.item(0).data(Qt.ItemDataRole.UserRole)
    suggestions.setCurrentItem(suggestions.item(0))
    suggestions.itemActivated.emit(suggestions.item(0))  # Enter accepts: the two groups merge
    wait_until(qtbot, lambda: len(_groups(page)) == 2)
    assert max(count for _n, count in _groups(page).values()) == 4
    assert nxt.group_a in _groups(page) or nxt.group_b in _groups(page)


def test_confirm_group_keeps_it_through_a_regroup(qtbot, tmp_path: Path, models_dir: Path, library) -> None:
    """A group the clustering made, confirmed from its page (key C), keeps its faces when the faces are
    grouped again so strictly that every unconfirmed group dissolves."""
    from immich_ml_desktop.library.clustering import GroupingParams
    from immich_ml_desktop.library.people import People
    from immich_ml_desktop.library.store import LibraryStore

    path, folder, _groups_made = library
    with LibraryStore(path) as store:  # start from the clustering's own groups: none confirmed
        store.connection().execute("UPDATE face_groups SET confirmed = 0")
        store.connection().commit()
    window = make_window(qtbot, ui_settings(tmp_path, models_dir, library_path=str(path), library_folders=[str(folder)]),
                         tmp_path / "w.ini")
    window.show_page("People")
    page = window.page("People")
    wait_until(qtbot, lambda: len(_groups(page)) == 3)
    keep, other = page.groups[0], page.groups[1]
    assert not keep.confirmed and not other.confirmed
    page.open_group(keep.id)
    wait_until(qtbot, lambda: page.stack.currentWidget() is page.detail_view and page.confirm_button.isEnabled())
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=5000)
    page.face_grid.setFocus()
    qtbot.keyClick(page.face_grid, Qt.Key.Key_C)
    wait_until(qtbot, lambda: not page.confirm_button.isEnabled() and page.confirm_button.text() == "Confirmed")
    assert "Confirm group" in page.undo_button.toolTip()

    people = People(page.context.library(), FACE_PACK)
    faces = {f.face_id for f in people.group(keep.id).faces}
    people.recluster(params=GroupingParams(link_distance=0.0, join_distance=0.0))  # nothing links any more
    assert {f.face_id for f in people.group(keep.id).faces} == faces  # kept, with the same faces
    assert other.id not in {g.id for g in people.groups()}  # an unconfirmed one did not survive


def test_a_suggested_pair_is_offered_with_both_faces_and_accepted_or_dismissed(qtbot, tmp_path: Path, models_dir: Path,
                                                                               library) -> None:
    """A pair the grouping made and nobody confirmed (here: one of the fixture's groups marked unconfirmed,
    as a regroup leaves it) is a suggestion: first in the list with both its faces, its tile says so;
    Enter keeps it as one person, Dismiss takes its less certain face out."""
    import sqlite3

    path, folder, (ga, gb, gc) = library
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE face_groups SET confirmed = 0 WHERE id = ?", (ga,))
    window = make_window(qtbot, ui_settings(tmp_path, models_dir, library_path=str(path), library_folders=[str(folder)]),
                         tmp_path / "w.ini")
    window.show_page("People")
    page = window.page("People")
    wait_until(qtbot, lambda: len(_groups(page)) == 3 and page.pairs)
    assert [p.group for p in page.pairs] == [ga]
    suggestions = page.suggestion_list
    first = suggestions.item(0)
    assert first.data(Qt.ItemDataRole.UserRole).group == ga
    assert first.text().startswith(f"Unnamed #{ga}: one person?\n2 faces, ")
    titles = {t.payload.id: t.title for t in page.group_grid.grid_model.tiles}
    assert titles[ga] == f"Unnamed #{ga}\n2 faces, suggested" and titles[gb] == f"Unnamed #{gb}\n2 faces"
    wait_until(qtbot, lambda: all(page.loader.pixmap(f"f{f}", None) is not None for f in page.pairs[0].faces))
    qtbot.wait(50)
    icon = first.icon().pixmap(suggestions.iconSize()).toImage()
    half = icon.width() // 2
    grey = (0xD9, 0xDD, 0xE3)  # the placeholder: a face not shown
    for x in (half // 2, half + half // 2):
        c = icon.pixelColor(x, icon.height() // 2)
        assert (c.red(), c.green(), c.blue()) != grey
    suggestions.setCurrentItem(first)  # choosing it selects its group on the left
    assert {g.id for g in page.selected_groups()} == {ga}

    suggestions.itemActivated.emit(first)  # Enter: one person
    wait_until(qtbot, lambda: not page.pairs and not page.busy)
    assert all(g.confirmed for g in page.groups if g.id == ga)

    page.undo()
    wait_until(qtbot, lambda: [p.group for p in page.pairs] == [ga] and not page.busy)
    weaker = page.pairs[0].faces[1]
    suggestions.setCurrentItem(suggestions.item(0))
    page.dismiss_button.click()
    wait_until(qtbot, lambda: not page.pairs and not page.busy)
    assert _groups(page)[ga][1] == 1
    from immich_ml_desktop.library.people import People
    from immich_ml_desktop.library.store import LibraryStore

    with LibraryStore(path) as store:
        people = People(store, FACE_PACK)
        assert weaker in {f.face_id for f in people.unassigned_faces()}
        people.recluster()
        assert weaker not in {f.face_id for f in people.group(ga).faces}  # never paired with it again
