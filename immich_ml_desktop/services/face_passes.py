"""Face detection for the library: Immich's pass first, then the library's own passes for photos where
it finds nothing: a padded canvas (the face fills the frame), a brightened copy (dark or low-contrast
photos) and rotated copies (faces at an angle). Each face says which pass found it (`Face.found_by`).

Only the library uses this; the `/predict` server answers exactly as Immich does.
"""

from __future__ import annotations

from collections.abc import Collection

import cv2
import numpy as np

from immich_ml_desktop.errors import InvalidInputError
from immich_ml_desktop.models.engine import Engine, Face
from immich_ml_desktop.models.facial_recognition import DETECTION_SIZE, FaceDetectionOutput
from immich_ml_desktop.models.images import DecodedImage, ImageInput, decode_image
from immich_ml_desktop.settings import FACE_PASSES

# The canvas side as a multiple of the photo's longer side. The detector resizes its input to 640 px
# and SCRFD's anchors stop at faces of a few hundred pixels there: a face filling the frame is too big
# to be found; on a canvas 3x as large it is about 210 px, well inside the anchors' range. Measured on
# 150 px tight crops of the 27 labelled faces of ../shared/photos: 2x finds 21, 2.5x 26, 3x all 27, and
# 2x then 3x no more than 3x alone, which costs one detector call instead of two on faceless photos.
PAD_FACTORS = (3.0,)

# The passes after Immich's, in the order they run; each runs only when all before it found nothing.
PASSES = FACE_PASSES

# A photo is dark or low-contrast when, on a 64 px grey thumbnail, its mean is below DARK_MEAN or the
# spread between its 5th and 95th percentiles is below LOW_SPREAD (0..255). See bench/face_conditions.py.
DARK_MEAN = 60.0
LOW_SPREAD = 60.0
CLAHE_CLIP, CLAHE_TILES = 3.0, 8

# Rotated copies tried, in degrees counter-clockwise, the first that finds a face wins. SCRFD finds
# faces up to about 20-30 degrees off upright, so +-35 covers roughly 10..65 degrees either way;
# 90/270 only when the caller does not know the photo's orientation.
ANGLES = (35.0, -35.0)
UNKNOWN_ORIENTATION_ANGLES = (90.0, 270.0)


def check_passes(names: Collection[str], what: str = "Face passes") -> list[str]:
    """`names` in the order the passes run; refuses a name that is not one of `PASSES` (`what` names
    where the names came from, in the error)."""
    unknown = sorted(set(names) - set(PASSES))
    if unknown:
        raise InvalidInputError(f"{what}: unknown pass {', '.join(unknown)}; use some of {', '.join(PASSES)}, or none.")
    return [p for p in PASSES if p in names]


def detect_faces_with_fallback(engine: Engine, name: str, image: ImageInput, min_score: float = 0.7,
                               first: list[Face] | None = None, *, passes: Collection[str] = PASSES,
                               orientation_known: bool = True) -> list[Face]:
    """The faces of a photo with their embeddings, in the photo's pixel coordinates.

    Runs Immich's detection as is; only when it finds nothing, the library's passes (`passes`, a subset
    of `PASSES`, in that order) until one finds a face:
    - padded: the photo centred on a black canvas 3x its size (`PAD_FACTORS`), 1 detector call;
    - bright: only for a dark or low-contrast photo (`is_dark`), gamma then CLAHE on L, 1 call;
    - rotated: the photo turned by each of `ANGLES` (and 90/270 when `orientation_known` is False),
      1 call per angle.
    Worst case (a photo without faces): 1 + 1 + 1 + 2 detector calls, 5 with the unknown orientation
    angles; a normal photo where Immich's pass finds a face pays nothing more. `first`: the first pass's
    faces where the caller already has them.
    """
    decoded = image if isinstance(image, DecodedImage) else DecodedImage(decode_image(image))
    faces = engine.faces(name, decoded, min_score) if first is None else first
    if faces:
        return faces
    bgr = decoded.bgr
    if "padded" in passes and (faces := padded_pass(engine, name, bgr, min_score)):
        return faces
    if "bright" in passes and is_dark(bgr) and (faces := bright_pass(engine, name, bgr, min_score)):
        return faces
    if "rotated" in passes:
        angles = ANGLES if orientation_known else ANGLES + UNKNOWN_ORIENTATION_ANGLES
        return rotated_pass(engine, name, bgr, min_score, angles)
    return []


