"""What a face's pixels say about how far its vector can be trusted, measured once when it is indexed.

The measures are taken on the 112 px crop ArcFace itself sees (`norm_crop` with the face's landmarks), so
they describe exactly the pixels its vector came from, whatever the photo's size, turn or framing:
- brightness: mean grey level (0..255); dark faces give poor vectors;
- contrast: standard deviation of the grey levels;
- sharpness: variance of the Laplacian of the grey crop (blur and upscaled tiny faces score low);
- lower_detail: how much detail the lower part of the face (nose to chin) holds against the eyes' band
  (the ratio of their grey-level deviations): a mask, a scarf or a hand over the mouth gives a low ratio.
The grouping reads them from the library's `faces` table (library/people.py, `weak_faces`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CROP = 112  # ArcFace's input side


@dataclass(frozen=True)
class FaceQuality:
    brightness: float
    contrast: float
    sharpness: float
    lower_detail: float


def aligned_crop(bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112x112 BGR crop ArcFace sees for a face with these five landmarks."""
    from insightface.utils.face_align import norm_crop

    return norm_crop(bgr, np.asarray(landmarks, dtype=np.float32).reshape(5, 2), CROP)


def measure(bgr: np.ndarray, landmarks: np.ndarray) -> FaceQuality:
    grey = cv2.cvtColor(aligned_crop(bgr, landmarks), cv2.COLOR_BGR2GRAY)
    # In ArcFace's template the eyes sit at y ~52 and the mouth corners at y ~92 of 112.
    eyes, lower = grey[36:64, 16:96], grey[70:108, 24:88]
    return FaceQuality(
        brightness=float(grey.mean()),
        contrast=float(grey.std()),
        sharpness=float(cv2.Laplacian(grey, cv2.CV_64F).var()),
        lower_detail=float(lower.std() / max(1.0, float(eyes.std()))),
    )


def photo_fingerprint(bgr: np.ndarray) -> bytes:
    """A 256-bit perceptual hash of a whole photo, as 32 bytes: the signs of its 16x16 lowest DCT
    frequencies against their median, on a 64 px grey thumbnail after histogram equalisation. The first 64
    bits are the 8x8 lowest frequencies (a cheap first test, library/copies.py), the DC bit is always 0
    (it says only how bright the photo is).

    Copies of one picture keep it close whatever was done to their light, quality or sharpness, while
    different photos stay about half apart (bench/cluster_quality.py, 39 photos: darkened, low-contrast,
    JPEG 15 at half size, blurred, covered and greyed copies differ in at most 10 of the first 64 bits and
    50 of all 256; two different photos in at least 20 and 104). Turned, mirrored, re-framed or cropped
    copies are not caught. Written here rather than taken from a hashing library: a few lines on OpenCV's
    DCT, and the layout (a cheap first word) is what the copy search needs."""
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if bgr.ndim == 3 else bgr
    small = cv2.equalizeHist(cv2.resize(grey, (64, 64), interpolation=cv2.INTER_AREA)).astype(np.float32)
    d = cv2.dct(small)[:16, :16]
    values = np.concatenate([d[:8, :8].ravel(), d[:8, 8:].ravel(), d[8:, :].ravel()])
    bits = values > np.median(values[1:])
    bits[0] = False
    return np.packbits(bits).tobytes()
