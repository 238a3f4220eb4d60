"""The model store: gets Immich's model packs from Hugging Face (or a mirror), keeps them healthy, and
imports packs the user already has.

A pack is `<cache>/<task>/<name>/` in Immich's layout. Files are downloaded into
`<cache>/.incomplete/<task>/<name>/` (resumable `.part` files checked against the hub's size and
sha256) and moved into place only when verified; a manifest written last records what was fetched, so
a pack is never taken for whole while half-written. When a pack is complete, nothing touches the
network. Packs the store did not write (another Immich cache, a read-only folder) are never modified.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import httpx

from immich_ml_desktop.errors import DownloadError, InvalidInputError, ModelDamagedError, ModelNotFoundError
from immich_ml_desktop.models import catalog
from immich_ml_desktop.models.base import ModelTask, clean_name
from immich_ml_desktop.models.catalog import MODEL_FOLDERS, REQUIRED_FILES, CatalogEntry

log = logging.getLogger(__name__)

MANIFEST = ".immich-ml-desktop.json"
INCOMPLETE = ".incomplete"
DEFAULT_ENDPOINT = "https://huggingface.co"
# Hub repos also hold exports for other accelerators (ARM NN, RKNN) that this app never runs.
_SKIPPED_SUFFIXES = (".armnn", ".rknn", ".md")
_CHUNK = 1 << 16
_HASH_BLOCK = 1 << 20


# manifest ------------------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def _file_record(path: Path, sha256: str | None = None) -> dict[str, Any]:
    st = path.stat()
    return {"size": st.st_size, "sha256": sha256 or file_sha256(path), "mtime_ns": st.st_mtime_ns}


def read_manifest(pack_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((pack_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def write_manifest(pack_dir: Path, source: str, files: dict[str, dict[str, Any]] | None = None, **extra: Any) -> None:
    """Record every file of a pack the app wrote (size, sha256, mtime); written atomically, last."""
    if files is None:
        files = {
            p.relative_to(pack_dir).as_posix(): _file_record(p)
            for p in sorted(pack_dir.rglob("*"))
            if p.is_file() and p.name != MANIFEST
        }
    data = {"source": source, "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra, "files": files}
    fd, tmp = tempfile.mkstemp(dir=pack_dir, prefix=".manifest-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, pack_dir / MANIFEST)
