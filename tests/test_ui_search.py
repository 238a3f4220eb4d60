"""Search page of the real window: a phrase ranks the indexed photos by their local CLIP vectors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from _ui_helpers import finish_background_work, make_window, ui_settings, wait_until  # noqa: F401 - fixture
from conftest import CLIP_PACK


def test_search_ranks_indexed_photos(qtbot, tmp_path: Path, models_dir: Path, photos_dir: Path, cpu_engine) -> None:
    from immich_ml_desktop.library.folders import FolderSource
    from immich_ml_desktop.library.store import LibraryStore
    from immich_ml_desktop.services.index import IndexJob

    folder = tmp_path / "photos"
    folder.mkdir()
    for src in sorted((photos_dir / "photoprism" / "assets" / "examples").glob("*.jpg"))[:6]:
        shutil.copyfile(src, folder / src.name)
    path = tmp_path / "library.sqlite3"
    with LibraryStore(path) as store:
        IndexJob(store, cpu_engine, FolderSource([folder]), clip_model=CLIP_PACK, face_model=None).run()
        ids, vectors = store.clip_vectors(CLIP_PACK)

    window = make_window(qtbot, ui_settings(tmp_path, models_dir, library_path=str(path)), tmp_path / "w.ini")
    window.show_page("Search")
    page = window.page("Search")
    assert page.stack.currentWidget() is page.empty
    page.query.setText("a cat")
    page.limit.setValue(4)
    page.query.returnPressed.emit()
    wait_until(qtbot, lambda: page.last_hits, timeout=30)
    assert page.grid.grid_model.rowCount() == 4 and page.stack.currentWidget() is page.grid

    # the same ranking as a direct cosine over the stored vectors
    query = cpu_engine.clip_text(CLIP_PACK, "a cat")
    scores = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)) @ (query / np.linalg.norm(query))
    expected = [int(ids[i]) for i in np.argsort(-scores)[:4]]
    assert [h.asset.id for h in page.last_hits] == expected
    scores_shown = [h.score for h in page.last_hits]
    assert scores_shown == sorted(scores_shown, reverse=True)


def test_empty_query_is_explained(qtbot, tmp_path: Path, models_dir: Path) -> None:
    window = make_window(qtbot, ui_settings(tmp_path, models_dir), tmp_path / "w.ini")
    page = window.page("Search")
    page.search()
    assert "Type what you are looking for" in page.message.text()
