"""A grid of photos or face crops (QListView + list model) that stays smooth with thousands of tiles.

The model holds only light records; pixels come from a `ThumbnailLoader` when a tile becomes visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from PySide6.QtCore import QAbstractListModel, QModelIndex, QSize, Qt
from PySide6.QtGui import QColor, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QListView, QWidget

from immich_ml_desktop.ui.thumbnails import ThumbnailLoader

PayloadRole = Qt.ItemDataRole.UserRole + 1


@dataclass
class Tile:
    """One tile: `key` identifies its pixels in the cache; `payload` is what the page acts on."""

    key: str
    path: str | None
    title: str = ""
    tooltip: str = ""
    crop: Sequence[float] | None = None
    space: tuple[int, int] | None = None
    payload: Any = None
    dimmed: bool = False
    extra: dict = field(default_factory=dict)


class PhotoGridModel(QAbstractListModel):
    def __init__(self, loader: ThumbnailLoader, parent=None) -> None:
        super().__init__(parent)
        self.loader = loader
        self.tiles: list[Tile] = []
        self._rows: dict[str, int] = {}
        self._placeholder = QPixmap(loader.size, loader.size)
        self._placeholder.fill(QColor("#d9dde3"))
        loader.ready.connect(self._on_ready)

    def set_tiles(self, tiles: list[Tile], *, incremental: bool = False) -> None:
        """Replace the tiles. `incremental`: when the old ones are a prefix of the new (indexing adds at
        the end), only the new rows are inserted, so the view keeps its scroll position and selection."""
        old = self.tiles
        if incremental and len(tiles) >= len(old) and all(a.key == b.key for a, b in zip(old, tiles)):
            if len(tiles) > len(old):
                self.beginInsertRows(QModelIndex(), len(old), len(tiles) - 1)
                self.tiles = tiles
                self._rows.update((t.key, i) for i, t in enumerate(tiles[len(old):], start=len(old)))
                self.endInsertRows()
            return
        self.beginResetModel()
        self.tiles = tiles
        self._rows = {t.key: i for i, t in enumerate(tiles)}
        self.endResetModel()

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802 - Qt API
        return 0 if parent.isValid() else len(self.tiles)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        tile = self.tiles[index.row()]
        if role == Qt.ItemDataRole.DecorationRole:
            pix = self.loader.pixmap(tile.key, tile.path, tile.crop, tile.space)
            return pix if pix is not None else self._placeholder
        if role == Qt.ItemDataRole.DisplayRole:
            return tile.title
        if role == Qt.ItemDataRole.ToolTipRole:
            return tile.tooltip or tile.path
        if role == Qt.ItemDataRole.ForegroundRole and tile.dimmed:
            return QColor("#8a8f98")
        if role == PayloadRole:
            return tile.payload
        return None

    def _on_ready(self, key: str) -> None:
        row = self._rows.get(key)
        if row is not None:
            idx = self.index(row)
            self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.DecorationRole])


class PhotoGrid(QListView):
    """Icon-mode list view with uniform tiles and batched layout (cheap for 10k+ rows)."""

    def __init__(self, loader: ThumbnailLoader, parent: QWidget | None = None, *, text_lines: int = 1) -> None:
        super().__init__(parent)
        self.grid_model = PhotoGridModel(loader, self)
        self.setModel(self.grid_model)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setUniformItemSizes(True)
        self.setLayoutMode(QListView.LayoutMode.Batched)
        self.setBatchSize(200)
        self.setIconSize(QSize(loader.size, loader.size))
        line = self.fontMetrics().height()
        self.setGridSize(QSize(loader.size + 16, loader.size + 12 + text_lines * line))
        self.setSpacing(4)
        self.setWordWrap(True)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)

    def selected_payloads(self) -> list[Any]:
        rows = sorted(i.row() for i in self.selectionModel().selectedIndexes())
        return [self.grid_model.tiles[r].payload for r in rows]
