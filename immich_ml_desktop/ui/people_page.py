"""People page: review the face groups before they reach Immich: merge, move, reject, rename, hide,
suggestions, undo/redo (kept in the library, so they survive a restart), all with keyboard shortcuts."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QItemSelection, QItemSelectionModel, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QIcon, QKeySequence, QPainter, QPen, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from immich_ml_desktop.ui.photo_grid import PhotoGrid, Tile
from immich_ml_desktop.ui.thumbnails import ThumbnailLoader, load_image
from immich_ml_desktop.ui.workers import run_task
from immich_ml_desktop.ui.widgets import Page, empty_state, label

FILTERS = [("All people", "all"), ("Unnamed", "unnamed"), ("Named", "named"), ("Hidden", "hidden")]


def group_label(group) -> str:
    """A group's name, or `Unnamed #<id>`: the same words on its tile, in suggestions and menus."""
    return group.name or f"Unnamed #{group.id}"


def group_title(group) -> str:
    return f"{group_label(group)} · {group.face_count}"


SUGGESTION_FACE = 56  # px of each face in a suggestion


def _is_pair(suggestion) -> bool:
    """A `people.PairSuggestion` (two faces of one group) rather than a `people.Suggestion` (two groups);
    told apart by shape so that this module does not import the grouping (numpy, scipy) at start."""
    return hasattr(suggestion, "faces")


class SuggestionList(QListWidget):
    """Suggested merges as the two groups' faces side by side with their names and how alike they are,
    then suggested pairs (two faces the grouping put together, `PairSuggestion`) as their two faces."""

    def __init__(self, loader: ThumbnailLoader, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.loader = loader
        self.setIconSize(QSize(2 * SUGGESTION_FACE + 8, SUGGESTION_FACE))
        self.setSpacing(2)
        self.setWordWrap(True)  # a narrow panel wraps the names instead of scrolling sideways
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.covers: dict[int, tuple[str, str | None, Any, Any]] = {}  # group -> (key, path, box, space)
        self.face_covers: dict[int, tuple[str, str | None, Any, Any]] = {}  # face -> the same, for pairs
        loader.ready.connect(self._cover_ready)

    def show_suggestions(self, suggestions, groups: dict, covers: dict, pairs=(), face_covers=None) -> None:
        self.clear()
        self.covers, self.face_covers = covers, face_covers or {}
        for pair in pairs:
            name = group_label(groups[pair.group]) if pair.group in groups else f"#{pair.group}"
            item = QListWidgetItem(f"{name}: one person?\n2 faces, {pair.similarity:.2f} alike")
            item.setData(Qt.ItemDataRole.UserRole, pair)
            item.setToolTip(f"The grouping put these two faces together ({name}); two faces are too few to be "
                            "sure. Enter or Accept keeps them as one person; Dismiss takes the less certain face "
                            "out for good.")
            self.addItem(item)
            self._paint(item)
        for s in suggestions:
            a, b = groups.get(s.group_a), groups.get(s.group_b)
            names = [group_label(g) if g else f"#{gid}" for g, gid in ((a, s.group_a), (b, s.group_b))]
            counts = [str(g.face_count) if g else "?" for g in (a, b)]
            item = QListWidgetItem(f"{names[0]} ↔ {names[1]}\n{counts[0]} + {counts[1]} faces, {s.similarity:.2f} alike")
            item.setData(Qt.ItemDataRole.UserRole, s)
            item.setToolTip(f"{names[0]} and {names[1]} look like one person (similarity {s.similarity:.2f}). "
                            "Enter or Accept merges them; Dismiss keeps them apart.")
            self.addItem(item)
            self._paint(item)
        if self.count() == 0:
            self.addItem("No suggestions.")
            self.item(0).setFlags(Qt.ItemFlag.NoItemFlags)

    def _paint(self, item: QListWidgetItem) -> None:
        s = item.data(Qt.ItemDataRole.UserRole)
        pix = QPixmap(self.iconSize())
        pix.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pix)
        pair = _is_pair(s)
        for i, gid in enumerate(s.faces if pair else (s.group_a, s.group_b)):
            cover = (self.face_covers if pair else self.covers).get(gid)
            face = self.loader.pixmap(*cover) if cover else None
            target = QRectF(i * (SUGGESTION_FACE + 8), 0, SUGGESTION_FACE, SUGGESTION_FACE)
            if face is not None and not face.isNull():
                painter.drawPixmap(target.toRect(), face)
            else:
                painter.fillRect(target, QColor("#d9dde3"))
        painter.end()
        item.setIcon(QIcon(pix))

    def _cover_ready(self, key: str) -> None:
        groups = {gid for gid, cover in self.covers.items() if cover[0] == key}
        faces = {fid for fid, cover in self.face_covers.items() if cover[0] == key}
        if not groups and not faces:
            return
        for row in range(self.count()):
            s = self.item(row).data(Qt.ItemDataRole.UserRole)
            if s is None:
                continue
            if set(s.faces) & faces if _is_pair(s) else {s.group_a, s.group_b} & groups:
                self._paint(self.item(row))


