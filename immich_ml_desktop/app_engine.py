"""The Engine the app runs: built from the user's settings, fetching missing models through the model
store. The CLI, the window and the services build theirs here; the inference layer knows neither."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from immich_ml_desktop.model_store.fetcher import ModelFetcher
from immich_ml_desktop.models.engine import Engine
from immich_ml_desktop.settings import Settings


def build_engine(settings: Settings, **overrides: Any) -> Engine:
    kwargs: dict[str, Any] = dict(
        cache_dirs=[Path(settings.model_cache_dir), *map(Path, settings.extra_model_dirs)],
        device=settings.device,
        precision=settings.precision,
        threads=settings.threads,
        model_ttl=settings.model_ttl,
        allow_downloads=settings.allow_downloads,
        downloader=ModelFetcher(settings.model_cache_dir),
    )
    kwargs.update(overrides)
    return Engine(**kwargs)
