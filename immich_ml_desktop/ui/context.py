"""What every page of the window shares: the settings, the one Engine and the library store.

The Engine is built lazily by the first background task that needs it (discovering devices takes
about a second) and rebuilt only when a setting it depends on changes.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import threading
from typing import Any

from PySide6.QtCore import QObject, QThreadPool, Signal

from immich_ml_desktop.library.store import LibraryStore
from immich_ml_desktop.app_engine import build_engine
from immich_ml_desktop.models.engine import Engine
from immich_ml_desktop.models.runtime import default_parallel
from immich_ml_desktop.settings import Settings
from immich_ml_desktop.ui.workers import run_task

log = logging.getLogger(__name__)

# Imported in the background at start-up: importing them holds the GIL for up to half a second in total
# (C extensions initialising), which would stall the GUI if it happened during the first indexing run.
WARM_UP_MODULES = ("onnx", "insightface.model_zoo", "insightface.utils.face_align")

# Settings the Engine is built from: changing one of these means a new Engine.
ENGINE_FIELDS = ("device", "precision", "threads", "model_cache_dir", "extra_model_dirs", "allow_downloads", "model_ttl")


class AppContext(QObject):
    settings_changed = Signal(object)  # Settings
    engine_changed = Signal(object)  # Engine
    library_changed = Signal()  # the store's content changed (indexing, review); views re-read it
    status = Signal(str)  # a short message for the status bar
    warmed_up = Signal()
    job_finished = Signal(str, str, bool)  # kind (index, push, download, server, immich-jobs), what happened, failed

    def __init__(self, settings: Settings, engine: Engine | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.pool = QThreadPool.globalInstance()
        self.pool.setMaxThreadCount(max(4, self.pool.maxThreadCount()))
        self._engine = engine
        self._engine_lock = threading.Lock()
        self._store: LibraryStore | None = None
        self._store_lock = threading.Lock()
        self._answers: Any = False  # not opened yet
        self.is_warm = False
        self.immich_key: str | None = None  # this session's key when the OS has no keyring
        self.download_progress: Any = None  # set by the Settings page: shows model downloads

    # engine ---------------------------------------------------------------------------------------
    def engine(self) -> Engine:
        """The shared Engine, built on first use. Call from a background task, never the GUI thread."""
        with self._engine_lock:
            if self._engine is None:
                self._engine = build_engine(
                    self.settings, parallel=default_parallel(), download_progress=self._on_download
                )
                self.engine_changed.emit(self._engine)
            return self._engine

    def warm_up(self) -> None:
        """Build the Engine and do the slow first imports now (background), not during the first job."""
        self.engine()
        for name in WARM_UP_MODULES:
            try:
                importlib.import_module(name)
            except ImportError as e:  # an optional runtime part; the job that needs it reports it
                log.info("Not pre-importing %s: %s", name, e)
        try:  # the keyring's first use loads its backends (seconds on a busy machine): not in a dialog
            import keyring

            keyring.get_keyring()
        except Exception as e:  # noqa: BLE001 - no keyring: the Connect dialog says so
            log.info("No keyring: %s", e)
        self.is_warm = True
        try:
            self.warmed_up.emit()
        except RuntimeError:  # the window closed while this ran
            pass

    @property
    def engine_if_ready(self) -> Engine | None:
        return self._engine

    def _on_download(self, *args: Any, **kwargs: Any) -> None:
        if self.download_progress is not None:
            self.download_progress(*args, **kwargs)

    # library --------------------------------------------------------------------------------------
    def library(self) -> LibraryStore:
        """The library store of the current settings, opened on first use (any thread)."""
        with self._store_lock:
            if self._store is None or str(self._store.path) != self.settings.library_path:
                if self._store is not None:
                    self._store.close()
                self._store = LibraryStore(self.settings.library_path)
            return self._store

    def answers(self):  # -> AnswerCache | None
        """The answer cache Immich's requests are answered from (any thread); None when switched off."""
        from immich_ml_desktop.server.answer_cache import open_answer_cache

        with self._store_lock:
            if self._answers is False or getattr(self._answers, "max_bytes", None) != self.settings.answer_cache_mb * 2**20:
                if self._answers:
                    self._answers.close()
                self._answers = open_answer_cache(self.settings.answer_cache_mb)
            return self._answers

    # immich -----------------------------------------------------------------------------------------
    def immich_client(self):
        """A client for the connected Immich server (any thread; the caller closes it)."""
        from immich_ml_desktop.errors import InvalidInputError
        from immich_ml_desktop.immich.client import ImmichClient
        from immich_ml_desktop.immich.credentials import saved_api_key

        url = self.settings.immich_url
        if not url:
            raise InvalidInputError("Connect to your Immich server first (Connect… button).")
        key = self.immich_key or saved_api_key(url)
        if not key:
            raise InvalidInputError("No API key for this Immich server: press Connect… and enter one.")
        client = ImmichClient(url, key)
        try:
            client.check_version()
        except BaseException:
            client.close()
            raise
        return client

    # settings -------------------------------------------------------------------------------------
    def apply_settings(self, new: Settings) -> None:
        """Validate, save, and rebuild the Engine if a setting it depends on changed."""
        new.validate()
        old = self.settings
        self.settings = new
        new.save()
        if any(getattr(old, f) != getattr(new, f) for f in ENGINE_FIELDS):
            with self._engine_lock:
                stale, self._engine = self._engine, None
            if stale is not None:
                run_task(stale.close)  # unloading models can take a moment
        self.settings_changed.emit(new)

    def updated_settings(self, **changes: Any) -> Settings:
        return dataclasses.replace(self.settings, **changes)

    def close(self) -> None:
        with self._store_lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()
        with self._store_lock:
            answers, self._answers = self._answers, False
        if answers:
            answers.close()
        with self._engine_lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
