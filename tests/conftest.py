"""Shared fixtures: where ../shared is, the real model packs and photos, an isolated app config."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("IMMICH_ML_SHARED", ROOT.parent / "shared"))
MODELS = SHARED / "models"
PHOTOS = SHARED / "photos"
CLIP_PACK = "tiny-random-clip"
FACE_PACK = "test-scrfd25g-r512"
FACE_PACK_128 = "test-scrfd25g-mbf128"
FACES_PHOTO = "insightface/t1.jpg"  # 6 faces

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@dataclass
class FaceRow:
    """A face as the library stores one (store.FaceLike), for tests that write faces without a model."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray
    embedding: np.ndarray


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"test data {path} is absent (set IMMICH_ML_SHARED to the shared/ folder to run this test)")
    return path


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return _need(MODELS / "clip" / CLIP_PACK).parent.parent


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    return _need(PHOTOS)


def photo(rel: str) -> Path:
    return _need(PHOTOS / rel)


@pytest.fixture(autouse=True)
def isolated_app_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings and the app's own cache never touch the developer's real folders."""
    base = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("IMMICH_ML_DESKTOP_CONFIG_DIR", str(base / "config"))
    monkeypatch.setenv("IMMICH_ML_DESKTOP_CACHE_DIR", str(base / "app-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine-work")


@pytest.fixture(scope="session")
def cpu_engine(models_dir: Path, work_dir: Path):
    from immich_ml_desktop.models.engine import Engine

    with Engine(models_dir, "cpu", work_dir=work_dir) as engine:
        yield engine


@pytest.fixture(scope="session")
def openvino_engine(models_dir: Path, work_dir: Path):
    from immich_ml_desktop.models.engine import Engine
    from immich_ml_desktop.models.runtime import openvino_available

    if not openvino_available():
        pytest.skip("OpenVINO is not installed on this machine")
    with Engine(models_dir, "openvino:CPU", work_dir=work_dir) as engine:
        yield engine


# A real MlServer on 127.0.0.1 (one per test module, on the CPU engine), a client to it, a photo with faces.
@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return photo(FACES_PHOTO).read_bytes()


@pytest.fixture(scope="module")
def server(cpu_engine):
    from immich_ml_desktop.server.ml_server import MlServer

    with MlServer(cpu_engine, "127.0.0.1", 0) as srv:
        yield srv


@pytest.fixture()
def client(server):
    import httpx

    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c
