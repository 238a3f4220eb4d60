"""Search page: type a phrase, see the photos whose CLIP vectors match it best (local, no server)."""

from __future__ import annotations

import os

from PySide6.QtWidgets import QHBoxLayout, QLineEdit, QPushButton, QSpinBox, QStackedWidget, QWidget

from immich_ml_desktop.ui.photo_grid import PhotoGrid, Tile
from immich_ml_desktop.ui.thumbnails import ThumbnailLoader
from immich_ml_desktop.ui.workers import run_task
from immich_ml_desktop.ui.widgets import Page, empty_state


class SearchPage(Page):
    page_name = "Search"
    page_tip = "Find photos by describing them"

    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(
            "Search",
            "Describe a photo in a few words (\"a dog on the beach\"); the best matches come first. "
            "Search uses the CLIP vectors of the indexed photos, on this machine.",
            parent,
        )
        self.context = context
        self.search_engine = None  # library.search.ClipSearch, kept: it caches the vector matrix
        self.loader = ThumbnailLoader(size=160, parent=self)
        row = QHBoxLayout()
        self.query = QLineEdit()
        self.query.setPlaceholderText("What is in the photo?")
        self.query.setClearButtonEnabled(True)
        self.query.returnPressed.connect(self.search)
        self.limit = QSpinBox()
        self.limit.setRange(1, 1000)
        self.limit.setValue(60)
        self.limit.setPrefix("best ")
        self.limit.setToolTip("How many photos to show")
        self.search_button = QPushButton("&Search")
        self.search_button.clicked.connect(self.search)
        row.addWidget(self.query, 1)
        row.addWidget(self.limit)
        row.addWidget(self.search_button)
        self.body.addLayout(row)
        self.stack = QStackedWidget()
        self.empty = empty_state("Type a phrase above and press Enter.\n\nIndex some photos on the Library page first.")
        self.grid = PhotoGrid(self.loader, text_lines=2)  # the file name, then the score: neither hides the other
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.grid)
        self.body.addWidget(self.stack, 1)
        self.last_hits: list = []

    def page_shown(self) -> None:
        self.query.setFocus()

    def search(self) -> None:
        text = self.query.text().strip()
        if not text:
            self.message.show_error("Type what you are looking for first.")
            return
        self.message.clear_message()
        self.search_button.setEnabled(False)
        clip_model, limit = self.context.settings.clip_model, self.limit.value()

        def find():
            from immich_ml_desktop.library.search import ClipSearch

            store, engine = self.context.library(), self.context.engine()
            s = self.search_engine
            if s is None or s.store is not store or s.engine is not engine or s.clip_model != clip_model:
                s = self.search_engine = ClipSearch(store, engine, clip_model)
            return s.search(text, limit)

        run_task(find, on_done=self._show, on_error=self._failed)

    def _failed(self, error: BaseException) -> None:
        self.search_button.setEnabled(True)
        self.message.show_error(error)

    def _show(self, hits) -> None:
        self.search_button.setEnabled(True)
        self.last_hits = hits
        tiles = [
            Tile(key=f"a{h.asset.id}", path=str(h.asset.path) if h.asset.path else None,
                 title=f"{os.path.basename(h.asset.key)}\nscore {h.score:.3f}", tooltip=f"{h.asset.key}\nscore {h.score:.4f}",
                 payload=h.asset)
            for h in hits
        ]
        self.grid.grid_model.set_tiles(tiles)
        if tiles:
            self.stack.setCurrentWidget(self.grid)
        else:
            self.stack.setCurrentWidget(self.empty)
            self.message.show_note("No indexed photos to search yet: index a folder on the Library page.")
