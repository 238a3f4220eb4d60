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


def photo_fingerprint(bgr: np.ndarray) -> int:
    """A 63-bit perceptual hash of a whole photo (the signs of its low DCT frequencies against their
    median, on a 32 px grey thumbnail after histogram equalisation), as a signed 64-bit integer.

    Copies of one picture keep it within a few bits whatever was done to their light, quality or size
    (bench/cluster_quality.py, on 39 photos: darkened, low-contrast, JPEG 15 at half size, blurred,
    greyed copies differ in at most 8 bits, very dark ones and an edited copy cropped by 4% in at most
    14), while two different photos differ in at least 20. Turned, mirrored or re-framed copies are not
    caught. Written here rather than taken from a hashing library: it is a few lines on OpenCV's DCT."""
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if bgr.ndim == 3 else bgr
    small = cv2.equalizeHist(cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA)).astype(np.float32)
    low = cv2.dct(small)[:8, :8].ravel()[1:]  # the DC term says only how bright the photo is
    bits = np.concatenate([[False], low > np.median(low)])
    value = int(np.packbits(bits).view(">u8")[0])
    return value - (1 << 64) if value >= 1 << 63 else value
