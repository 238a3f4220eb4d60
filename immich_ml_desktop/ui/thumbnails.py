"""Thumbnails and face crops, decoded in the background and kept in a bounded in-memory cache.

Views ask only for what is visible (Qt calls `data()` for visible rows), the newest request runs
first (scrolling fast does not wait behind rows already scrolled past), and a decoded image comes
back to the GUI thread as a QImage that becomes a QPixmap there.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from pathlib import Path
from collections.abc import Sequence

from PIL import Image, ImageOps
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal
from PySide6.QtGui import QImage, QPixmap

from immich_ml_desktop.ui.workers import lower_thread_priority

try:  # HEIC/HEIF/AVIF thumbnails; the library indexes them too
    import pillow_heif

    pillow_heif.register_heif_opener()
    if hasattr(pillow_heif, "register_avif_opener"):
        pillow_heif.register_avif_opener()
except ImportError:  # pragma: no cover - pillow-heif is a dependency
    pass

log = logging.getLogger(__name__)

Box = Sequence[float]  # x1, y1, x2, y2


def load_image(path: str | Path, size: int, crop: Box | None = None, space: tuple[int, int] | None = None) -> QImage:
    """Decode `path` (EXIF-rotated) no larger than `size`; with `crop`, a square crop around the box.

    `space` is the (width, height) of the image the box was measured on (the library's preview size);
    the box is scaled from there to this decode, so boxes work whatever size the original is.
    """
    with Image.open(path) as opened:
        target = size * 4 if crop is not None else size  # a face is a small part: decode larger
        opened.draft("RGB", (target, target))  # JPEG: decode at 1/2..1/8 scale, much faster
        im = ImageOps.exif_transpose(opened).convert("RGB")
    if crop is not None:
        scale = im.width / space[0] if space and space[0] else 1.0
        x1, y1, x2, y2 = (float(v) * scale for v in crop)
        side = min(max(x2 - x1, y2 - y1) * 1.3, im.width, im.height)  # margin: hair and chin help
        # A square around the face, shifted inside the photo (no black bars at its edges).
        left = min(max((x1 + x2 - side) / 2, 0), im.width - side)
        top = min(max((y1 + y2 - side) / 2, 0), im.height - side)
        im = im.crop((int(left), int(top), int(left + side), int(top + side)))
    im.thumbnail((size, size), Image.Resampling.BILINEAR)
    data = im.tobytes()
    return QImage(data, im.width, im.height, 3 * im.width, QImage.Format.Format_RGB888).copy()


class _Signals(QObject):
    loaded = Signal(str, object)  # key, QImage or None


class _Load(QRunnable):
    def __init__(self, signals: _Signals, key: str, path: str, size: int, crop: Box | None, space) -> None:
        super().__init__()
        self.signals, self.key, self.path, self.size, self.crop, self.space = signals, key, path, size, crop, space

    def run(self) -> None:
        lower_thread_priority()
        try:
            image = load_image(self.path, self.size, self.crop, self.space)
        except Exception as e:  # noqa: BLE001 - a broken file shows a blank tile, never an error box
            log.debug("No thumbnail for %s: %s", self.path, e)
            image = None
        try:
            self.signals.loaded.emit(self.key, image)
        except RuntimeError:  # its page closed while this decoded
            pass


class ThumbnailLoader(QObject):
    """`pixmap(key, path)` answers from the cache or starts a load and emits `ready(key)` later."""

    ready = Signal(str)

    def __init__(self, size: int = 160, capacity: int = 4000, threads: int = 2, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.size = size
        self.capacity = capacity
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(threads)
        self._cache: OrderedDict[str, QPixmap | None] = OrderedDict()
        self._pending: set[str] = set()
        self._priority = itertools.count()
        self._signals = _Signals(self)
        self._signals.loaded.connect(self._on_loaded)

    def pixmap(self, key: str, path: str | None, crop: Box | None = None, space=None) -> QPixmap | None:
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if path and key not in self._pending:
            self._pending.add(key)
            # Newest first: the rows the user is looking at now beat rows scrolled past.
            self.pool.start(_Load(self._signals, key, path, self.size, crop, space), next(self._priority) % 2**30)
        return None

    def clear(self) -> None:
        self.pool.clear()
        self._cache.clear()
        self._pending.clear()

    def wait(self, msecs: int = 5000) -> bool:
        return self.pool.waitForDone(msecs)

    def _on_loaded(self, key: str, image: QImage | None) -> None:
        self._pending.discard(key)
        self._cache[key] = QPixmap.fromImage(image) if image is not None else None
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        self.ready.emit(key)
