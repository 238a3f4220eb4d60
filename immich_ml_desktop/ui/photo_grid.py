"""A grid of photos or face crops (QListView + list model) that stays smooth with thousands of tiles.

The model holds only light records; pixels come from a `ThumbnailLoader` when a tile becomes visible.
Tiles are painted by `TileDelegate` into fixed cells: the picture scaled into a square (aspect kept)
and up to `text_lines` lines of text, each elided on its own. Qt's own icon-mode painting sized the
cells from one item's decoration and wrapped text (with uniform item sizes, whichever item it measured
first), so after the People page swapped its tiles the other tiles could lose their labels and have
their crops squashed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from collections.abc import Sequence

from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, QRect, QSize, Qt
from PySide6.QtGui import QColor, QPalette, QPixmap
from PySide6.QtWidgets import QAbstractItemView, QListView, QStyle, QStyledItemDelegate, QStyleOptionFocusRect, QWidget

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

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802, B008 - Qt API (an invalid index)
        return 0 if parent.isValid() else len(self.tiles)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
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


class TileDelegate(QStyledItemDelegate):
    """Paints a tile into its fixed cell: picture on top (scaled to fit a square, centred), text below."""

    MARGIN = 4

    def __init__(self, icon: int, cell: QSize, text_lines: int, parent=None) -> None:
        super().__init__(parent)
        self.icon, self.cell, self.text_lines = icon, cell, text_lines

    def sizeHint(self, option, index) -> QSize:  # noqa: N802 - Qt API
        return self.cell

    def picture_rect(self, cell: QRect) -> QRect:
        return QRect(cell.x() + (cell.width() - self.icon) // 2, cell.y() + self.MARGIN, self.icon, self.icon)

    def text_rects(self, cell: QRect, line_height: int) -> list[QRect]:
        top = cell.y() + self.MARGIN + self.icon + 2
        return [QRect(cell.x() + 3, top + i * line_height, cell.width() - 6, line_height) for i in range(self.text_lines)]

    def paint(self, painter, option, index) -> None:
        painter.save()
        cell = option.rect
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        palette = option.palette
        if selected:
            painter.fillRect(cell.adjusted(1, 1, -1, -1), palette.color(QPalette.ColorRole.Highlight))
        pix = index.data(Qt.ItemDataRole.DecorationRole)
        dimmed = index.data(Qt.ItemDataRole.ForegroundRole) is not None
        if isinstance(pix, QPixmap) and not pix.isNull():
            box = self.picture_rect(cell)
            size = pix.size().scaled(box.size(), Qt.AspectRatioMode.KeepAspectRatio)
            target = QRect(box.x() + (box.width() - size.width()) // 2, box.y() + (box.height() - size.height()) // 2,
                           size.width(), size.height())
            if dimmed:
                painter.setOpacity(0.45)
            painter.setRenderHint(painter.RenderHint.SmoothPixmapTransform)
            painter.drawPixmap(target, pix)
            painter.setOpacity(1.0)
        text = index.data(Qt.ItemDataRole.DisplayRole) or ""
        if text:
            colour = palette.color(QPalette.ColorRole.HighlightedText) if selected else (
                QColor("#8a8f98") if dimmed else palette.color(QPalette.ColorRole.Text))
            painter.setPen(colour)
            metrics = option.fontMetrics
            for rect, line in zip(self.text_rects(cell, metrics.height()), text.split("\n")):
                elided = metrics.elidedText(line, Qt.TextElideMode.ElideMiddle, rect.width())
                painter.drawText(rect, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, elided)
        if option.state & QStyle.StateFlag.State_HasFocus:
            focus = QStyleOptionFocusRect()
            focus.rect = cell.adjusted(1, 1, -1, -1)
            focus.palette = palette
            focus.state = option.state
            style = option.widget.style() if option.widget is not None else None
            if style is not None:
                style.drawPrimitive(QStyle.PrimitiveElement.PE_FrameFocusRect, focus, painter, option.widget)
        painter.restore()


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
        cell = QSize(loader.size + 16, loader.size + 2 * TileDelegate.MARGIN + 2 + text_lines * line)
        self.tile_delegate = TileDelegate(loader.size, cell, text_lines, self)
        self.setItemDelegate(self.tile_delegate)
        self.setGridSize(cell)
        self.setSpacing(4)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)

    def selected_payloads(self) -> list[Any]:
        rows = sorted(i.row() for i in self.selectionModel().selectedIndexes())
        return [self.grid_model.tiles[r].payload for r in rows]
