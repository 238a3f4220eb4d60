"""Hard face sets built from ../shared/photos, for the grouping bench (cluster_quality.py).

Base photos: the labelled photos (face_identities.csv, the one-person photos of
photoprism_face_identities.csv; a labelled photo where Immich's pass finds several faces is left out,
as the label does not say which face it names) and group photos (Solvay 1927, PASCAL VOC crowds,
...: every face found on the plain photo is a stranger, one identity each). Each base photo is then
derived under every condition below, as a library holds edited copies beside the originals: each derived
image is a photo of its own, its faces keep the identity of the base face they map onto (boxes mapped
by the condition's geometry: a face is matched when a detected box holds the mapped centre and overlaps
the mapped box, IoU >= 0.25), and faces that match no base face are strangers of their own.

Faces are found as the library finds them (services.face_passes: Immich's pass, then padded, bright,
rotated) and measured as the library measures them (services.face_quality), so the grouping sees what
it sees in a library.

Split: identities are cut into a tuning half and a reporting half (by a hash of the identity's name, so
the cut does not depend on the order of the photos); only the tuning half may be used to choose
defaults, the reporting half is what the bench reports.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from immich_ml_desktop.library.copies import box_iou

FACE_PACK = "test-scrfd25g-r512"
GROUP_PHOTOS = [
    "cospectrum_scrfd/images/solvay_conference_1927.png",
    "insightface/t1.jpg",
    "insightface/Tom_Hanks_54745.png",
    "skimage/astronaut.png",
    *[f"dlib/examples/faces/{n}" for n in (
        "2008_001322.jpg", "2008_002079.jpg", "2009_004587.jpg", "bald_guys.jpg", "2008_007676.jpg",
        "2008_002470.jpg", "2007_007763.jpg", "Tom_Cruise_avp_2014_4.jpg", "2008_004176.jpg",
        "2008_002506.jpg", "2008_001009.jpg")],
]
SCENE = "photoprism/assets/examples/beach_sand.jpg"
CACHE_VERSION = 6


def labelled_photos(photos_dir: Path) -> list[tuple[str, str]]:
    with open(photos_dir / "face_identities.csv") as f:
        rows = [(r["path"], r["identity"]) for r in csv.DictReader(f)]
    with open(photos_dir / "photoprism_face_identities.csv") as f:
        photoprism = list(csv.DictReader(f))
    for r in photoprism:
        who = r["persons_per_photoprism_net_test"]
        if who != "no-face" and "+" not in who:  # two-person photos do not say which face is whom
            rows.append((r["path"], f"pp:{who}"))
    return rows


# ------------------------------------------------------------------------------------------ conditions
# A condition: bgr image -> (derived image, 2x3 matrix taking base-photo points to derived-image points).
Derive = Callable[[np.ndarray, np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]
IDENTITY = np.array([[1.0, 0, 0], [0, 1.0, 0]])


def _jpeg(bgr: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).save(buf, "JPEG", quality=quality)
    return cv2.cvtColor(np.asarray(Image.open(buf).convert("RGB")), cv2.COLOR_RGB2BGR)


def _dark(factor: float, sigma: float) -> Derive:
    def derive(bgr, boxes, scene, rng):
        noisy = bgr.astype(np.float32) * factor + rng.normal(0, sigma, bgr.shape)
        return np.clip(noisy, 0, 255).astype(np.uint8), IDENTITY
    return derive


def _low_contrast(bgr, boxes, scene, rng):
    mean = bgr.reshape(-1, 3).mean(0)
    return np.clip((bgr - mean) * 0.15 + mean, 0, 255).astype(np.uint8), IDENTITY


def _low_quality(bgr, boxes, scene, rng):
    """Shrunk to half, saved at JPEG quality 15, blown up again: an old phone's or a messenger's copy."""
    h, w = bgr.shape[:2]
    small = cv2.resize(bgr, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
    return cv2.resize(_jpeg(small, 15), (w, h), interpolation=cv2.INTER_LINEAR), IDENTITY


def _blur(bgr, boxes, scene, rng):
    """Out of focus: a Gaussian blur whose sigma is a tenth of the median face's width."""
    width = float(np.median(boxes[:, 2] - boxes[:, 0]))
    return cv2.GaussianBlur(bgr, (0, 0), max(1.0, width / 10)), IDENTITY