class PhotoWithBox(QLabel):
    """The whole photo of a face, with the face's box drawn on it."""

    def __init__(self) -> None:
        super().__init__("Click a face to see its whole photo.")
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setMinimumWidth(320)
        self.setProperty("role", "hint")
        self.setWordWrap(True)

    def show_photo(self, image, box, space) -> None:
        pix = QPixmap.fromImage(image)
        scale = pix.width() / space[0] if space and space[0] else 1.0
        painter = QPainter(pix)
        painter.setPen(QPen(QColor("#ffcc00"), max(2, pix.width() // 200)))
        x1, y1, x2, y2 = (v * scale for v in box)
        painter.drawRect(QRectF(x1, y1, x2 - x1, y2 - y1))
        painter.end()
        self.setPixmap(pix.scaled(self.width() - 8, self.height() - 8, Qt.AspectRatioMode.KeepAspectRatio,
                                  Qt.TransformationMode.SmoothTransformation))


class PeoplePage(Page):
    page_name = "People"
    page_tip = "Review the face groups before pushing them to Immich"

    def __init__(self, context, parent: QWidget | None = None) -> None:
        super().__init__(
            "People",
            "Faces found while indexing, grouped by person, largest first. Open a group to fix it; select groups "
            "to merge them. Every change can be undone (Ctrl+Z), even after a restart.",
            parent,
        )
        self.context = context
        self.loader = ThumbnailLoader(size=112, parent=self)
        self.people = None  # library.people.People, made in the background
        self.groups: list = []
        self.suggestions: list = []
        self.pairs: list = []
        self.dims: dict[int, tuple[int, int]] = {}
        self.current_group: int | None = None
        self.busy = False

        bar = QHBoxLayout()
        self.filter = QComboBox()
        for text, value in FILTERS:
            self.filter.addItem(text, value)
        self.filter.setToolTip("Which groups to show")
        self.filter.currentIndexChanged.connect(lambda _i: self.refresh())
        self.group_button = QPushButton("&Group faces")
        self.group_button.setToolTip("Group the faces again; your decisions (names, moves, merges, rejections) are kept")
        self.group_button.clicked.connect(self.regroup)
        self.undo_button = QPushButton("Undo")
        self.undo_button.clicked.connect(self.undo)
        self.redo_button = QPushButton("Redo")
        self.redo_button.clicked.connect(self.redo)
        bar.addWidget(self.filter)
        bar.addWidget(self.group_button)
        bar.addStretch(1)
        bar.addWidget(self.undo_button)
        bar.addWidget(self.redo_button)
        self.body.addLayout(bar)

        self.stack = QStackedWidget()
        self.body.addWidget(self.stack, 1)

        # groups view: grid + suggestions
        self.empty = empty_state(
            "No faces yet.\n\nIndex a folder of photos on the Library page (with a face model chosen in Settings), "
            "then press Group faces."
        )
        groups_view = QSplitter()
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        self.group_grid = PhotoGrid(self.loader, text_lines=2)
        self.group_grid.setToolTip("Enter or double-click opens a group; select several and press Merge (Ctrl+M)")
        self.group_grid.activated.connect(lambda index: self.open_group(self.group_grid.grid_model.tiles[index.row()].payload.id))
        left_layout.addWidget(self.group_grid, 1)
        group_buttons = QHBoxLayout()
        self.merge_button = QPushButton("&Merge selected")
        self.merge_button.setToolTip("Merge the selected groups into the largest of them (Ctrl+M)")
        self.merge_button.clicked.connect(self.merge_selected)
        self.hide_groups_button = QPushButton("Hide / show selected")
        self.hide_groups_button.setToolTip("Hidden groups are not pushed as visible people (H)")
        self.hide_groups_button.clicked.connect(self.toggle_hidden_selected)
        group_buttons.addWidget(self.merge_button)
        group_buttons.addWidget(self.hide_groups_button)
        group_buttons.addStretch(1)
        left_layout.addLayout(group_buttons)
        groups_view.addWidget(left)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(label("Suggestions: pairs that may be one person, then groups that look like the "
                                     "same person. Selecting one selects its groups on the left.", "hint"))
        self.suggestion_list = SuggestionList(self.loader)
        self.suggestion_list.setToolTip("Accept (Enter) keeps a pair or merges two groups; Dismiss remembers they are "
                                        "different people")
        self.suggestion_list.currentItemChanged.connect(lambda item, _old: self._select_suggested(item))
        self.suggestion_list.itemActivated.connect(lambda _item: self.accept_suggestion())
        right_layout.addWidget(self.suggestion_list, 1)
        s_buttons = QHBoxLayout()
        self.accept_button = QPushButton("&Accept")
        self.accept_button.clicked.connect(self.accept_suggestion)
        self.dismiss_button = QPushButton("&Dismiss")
        self.dismiss_button.clicked.connect(self.dismiss_suggestion)
        s_buttons.addWidget(self.accept_button)
        s_buttons.addWidget(self.dismiss_button)
        right_layout.addLayout(s_buttons)
        groups_view.addWidget(right)
        groups_view.setStretchFactor(0, 3)
        groups_view.setStretchFactor(1, 1)
        self.groups_view = groups_view

        # detail view: one group's faces + the photo of the clicked face
        detail = QWidget()
        d = QVBoxLayout(detail)
        d.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        self.back_button = QPushButton("← All people")
        self.back_button.setToolTip("Back to all groups (Esc)")
        self.back_button.clicked.connect(self.show_groups)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("Name this person and press Enter (F2)")
        self.name_edit.returnPressed.connect(self.rename_current)
        self.hide_button = QPushButton("Hide")
        self.hide_button.setToolTip("Hide or show this group (H)")
        self.hide_button.clicked.connect(self.toggle_hidden_current)
        self.confirm_button = QPushButton("&Confirm group")
        self.confirm_button.setToolTip("These faces are one person: keep the group exactly as it is through every "
                                       "later Group faces (C)")
        self.confirm_button.clicked.connect(self.confirm_current)
        head.addWidget(self.back_button)
        head.addWidget(self.name_edit, 1)
        head.addWidget(self.confirm_button)
        head.addWidget(self.hide_button)
        d.addLayout(head)
        split = QSplitter()
        self.face_grid = PhotoGrid(self.loader)
        self.face_grid.setToolTip("Select faces (Ctrl/Shift+click), then move or reject them")
        self.face_grid.clicked.connect(self._show_face_photo)
        split.addWidget(self.face_grid)
        self.photo = PhotoWithBox()
        split.addWidget(self.photo)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        d.addWidget(split, 1)
        actions = QHBoxLayout()
        self.move_target = QComboBox()
        self.move_target.setToolTip("The group the selected faces move to")
        self.move_button = QPushButton("Mo&ve to")
        self.move_button.clicked.connect(self.move_selected)
        self.new_group_button = QPushButton("&New group")
        self.new_group_button.setToolTip("Move the selected faces into a new group of their own (N)")
        self.new_group_button.clicked.connect(lambda: self.move_selected(new=True))
        self.reject_button = QPushButton("&Reject: not this person")
        self.reject_button.setToolTip("The selected faces leave this group and never join it again (Delete)")
        self.reject_button.clicked.connect(self.reject_selected)
        self.not_face_button = QPushButton("Not a face")
        self.not_face_button.setToolTip("The selected detections are left out of every group")
        self.not_face_button.clicked.connect(lambda: self.reject_selected(not_a_face=True))
        for w in (self.move_target, self.move_button, self.new_group_button, self.reject_button, self.not_face_button):
            actions.addWidget(w)
        actions.addStretch(1)
        d.addLayout(actions)
        self.detail_view = detail

        for page in (self.empty, self.groups_view, self.detail_view):
            self.stack.addWidget(page)

        for keys, slot in (
            (QKeySequence.StandardKey.Undo, self.undo),
            (QKeySequence.StandardKey.Redo, self.redo),
            ("Ctrl+Y", self.redo),
            ("Ctrl+M", self.merge_selected),
            ("F2", self._focus_name),
            ("H", self._hide_shortcut),
            ("Delete", self.reject_selected),
            ("N", self._new_group_shortcut),
            ("C", self._confirm_shortcut),
            ("Escape", self.show_groups),
        ):
            shortcut = QShortcut(QKeySequence(keys), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(slot)
        context.library_changed.connect(self.refresh)
        self._update_undo(None, None)

    # reading -----------------------------------------------------------------------------------------
    def _people(self):
        from immich_ml_desktop.library.people import People

        store = self.context.library()
        if self.people is None or self.people.store is not store or self.people.model != self.context.settings.face_model:
            self.people = People(store, self.context.settings.face_model)
        return self.people

    def page_shown(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        which = self.filter.currentData()
        group_id = self.current_group

        def read():
            people = self._people()
            groups = people.groups(which)
            detail = people.group(group_id) if group_id is not None else None
            suggestions = people.suggestions() if which != "hidden" else []
            pairs = people.pair_suggestions() if which != "hidden" else []
            visible = {g.id: g for g in (groups if which == "all" else people.groups("all"))}
            visible.update((g.id, g) for g in groups)
            cover_ids = [g.cover_face_id for g in visible.values() if g.cover_face_id]
            cover_ids += [f for p in pairs for f in p.faces]
            faces = people.store.faces(model=people.model, ids=cover_ids) if cover_ids else []
            covers = {f.id: f for f in faces}
            assets = {f.asset_id for f in faces} | ({f.asset_id for f in detail.faces} if detail else set())
            return (groups, visible, detail, (suggestions, pairs), covers, self._asset_info(people.store, assets),
                    people.can_undo(), people.can_redo())

        run_task(read, on_done=self._show, on_error=self._failed)

    @staticmethod
    def _asset_info(store, asset_ids) -> dict[int, tuple[str | None, tuple[int, int] | None]]:
        info = {}
        for asset_id in asset_ids:
            asset = store.asset(asset_id)
            if asset is not None:
                space = (asset.width, asset.height) if asset.width else None
                info[asset_id] = (str(asset.path) if asset.path else None, space)
        return info

    def _failed(self, error: BaseException) -> None:
        self.busy = False
        self.message.show_error(error)
        if self.current_group is not None and "no longer exists" in str(error):
            self.show_groups()

    def _cover(self, group, covers, info):
        """(cache key, path, box, space) of a group's cover face."""
        face = covers.get(group.cover_face_id)
        path, space = info.get(face.asset_id, (None, None)) if face else (None, None)
        return f"f{group.cover_face_id}", path, face.box if face else None, space

    def _show(self, result) -> None:
        groups, visible, detail, (suggestions, pairs), covers, info, undo, redo = result
        self.busy = False
        self.groups, self.suggestions, self.pairs = groups, suggestions, pairs
        tiles = []
        for g in groups:
            key, path, box, space = self._cover(g, covers, info)
            state = " (hidden)" if g.hidden else (" (confirmed)" if g.confirmed else "")
            if g.suggested:
                state = " (a suggested pair: Confirm (C) takes it; rejecting a face (Delete) breaks it)"
            tiles.append(Tile(
                key=key, path=path, crop=box,
                title=f"{group_label(g)}\n{g.face_count} faces" + (", suggested" if g.suggested else ""),
                space=space, payload=g, dimmed=g.hidden,
                tooltip=f"{group_label(g)}: {g.face_count} faces{state}",
            ))
        self.group_grid.grid_model.set_tiles(tiles)
        face_covers = {}
        for fid in {f for p in pairs for f in p.faces}:
            face = covers.get(fid)
            path, space = info.get(face.asset_id, (None, None)) if face else (None, None)
            face_covers[fid] = (f"f{fid}", path, face.box if face else None, space)
        self.suggestion_list.show_suggestions(
            suggestions, visible, {g.id: self._cover(g, covers, info) for g in visible.values()}, pairs, face_covers)
        self.move_target.clear()
        for g in groups:
            if detail is None or g.id != detail.group.id:
                self.move_target.addItem(group_title(g), g.id)
        if detail is not None:
            self._show_detail(detail, info)
        elif not groups and self.filter.currentData() == "all":
            self.stack.setCurrentWidget(self.empty)
        else:
            self.stack.setCurrentWidget(self.groups_view)
        self._update_undo(undo, redo)

    def _show_detail(self, detail, info) -> None:
        g = detail.group
        if not self.name_edit.hasFocus():
            self.name_edit.setText(g.name or "")
        self.name_edit.setPlaceholderText(f"{group_label(g)}: name this person and press Enter (F2)")
        self.hide_button.setText("Show" if g.hidden else "Hide")
        self.confirm_button.setEnabled(not g.confirmed)
        self.confirm_button.setText("Confirmed" if g.confirmed else "&Confirm group")
        tiles = []
        for f in detail.faces:
            path, space = info.get(f.asset_id, (None, None))
            tiles.append(Tile(key=f"f{f.face_id}", path=path, title="", crop=f.box, space=space, payload=f,
                              tooltip=f"{f.asset_key}\nscore {f.score:.2f}{' · placed by you' if f.pinned else ''}"))
        self.face_grid.grid_model.set_tiles(tiles)
        self.stack.setCurrentWidget(self.detail_view)

    def _update_undo(self, undo: str | None, redo: str | None) -> None:
        self.undo_button.setEnabled(bool(undo))
        self.undo_button.setToolTip(f"Undo: {undo} (Ctrl+Z)" if undo else "Nothing to undo")
        self.redo_button.setEnabled(bool(redo))
        self.redo_button.setToolTip(f"Redo: {redo} (Ctrl+Shift+Z)" if redo else "Nothing to redo")

    # navigation --------------------------------------------------------------------------------------
    def open_group(self, group_id: int) -> None:
        self.current_group = group_id
        self.photo.setText("Click a face to see its whole photo.")
        self.refresh()

    def show_groups(self) -> None:
        self.current_group = None
        self.refresh()

    def _focus_name(self) -> None:
        if self.current_group is not None:
            self.name_edit.setFocus()
            self.name_edit.selectAll()

    def _show_face_photo(self, index) -> None:
        tile = self.face_grid.grid_model.tiles[index.row()]
        if not tile.path:
            self.photo.setText("This face's photo is on the Immich server; no local file to show.")
            return
        run_task(load_image, tile.path, 1024,
                 on_done=lambda image: self.photo.show_photo(image, tile.crop, tile.space),
                 on_error=lambda e: self.photo.setText(f"Cannot show the photo: {e}"))

    # review actions (each runs in the background, then the page re-reads the store) ------------------
    def _act(self, action, note: str | None = None) -> None:
        if self.busy:
            return
        self.busy = True
        self.message.clear_message()

        def done(result) -> None:
            self.busy = False
            if note:
                self.context.status.emit(note)
            self.refresh()

        run_task(lambda: action(self._people()), on_done=done, on_error=self._failed)

    def selected_groups(self) -> list:
        return self.group_grid.selected_payloads()

    def selected_faces(self) -> list[int]:
        return [f.face_id for f in self.face_grid.selected_payloads()]

    def merge_selected(self) -> None:
        groups = sorted(self.selected_groups(), key=lambda g: -g.face_count)
        if len(groups) < 2:
            self.message.show_error("Select two or more groups to merge (Ctrl+click).")
            return
        self._act(lambda p: p.merge_groups(groups[0].id, [g.id for g in groups[1:]]), f"Merged {len(groups)} groups")

    def toggle_hidden_selected(self) -> None:
        groups = self.selected_groups()
        if not groups:
            self.message.show_error("Select the groups to hide or show.")
            return

        def toggle(p) -> None:
            for g in groups:
                p.set_hidden(g.id, not g.hidden)

        self._act(toggle)

    def toggle_hidden_current(self) -> None:
        group = next((g for g in self.groups if g.id == self.current_group), None)
        hidden = self.hide_button.text() == "Hide" if group is None else not group.hidden
        group_id = self.current_group
        self._act(lambda p: p.set_hidden(group_id, hidden))

    def _hide_shortcut(self) -> None:
        if self.current_group is not None:
            self.toggle_hidden_current()
        else:
            self.toggle_hidden_selected()

    def rename_current(self) -> None:
        if self.current_group is None:
            return
        name, group_id = self.name_edit.text(), self.current_group
        self._act(lambda p: p.rename(group_id, name), f"Renamed to {name}" if name.strip() else "Name removed")

    def rename_group(self, group_id: int, name: str) -> None:
        self._act(lambda p: p.rename(group_id, name))

    def move_selected(self, new: bool = False) -> None:
        faces = self.selected_faces()
        if not faces:
            self.message.show_error("Select the faces to move first.")
            return
        target = None if new else self.move_target.currentData()
        if not new and target is None:
            self.message.show_error("There is no other group to move them to; use New group.")
            return
        self._act(lambda p: p.move_faces(faces, target), f"Moved {len(faces)} face(s)")

    def confirm_current(self) -> None:
        if self.current_group is None:
            return
        group_id = self.current_group
        self._act(lambda p: p.confirm(group_id), "Group confirmed: Group faces keeps it as it is")

    def _confirm_shortcut(self) -> None:
        if self.current_group is not None and self.confirm_button.isEnabled():
            self.confirm_current()

    def _select_suggested(self, item) -> None:
        """Select both groups of the chosen suggestion in the grid, and show the first of them."""
        s = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        if s is None:
            return
        chosen = (s.group,) if _is_pair(s) else (s.group_a, s.group_b)
        grid = self.group_grid
        selection = QItemSelection()
        first = None
        for row, tile in enumerate(grid.grid_model.tiles):
            if tile.payload.id in chosen:
                index = grid.grid_model.index(row)
                selection.select(index, index)
                first = first or index
        grid.selectionModel().select(selection, QItemSelectionModel.SelectionFlag.ClearAndSelect)
        if first is not None:
            grid.scrollTo(first)

    def _new_group_shortcut(self) -> None:
        if self.current_group is not None:
            self.move_selected(new=True)

    def reject_selected(self, not_a_face: bool = False) -> None:
        if self.current_group is None:
            return
        faces = self.selected_faces()
        if not faces:
            self.message.show_error("Select the faces to reject first.")
            return
        self._act(lambda p: p.reject_faces(faces, not_a_face=not_a_face), f"Rejected {len(faces)} face(s)")

    def _chosen_suggestion(self):
        item = self.suggestion_list.currentItem() or self.suggestion_list.item(0)
        return item.data(Qt.ItemDataRole.UserRole) if item is not None else None

    def accept_suggestion(self) -> None:
        s = self._chosen_suggestion()
        if _is_pair(s):
            self._act(lambda p: p.accept_pair(s.group), "Pair accepted: one person")
        elif s is not None:
            self._act(lambda p: p.accept_suggestion(s.group_a, s.group_b), "Suggestion accepted: groups merged")

    def dismiss_suggestion(self) -> None:
        s = self._chosen_suggestion()
        if _is_pair(s):
            self._act(lambda p: p.dismiss_pair(s.group), "Pair dismissed: its less certain face left it")
        elif s is not None:
            self._act(lambda p: p.dismiss_suggestion(s.group_a, s.group_b), "Suggestion dismissed")

    def regroup(self) -> None:
        self._act(lambda p: p.recluster(), "Faces grouped")

    def undo(self) -> None:
        self._act(lambda p: p.undo(), "Undone")

    def redo(self) -> None:
        self._act(lambda p: p.redo(), "Redone")

    def shutdown(self) -> None:
        self.loader.clear()

