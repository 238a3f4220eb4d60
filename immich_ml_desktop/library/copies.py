"""Faces that are the same face of the same picture: a photo and its edited copies (darkened, re-saved,
blurred, greyed, covered in part; not turned, mirrored or cropped ones), told by the photos' fingerprints (services/face_quality.py,
`photo_fingerprint`) and the faces' places in them. A copy's face may have a vector too poor to place
(a very dark or blurred copy), but it is the same person as the face in the original: the grouping lets
it follow that face (library/clustering.py)."""

from __future__ import annotations

from typing import TypeGuard

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

# Photos are copies of one picture when their fingerprints differ in at most FIRST_BITS of their first 64
# bits (the 8x8 lowest frequencies; copies: at most 15, different photos: at least 20) and ALL_BITS of all
# 256 (copies other than cropped ones: at most 50, different photos: at least 104; on ../shared/photos).
# Two random fingerprints pass both about once in 10^16 pairs (1.3e-16, counted from the binomials).
FIRST_BITS = 14
ALL_BITS = 64
# Two faces of copies are one face when their boxes, as shares of their photos' sides, overlap this much.
SAME_PLACE_IOU = 0.5
WORDS = 4  # a fingerprint's 256 bits as 64-bit words


def is_fingerprint(value: object) -> TypeGuard[bytes | bytearray | memoryview]:
    """Whether a stored value is a fingerprint (32 bytes); anything else (NULL: a photo indexed before
    fingerprints existed, or a damaged value) makes its photo a copy of nothing."""
    return isinstance(value, (bytes, bytearray, memoryview)) and len(value) == 8 * WORDS


def words(fingerprint: object) -> np.ndarray:
    """A stored fingerprint as 4 int64 words, the first holding its first 64 bits (zeros when it is none)."""
    if not is_fingerprint(fingerprint):
        return np.zeros(WORDS, dtype=np.int64)
    return np.frombuffer(bytes(fingerprint), dtype=">i8").astype(np.int64)


def bits_apart(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many bits int64 words differ in, elementwise with broadcasting."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    return _popcount(np.ascontiguousarray(x).view(np.uint64)).astype(np.int64)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return np.unpackbits(np.ascontiguousarray(x)[..., None].view(np.uint8), axis=-1).sum(axis=-1)


def copy_components(photos: np.ndarray, fingerprints: np.ndarray, boxes: np.ndarray,
                    known: np.ndarray | None = None) -> np.ndarray:
    """One component id per face: faces with the same id are one face in copies of one picture.

    photos: (n,) the photo of each face; fingerprints: (n, 4) int64, its photo's fingerprint (`words`);
    known: (n,) False where the photo has none (indexed before fingerprints existed: such faces are copies
    of nothing); boxes: (n, 4) x1, y1, x2, y2 as shares (0..1) of the photo's width and height. Faces of
    one photo are never linked. Cost: a bit count of one word for every two photos (in blocks of 512
    photos), then all words for the few pairs that pass."""
    n = len(photos)
    photos = np.asarray(photos)
    ids, first, photo_of = np.unique(photos, return_index=True, return_inverse=True)
    prints = np.asarray(fingerprints, dtype=np.int64).reshape(n, WORDS)[first]
    has = np.ones(len(ids), dtype=bool) if known is None else np.asarray(known, dtype=bool)[first]
    first_word = np.ascontiguousarray(prints[:, 0]).view(np.uint64)
    rows, cols = [], []
    for start in range(0, len(ids), 512):
        # Each block against the photos after its first only: every pair once.
        block = first_word[start : start + 512, None]
        near = _popcount(np.bitwise_xor(block, first_word[None, start:])) <= FIRST_BITS
        a, b = np.nonzero(near)
        a, b = a + start, b + start
        keep = (a < b) & has[a] & has[b]
        a, b = a[keep], b[keep]
        close = bits_apart(prints[a], prints[b]).sum(axis=1) <= ALL_BITS
        rows.append(a[close])
        cols.append(b[close])
    pa, pb = (np.concatenate(x) if x else np.zeros(0, dtype=np.int64) for x in (rows, cols))
    faces_of: dict[int, list[int]] = {}
    for face, p in enumerate(photo_of.tolist()):
        faces_of.setdefault(p, []).append(face)
    links_a, links_b = [], []
    for p, q in zip(pa.tolist(), pb.tolist()):
        for i in faces_of[p]:
            for j in faces_of[q]:
                if box_iou(boxes[i], boxes[j]) >= SAME_PLACE_IOU:
                    links_a.append(i)
                    links_b.append(j)
    graph = coo_matrix((np.ones(len(links_a), dtype=np.int8), (links_a, links_b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def box_iou(a, b) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