def _faces(boxes: np.ndarray, found: FaceDetectionOutput, landmarks: np.ndarray, embeddings: np.ndarray,
           shape: tuple[int, ...], found_by: str) -> list[Face]:
    limits = np.array([shape[1], shape[0], shape[1], shape[0]], dtype=np.float32)
    return [
        Face(box=np.clip(box, 0, limits).round(), score=float(score), landmarks=marks, embedding=embedding,
             found_by=found_by)
        for box, score, marks, embedding in zip(boxes, found["scores"], landmarks, embeddings)
    ]


def padded_pass(engine: Engine, name: str, bgr: np.ndarray, min_score: float = 0.7) -> list[Face]:
    """The photo centred on a black canvas `PAD_FACTORS` times its size; boxes and landmarks mapped back.

    The canvas is built at the detector's own size (640 px), never at the photo's: the detector would
    shrink it to that anyway, and a 3x canvas of a 1440 px preview is 120 MB. Embeddings are cut from the
    photo itself with the mapped landmarks; where the aligned crop reaches past the photo's edge it is
    black, as it was on the canvas.
    """
    detector, recognizer = engine.face_detector(name), engine.face_recognizer(name)
    height, width = bgr.shape[:2]
    side = DETECTION_SIZE[0]
    for factor in PAD_FACTORS:
        scale = side / (max(width, height) * factor)  # photo pixels -> canvas pixels
        small = cv2.resize(bgr, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
        left, top = (side - small.shape[1]) // 2, (side - small.shape[0]) // 2
        canvas = np.zeros((side, side, 3), np.uint8)
        canvas[top : top + small.shape[0], left : left + small.shape[1]] = small
        found = detector.detect_bgr(canvas, min_score, rounded=False)
        if found["boxes"].shape[0] == 0:
            continue
        offset = np.array([left, top], dtype=np.float32)
        scales = np.array([small.shape[1] / width, small.shape[0] / height], dtype=np.float32)  # as rounded
        landmarks = (found["landmarks"] - offset) / scales
        boxes = (found["boxes"] - np.tile(offset, 2)) / np.tile(scales, 2)
        embeddings = recognizer.embed_faces(bgr, {**found, "landmarks": landmarks})
        return _faces(boxes, found, landmarks, embeddings, bgr.shape, "padded")
    return []


def is_dark(bgr: np.ndarray) -> bool:
    """Whether a photo is dark or low-contrast, from a 64 px grey thumbnail (well under 1 ms)."""
    height, width = bgr.shape[:2]
    scale = 64 / max(height, width)
    thumb = cv2.resize(bgr, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(thumb, cv2.COLOR_BGR2GRAY)
    low, high = np.percentile(grey, (5, 95))
    return bool(grey.mean() < DARK_MEAN or high - low < LOW_SPREAD)


def gamma_to_mid(bgr: np.ndarray) -> np.ndarray:
    """The photo with the gamma that takes its mean grey level to the middle (only ever brightens)."""
    mean = max(1.0, float(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).mean())) / 255
    if mean >= 0.5:
        return bgr
    table = np.clip((np.arange(256) / 255) ** (np.log(0.5) / np.log(mean)) * 255, 0, 255).astype(np.uint8)
    return cv2.LUT(bgr, table)


def clahe_l(bgr: np.ndarray) -> np.ndarray:
    """The photo with CLAHE on its L channel (Lab): dark and flat regions stretched locally, colours kept."""
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB)
    clahe = cv2.createCLAHE(clipLimit=CLAHE_CLIP, tileGridSize=(CLAHE_TILES, CLAHE_TILES))
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)


def brightened(bgr: np.ndarray) -> np.ndarray:
    """The copy the bright pass detects on: gamma to a mid-grey mean, then CLAHE on L.

    Measured with one detector call on the 27 labelled faces of ../shared/photos (bench/face_conditions.py,
    see docs/faces.md): x0.05 brightness + noise: none 16, CLAHE 23, gamma 22, gamma then CLAHE 24;
    x0.1: 24, 25, 24, 26; contrast x0.12: 23, 26, 23, 26.
    """
    return clahe_l(gamma_to_mid(bgr))


