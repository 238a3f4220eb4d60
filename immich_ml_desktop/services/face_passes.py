"""Face detection for the library: Immich's pass first, then a second pass on a padded canvas for photos
where the face fills the frame (tight crops, profile pictures, ID photos), which Immich's pass misses.

Only the library uses this; the `/predict` server answers exactly as Immich does.
"""

from __future__ import annotations

import cv2
import numpy as np

from immich_ml_desktop.models.engine import Engine, Face
from immich_ml_desktop.models.facial_recognition import DETECTION_SIZE
from immich_ml_desktop.models.images import DecodedImage, ImageInput, decode_image

# The canvas side as a multiple of the photo's longer side. The detector resizes its input to 640 px
# and SCRFD's anchors stop at faces of a few hundred pixels there: a face filling the frame is too big
# to be found; on a canvas 3x as large it is about 210 px, well inside the anchors' range. Measured on
# 150 px tight crops of the 27 labelled faces of ../shared/photos: 2x finds 21, 2.5x 26, 3x all 27, and
# 2x then 3x no more than 3x alone, which costs one detector call instead of two on faceless photos.
PAD_FACTORS = (3.0,)


def detect_faces_with_fallback(engine: Engine, name: str, image: ImageInput, min_score: float = 0.7,
                               first: list[Face] | None = None) -> list[Face]:
    """The faces of a photo with their embeddings, in the photo's pixel coordinates.

    Runs Immich's detection as is; only when it finds nothing, runs it again with the photo centred on a
    black canvas 3x its size (`PAD_FACTORS`) and maps boxes and landmarks back (boxes clipped to the photo).
    The canvas is built at the detector's own size (640 px), never at the photo's: the detector would
    shrink it to that anyway, and a 3x canvas of a 1440 px preview is 120 MB. Embeddings are cut from the
    photo itself with the mapped landmarks; where the aligned crop reaches past the photo's edge it is
    black, as it was on the canvas. `first`: the first pass's faces where the caller already has them.
    """
    decoded = image if isinstance(image, DecodedImage) else DecodedImage(decode_image(image))
    faces = engine.faces(name, decoded, min_score) if first is None else first
    if faces:
        return faces
    detector, recognizer = engine.face_detector(name), engine.face_recognizer(name)
    bgr = decoded.bgr
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
        limits = np.array([width, height, width, height], dtype=np.float32)
        return [
            Face(box=np.clip(box, 0, limits).round(), score=float(score), landmarks=marks, embedding=embedding,
                 found_by="padded")
            for box, score, marks, embedding in zip(boxes, found["scores"], landmarks, embeddings)
        ]
    return []
