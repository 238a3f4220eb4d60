"""Faces that are the same face of the same picture: a photo and its edited copies (darkened, re-saved,
blurred, greyed, slightly cropped), told by the photos' fingerprints (services/face_quality.py,
`photo_fingerprint`) and the faces' places in them. A copy's face may have a vector too poor to place
(a very dark or blurred copy), but it is the same person as the face in the original: the grouping lets
it follow that face (library/clustering.py)."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

# Photos whose fingerprints differ in at most this many of their 63 bits are copies of one picture
# (copies: at most 14 bits apart, different photos at least 20, on ../shared/photos).
COPY_BITS = 12
# Two faces of copies are one face when their boxes, as shares of their photos' sides, overlap this much.
SAME_PLACE_IOU = 0.5


def bits_apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many bits fingerprints (int64) differ in, elementwise with broadcasting."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)).view(np.uint64)
    return np.unpackbits(np.ascontiguousarray(x)[..., None].view(np.uint8), axis=-1).sum(axis=-1)


def copy_components(photos: np.ndarray, fingerprints: np.ndarray, boxes: np.ndarray,
                    known: np.ndarray | None = None) -> np.ndarray:
    """One component id per face: faces with the same id are one face in copies of one picture.

    photos: (n,) the photo of each face; fingerprints: (n,) int64, its photo's fingerprint; known: (n,)
    False where the photo has none (indexed before fingerprints existed: such faces are copies of nothing);
    boxes: (n, 4) x1, y1, x2, y2 as shares (0..1) of the photo's width and height. Faces of one photo are
    never linked. Cost: photos x photos bit counts, in blocks of 1,024 photos."""
    n = len(photos)
    photos = np.asarray(photos)
    ids, first, photo_of = np.unique(photos, return_index=True, return_inverse=True)
    prints = np.asarray(fingerprints, dtype=np.int64)[first]
    has = np.ones(len(ids), dtype=bool) if known is None else np.asarray(known, dtype=bool)[first]
    rows, cols = [], []
    for start in range(0, len(ids), 1024):
        near = bits_apart(prints[start : start + 1024, None], prints[None, :]) <= COPY_BITS
        near &= has[start : start + 1024, None] & has[None, :]
        a, b = np.nonzero(near)
        keep = a + start < b
        rows.append(a[keep] + start)
        cols.append(b[keep])
    pa, pb = (np.concatenate(x) if x else np.zeros(0, dtype=np.int64) for x in (rows, cols))
    faces_of: dict[int, list[int]] = {}
    for face, p in enumerate(photo_of.tolist()):
        faces_of.setdefault(p, []).append(face)
    links_a, links_b = [], []
    for p, q in zip(pa.tolist(), pb.tolist()):
        for i in faces_of[p]:
            for j in faces_of[q]:
                if _iou(boxes[i], boxes[j]) >= SAME_PLACE_IOU:
                    links_a.append(i)
                    links_b.append(j)
    graph = coo_matrix((np.ones(len(links_a), dtype=np.int8), (links_a, links_b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