def bright_pass(engine: Engine, name: str, bgr: np.ndarray, min_score: float = 0.7) -> list[Face]:
    """Detection on the brightened photo (`brightened`); same geometry, so boxes and landmarks are the
    photo's own.

    Embeddings are cut from the brightened copy, not the dark original: on the faces this pass found in
    the bench's darkened photos, the median cosine similarity to the same face in the plain photo is 0.36
    from the brightened copy against 0.12 from the original (to the person's other photos: 0.16 against
    0.07); such faces are poor either way (plain faces: 0.66 to their person's other photos).
    """
    detector, recognizer = engine.face_detector(name), engine.face_recognizer(name)
    bright = brightened(bgr)
    found = detector.detect_bgr(bright, min_score, rounded=False)
    if found["boxes"].shape[0] == 0:
        return []
    embeddings = recognizer.embed_faces(bright, found)
    return _faces(found["boxes"], found, found["landmarks"], embeddings, bgr.shape, "bright")


def rotation_canvas(bgr: np.ndarray, angle: float, side: int = DETECTION_SIZE[0]) -> tuple[np.ndarray, np.ndarray]:
    """The photo turned by `angle` degrees (counter-clockwise) to fit, whole, a `side` x `side` canvas,
    and the 2x3 affine matrix from photo pixels to canvas pixels.

    The photo is first shrunk (INTER_AREA, no aliasing) to the scale the detector would use anyway, then
    turned, so the canvas costs no more than the detector's own resize. It is never enlarged: a photo
    smaller than the canvas sits in its middle, which also pads a small tight crop as the padded pass
    does (bench/face_conditions.py: 25 of 27 tight crops turned 35 degrees found, 16 without this pass).
    """
    height, width = bgr.shape[:2]
    rad = np.deg2rad(angle)
    cos, sin = abs(np.cos(rad)), abs(np.sin(rad))
    extent = max(width * cos + height * sin, width * sin + height * cos)
    scale = min(1.0, side / extent)
    small = cv2.resize(bgr, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA) \
        if scale < 1.0 else bgr
    sx, sy = small.shape[1] / width, small.shape[0] / height
    turn = cv2.getRotationMatrix2D((small.shape[1] / 2, small.shape[0] / 2), angle, 1.0)
    turn[:, 2] += (side / 2 - small.shape[1] / 2, side / 2 - small.shape[0] / 2)  # centred on the canvas
    canvas = cv2.warpAffine(small, turn, (side, side), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    matrix = turn @ np.array([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], dtype=np.float64)  # photo -> canvas
    return canvas, matrix


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def rotated_pass(engine: Engine, name: str, bgr: np.ndarray, min_score: float = 0.7,
                 angles: Collection[float] = ANGLES) -> list[Face]:
    """Detection on the photo turned by each of `angles` until one finds a face.

    Landmarks are mapped back with the inverse rotation; a box is the axis-aligned bounds of the turned
    box's four corners in the photo, clipped to it. Embeddings are cut by `norm_crop` from the ORIGINAL
    photo with the mapped landmarks: the alignment undoes the rotation itself, and the crop is as sharp
    as the photo (no resampling by the turn).
    """
    detector, recognizer = engine.face_detector(name), engine.face_recognizer(name)
    for angle in angles:
        canvas, matrix = rotation_canvas(bgr, angle)
        found = detector.detect_bgr(canvas, min_score, rounded=False)
        n = found["boxes"].shape[0]
        if n == 0:
            continue
        back = cv2.invertAffineTransform(matrix)
        landmarks = _apply(back, found["landmarks"].reshape(-1, 2)).reshape(n, 5, 2)
        x1, y1, x2, y2 = (found["boxes"][:, i] for i in range(4))
        corners = np.stack([np.stack([x1, y1], -1), np.stack([x2, y1], -1), np.stack([x2, y2], -1),
                            np.stack([x1, y2], -1)], 1)  # (n, 4, 2)
        mapped = _apply(back, corners.reshape(-1, 2)).reshape(n, 4, 2)
        boxes = np.concatenate([mapped.min(axis=1), mapped.max(axis=1)], axis=1)
        embeddings = recognizer.embed_faces(bgr, {**found, "landmarks": landmarks})
        return _faces(boxes, found, landmarks, embeddings, bgr.shape, "rotated")
    return []
