"""Smart search over the local library: rank assets by the cosine of their CLIP vector with a phrase's.

The vector matrix is read from the store once and kept until the store's vectors change, so repeated
searches over 100k photos are one matrix-vector product (milliseconds).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from immich_ml_desktop.library.store import Asset, LibraryStore


@dataclass(frozen=True)
class SearchHit:
    asset: Asset
    score: float  # cosine similarity, higher is better


def rank(query: np.ndarray, vectors: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the `limit` best cosines with `query`, best first, and those cosines."""
    if vectors.shape[0] == 0 or limit <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    q = np.asarray(query, np.float32)
    q = q / (np.linalg.norm(q) or 1.0)
    scores = vectors @ q
    k = min(limit, scores.shape[0])
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return top, scores[top]


class ClipSearch:
    """Search one library with one CLIP model (the one it was indexed with). Thread-safe."""

    def __init__(self, store: LibraryStore, engine: Any, clip_model: str) -> None:
        self.store = store
        self.engine = engine
        self.clip_model = clip_model
        self._lock = threading.Lock()
        self._revision: tuple[int, int] | None = None
        self._ids = np.zeros(0, np.int64)
        self._vectors = np.zeros((0, 0), np.float32)

    def _matrix(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            revision = self.store.clip_revision(self.clip_model)
            if revision != self._revision:
                ids, vectors = self.store.clip_vectors(self.clip_model)
                if vectors.size:
                    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
                    vectors = vectors / np.where(norms == 0, 1.0, norms)
                self._ids, self._vectors, self._revision = ids, np.ascontiguousarray(vectors, np.float32), revision
            return self._ids, self._vectors

    def search_vector(self, query: np.ndarray, limit: int = 50) -> list[SearchHit]:
        ids, vectors = self._matrix()
        rows, scores = rank(query, vectors, limit)
        hits = []
        for row, score in zip(rows, scores):
            asset = self.store.asset(int(ids[row]))
            if asset is not None:  # deleted since the matrix was read
                hits.append(SearchHit(asset, float(score)))
        return hits

    def search(self, text: str, limit: int = 50, language: str | None = None) -> list[SearchHit]:
        """The `limit` assets that best match `text`, best first."""
        return self.search_vector(self.engine.clip_text(self.clip_model, text, language), limit)