def _occluded(bgr, boxes, scene, rng):
    """The lower half of every face covered (a mask, a scarf, a hand)."""
    out = bgr.copy()
    for x1, y1, x2, y2 in boxes.astype(int):
        out[max(0, (y1 + y2) // 2 + (y2 - y1) // 10) : max(0, y2), max(0, x1) : max(0, x2)] = (170, 160, 150)
    return out, IDENTITY


def _turned(bgr: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = bgr.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(w * cos + h * sin + 0.5), int(w * sin + h * cos + 0.5)
    m[:, 2] += (nw / 2 - w / 2, nh / 2 - h / 2)
    return cv2.warpAffine(bgr, m, (nw, nh), flags=cv2.INTER_CUBIC, borderValue=(128, 128, 128)), m


def _rotated(bgr, boxes, scene, rng):
    return _turned(bgr, 35)


def _small(bgr, boxes, scene, rng):
    """The photo shrunk so that its largest face is ~40 px wide, pasted into a 1600 px scene."""
    h, w = bgr.shape[:2]
    scale = min(1.0, 40 / max(1.0, float((boxes[:, 2] - boxes[:, 0]).max())))
    small = cv2.resize(bgr, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    canvas = cv2.resize(scene, (1600, 1067), interpolation=cv2.INTER_AREA)
    sh, sw = min(small.shape[0], 1067 - 400), min(small.shape[1], 1600 - 700)
    canvas[400 : 400 + sh, 700 : 700 + sw] = small[:sh, :sw]
    return canvas, np.array([[scale, 0, 700], [0, scale, 400]])


def _resaved(bgr, boxes, scene, rng):
    """An edited copy: cropped by 4% each side, scaled to 80%, a little brighter and warmer, JPEG 70."""
    h, w = bgr.shape[:2]
    dx, dy = int(w * 0.04), int(h * 0.04)
    crop = bgr[dy : h - dy, dx : w - dx]
    s = 0.8
    out = cv2.resize(crop, (max(1, int(crop.shape[1] * s)), max(1, int(crop.shape[0] * s))), interpolation=cv2.INTER_AREA)
    out = np.clip(out.astype(np.float32) * [0.95, 1.05, 1.15] + 10, 0, 255).astype(np.uint8)
    return _jpeg(out, 70), np.array([[s, 0, -dx * s], [0, s, -dy * s]])


def _mirrored(bgr, boxes, scene, rng):
    w = bgr.shape[1]
    return np.ascontiguousarray(bgr[:, ::-1]), np.array([[-1.0, 0, w], [0, 1.0, 0]])


def _grey(bgr, boxes, scene, rng):
    return cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR), IDENTITY


CONDITIONS: dict[str, Derive] = {
    "dark": _dark(0.25, 4),
    "very dark": _dark(0.06, 2),
    "low contrast": _low_contrast,
    "low quality": _low_quality,
    "blur": _blur,
    "occluded": _occluded,
    "rotated 35": _rotated,
    "small": _small,
    "edited copy": _resaved,
    "mirrored": _mirrored,
    "grey": _grey,
}


# ------------------------------------------------------------------------------------------ the set


@dataclass
class FaceSet:
    """One row per face found. `identity` and `photo` are small ints; `base` is the base face a face was
    matched to (-1: none, a stranger of its own); `condition` the condition's name ('plain' for the base
    photos); `tune` whether the identity is in the tuning half."""

    vectors: np.ndarray
    identity: np.ndarray
    name: np.ndarray  # the identity's name: a labelled person, '<photo>#<k>' or 'extra:...' for strangers
    photo: np.ndarray
    base: np.ndarray
    condition: np.ndarray
    tune: np.ndarray
    found_by: np.ndarray
    score: np.ndarray
    box: np.ndarray
    landmarks: np.ndarray
    brightness: np.ndarray
    contrast: np.ndarray
    sharpness: np.ndarray
    lower_detail: np.ndarray
    photo_print: np.ndarray  # (n, 4) int64: the face's photo's fingerprint (services.face_quality.photo_fingerprint)
    relative_box: np.ndarray  # the box as shares of the photo's width and height
    # per condition: base faces that should be found in it, and how many were
    expected: dict[str, int]
    found: dict[str, int]
    seconds: dict[str, float]

    def take(self, mask: np.ndarray) -> FaceSet:
        arrays = {k: v[mask] for k, v in vars(self).items() if isinstance(v, np.ndarray)}
        return FaceSet(**arrays, expected=self.expected, found=self.found, seconds=self.seconds)


def in_tuning_half(identity: str) -> bool:
    return hashlib.sha256(identity.encode()).digest()[0] % 2 == 0


def _mapped(m: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x1, y1, x2, y2 = box
    pts = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2], [(x1 + x2) / 2, (y1 + y2) / 2]]) @ m[:, :2].T + m[:, 2]
    return np.concatenate([pts[:4].min(0), pts[:4].max(0)]), pts[4]


def _match(found, boxes: np.ndarray, m: np.ndarray, shape) -> list[int]:
    """For each detected face, the index of the base face it is (-1: none)."""
    h, w = shape[:2]
    targets = []
    for b in boxes:
        mb, centre = _mapped(m, b)
        inside = 0 <= centre[0] < w and 0 <= centre[1] < h
        targets.append((mb, centre, inside))
    out, taken = [], set()
    for f in found:
        best, best_iou = -1, 0.25
        for j, (mb, centre, inside) in enumerate(targets):
            if j in taken or not inside:
                continue
            b = f.box
            if b[0] <= centre[0] <= b[2] and b[1] <= centre[1] <= b[3] and (iou := box_iou(b, mb)) >= best_iou:
                best, best_iou = j, iou
        if best >= 0:
            taken.add(best)
        out.append(best)
    return out


def build(photos_dir: Path, engine, cache: Path, log=print) -> FaceSet:
    """The face set, from `cache` when it was built by this version of this file."""
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        if int(data["version"]) == CACHE_VERSION:
            counts = {k: dict(zip(data[f"{k}_keys"].tolist(), data[f"{k}_values"].tolist()))
                      for k in ("expected", "found", "seconds")}
            return FaceSet(**{k: data[k] for k in data.files if not k.endswith(("_keys", "_values")) and k != "version"},
                           **counts)
    from immich_ml_desktop.models.images import DecodedImage, decode_image, to_bgr
    from immich_ml_desktop.services.face_passes import detect_faces_with_fallback
    from immich_ml_desktop.library.copies import words
    from immich_ml_desktop.services.face_quality import measure, photo_fingerprint

    rng = np.random.default_rng(0)
    scene = to_bgr(decode_image((photos_dir / SCENE).read_bytes()))
    rows: list[dict] = []
    names: dict[str, int] = {}
    base_ids: dict[tuple[str, int], int] = {}
    expected: dict[str, int] = {}
    found_count: dict[str, int] = {}
    seconds: dict[str, float] = {}

    def ident(name: str) -> int:
        return names.setdefault(name, len(names))

    bases: list[tuple[str, np.ndarray, list[str]]] = []  # (photo, bgr, identity of each base face)
    base_boxes: list[np.ndarray] = []
    labelled = dict(labelled_photos(photos_dir))
    for rel in [*labelled, *GROUP_PHOTOS]:
        path = photos_dir / rel
        if not path.exists():
            log(f"  {rel} is missing; left out")
            continue
        bgr = to_bgr(decode_image(path.read_bytes()))
        faces = engine.faces(FACE_PACK, DecodedImage.from_bgr(bgr))
        if not faces:
            log(f"  no face found in {rel}; left out")
            continue
        if rel in labelled and len(faces) > 1:
            # The label names one person and the photo holds several faces: which is whom is not known
            # (photoprism's 1, 16 and 17: the largest face is not always the labelled one).
            log(f"  {rel}: {len(faces)} faces for one label; left out")
            continue
        who = [f"{rel}#{j}" for j in range(len(faces))]
        if rel in labelled:
            largest = max(range(len(faces)), key=lambda j: (faces[j].box[2] - faces[j].box[0]) * (faces[j].box[3] - faces[j].box[1]))
            who[largest] = labelled[rel]
        bases.append((rel, bgr, who))
        base_boxes.append(np.stack([f.box for f in faces]).astype(np.float64))
    photo_no = 0
    for (rel, bgr, who), boxes in zip(bases, base_boxes):
        for condition, derive in [("plain", None), *CONDITIONS.items()]:
            image, m = (bgr, IDENTITY) if derive is None else derive(bgr, boxes, scene, rng)
            start = time.perf_counter()
            faces = detect_faces_with_fallback(engine, FACE_PACK, DecodedImage.from_bgr(image))
            seconds[condition] = seconds.get(condition, 0.0) + time.perf_counter() - start
            matched = _match(faces, boxes, m, image.shape)
            fingerprint = words(photo_fingerprint(image))
            size = np.array([image.shape[1], image.shape[0]] * 2, dtype=np.float64)
            expected[condition] = expected.get(condition, 0) + len(boxes)
            found_count[condition] = found_count.get(condition, 0) + sum(j >= 0 for j in matched)
            for k, (face, j) in enumerate(zip(faces, matched)):
                q = measure(image, face.landmarks)
                name = who[j] if j >= 0 else f"extra:{rel}:{condition}:{k}"
                rows.append(dict(vectors=face.embedding, identity=ident(name), name=name, photo=photo_no,
                                 base=base_ids.setdefault((rel, j), len(base_ids)) if j >= 0 else -1,
                                 condition=condition, tune=in_tuning_half(name), found_by=face.found_by,
                                 score=face.score, box=face.box, landmarks=face.landmarks, brightness=q.brightness,
                                 contrast=q.contrast, sharpness=q.sharpness, lower_detail=q.lower_detail,
                                 photo_print=fingerprint, relative_box=face.box / size))
            photo_no += 1
        log(f"  {rel}: {len(boxes)} base faces, {sum(1 for r in rows if r['photo'] >= photo_no - len(CONDITIONS) - 1)} faces in its {len(CONDITIONS) + 1} versions")
    arrays = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    arrays["vectors"] = arrays["vectors"].astype(np.float32)
    out = FaceSet(**arrays, expected=expected, found=found_count, seconds=seconds)
    cache.parent.mkdir(parents=True, exist_ok=True)
    extra = {f"{k}_{part}": np.array(list(getattr(out, k).keys() if part == "keys" else getattr(out, k).values()))
             for k in ("expected", "found", "seconds") for part in ("keys", "values")}
    np.savez(cache, version=CACHE_VERSION, **arrays, **extra)
    return out
