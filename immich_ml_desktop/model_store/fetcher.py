"""`ModelFetcher`: gets what a model lacks. Packs of Immich's catalogue come from the hub by name
(`ModelStore`); a model that names its own files (`InferenceModel.file_sources`, e.g. OCR from
RapidOCR's host) gets them from there, checked by SHA-256. The engine is given one by the app
(`app_engine.py`), so inference never imports the store.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any
from collections.abc import Callable

import httpx

from immich_ml_desktop.errors import DownloadError
from immich_ml_desktop.model_store import catalog
from immich_ml_desktop.model_store.store import ModelStore
from immich_ml_desktop.models.base import InferenceModel


class ModelFetcher:
    """Downloads into `cache_dir` (the primary model cache)."""

    def __init__(self, cache_dir: Path | str) -> None:
        self.cache_dir = Path(cache_dir)

    def knows(self, model: InferenceModel) -> bool:
        """Whether `fetch` knows where this model's files are."""
        sources = model.file_sources()
        if sources is not None:
            return bool(sources)
        entry = catalog.lookup(model.model_name)  # a pack of Immich's, of this model's task (not a plugin's namesake)
        return entry is not None and entry.task.value == model.model_task.value

    def missing_hint(self, model: InferenceModel) -> str:
        """How a user gets the files of a model that is not in the cache."""
        if self.knows(model):
            return f"Run `immich-ml-desktop models download {model.model_name}`"
        return "It is not a model Immich knows (see `immich-ml-desktop models list`): check the name,"

    def fetch(self, model: InferenceModel, progress: Callable[..., Any] | None = None) -> None:
        sources = model.file_sources()
        if sources is None:
            ModelStore(self.cache_dir).download(model.model_name, progress=progress)
            return
        if model.cached:
            return
        for source in sources:
            fetch_verified(source.url, source.sha256, source.dest, progress)
        model.files_fetched()


def fetch_verified(url: str, sha256: str, dest: Path, progress: Callable[[str, int, int], None] | None = None) -> None:
    """Download `url` to `dest` through a temporary file, keeping it only if its SHA-256 matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest, done = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out, httpx.stream("GET", url, follow_redirects=True, timeout=60) as response:
            if response.status_code != 200:
                raise DownloadError(f"Downloading {url} failed: HTTP {response.status_code}. Check the network and retry.")
            total = int(response.headers.get("content-length") or 0)
            for chunk in response.iter_bytes(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(dest.name, done, total)
        if digest.hexdigest() != sha256:
            raise DownloadError(
                f"Downloaded {url} but its SHA-256 is {digest.hexdigest()}, not {sha256}: the file is damaged "
                f"or was replaced. Retry later."
            )
        tmp.replace(dest)
    except httpx.HTTPError as e:
        raise DownloadError(f"Downloading {url} failed: {e}. Check the network and retry.") from None
    finally:
        tmp.unlink(missing_ok=True)
