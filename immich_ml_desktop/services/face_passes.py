"""Face detection for the library: Immich's pass first, then a second pass on a padded canvas for photos
where the face fills the frame (tight crops, profile pictures, ID photos), which Immich's pass misses.

Only the library uses this; the `/predict` server answers exactly as Immich does.
"""

from __future__ import annotations

import cv2
import numpy as np

from immich_ml_desktop.models.base import ModelTask, ModelType
from immich_ml_desktop.models.engine import Engine, Face
from immich_ml_desktop.models.images import DecodedImage, ImageInput, decode_image

# The canvas side as a multiple of the photo's longer side. The detector resizes its input to 640 px
# and SCRFD's anchors stop at faces of a few hundred pixels there: a face filling the frame is too big
# to be found, the same face on a canvas 2x as large is well inside the anchors' range; 3x catches
# crops tighter than the face itself (chin or hair cut off).
PAD_FACTORS = (2.0, 3.0)


def detect_faces_with_fallback(engine: Engine, name: str, image: ImageInput, min_score: float = 0.7) -> list[Face]:
    """The faces of a photo with their embeddings, in the photo's pixel coordinates.

    Runs Immich's detection as is; only when it finds nothing, runs it again with the photo centred on a
    larger black canvas (`PAD_FACTORS`) and maps boxes and landmarks back (boxes clipped to the photo).
    Embeddings of the second pass are taken from the canvas, where the aligned crop may reach past the
    photo's edge into the black border (as it does for faces at the border of any photo).
    """
    decoded = image if isinstance(image, DecodedImage) else DecodedImage(decode_image(image))
    faces = engine.faces(name, decoded, min_score)
    if faces:
        return faces
    detector = engine.get_model(ModelTask.FACIAL_RECOGNITION, ModelType.DETECTION, name)
    recognizer = engine.get_model(ModelTask.FACIAL_RECOGNITION, ModelType.RECOGNITION, name)
    bgr = decoded.bgr
    height, width = bgr.shape[:2]
    for factor in PAD_FACTORS:
        side = int(round(max(width, height) * factor))
        left, top = (side - width) // 2, (side - height) // 2
        canvas = cv2.copyMakeBorder(bgr, top, side - height - top, left, side - width - left, cv2.BORDER_CONSTANT, value=0)
        found = detector.detect_bgr(canvas, min_score)
        if found["boxes"].shape[0] == 0:
            continue
        embeddings = recognizer.embed_faces(canvas, found)
        offset = np.array([left, top], dtype=np.float32)
        limits = np.array([width, height, width, height], dtype=np.float32)
        return [
            Face(
                box=np.clip(box - np.tile(offset, 2), 0, limits).round(),
                score=float(score),
                landmarks=landmarks - offset,
                embedding=embedding,
            )
            for box, score, landmarks, embedding in zip(found["boxes"], found["scores"], found["landmarks"], embeddings)
        ]
    return []
