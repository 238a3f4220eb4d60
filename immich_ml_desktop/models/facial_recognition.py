"""Face detection (insightface RetinaFace/SCRFD at 640x640, NMS 0.4) and recognition (ArcFace on
`norm_crop` 112x112 crops), exactly as Immich's ML service runs them.

Recognition runs all faces of an image in one call when the model can batch: a fixed batch axis gets a
symbolic one in the app's cache, and the batched result is checked against single runs once at load;
a model that still cannot batch (like a flatten to `[1, -1]`) runs face by face.
"""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any, TypedDict

import numpy as np

from immich_ml_desktop.models import samples
from immich_ml_desktop.models.base import InferenceModel, ModelTask, ModelType
from immich_ml_desktop.models.batching import batch_matches, batchable_copy, has_batch_axis
from immich_ml_desktop.models.clip import serialize_embedding
from immich_ml_desktop.models.images import ImageInput, bgr_of
from immich_ml_desktop.models.runtime import Session

log = logging.getLogger(__name__)

# insightface 0.7.3 calls skimage's SimilarityTransform.estimate, deprecated (not changed) in 0.26.
warnings.filterwarnings("ignore", message=r".*`estimate` is deprecated.*", category=FutureWarning)

DETECTION_SIZE = (640, 640)


class FaceDetectionOutput(TypedDict):
    boxes: np.ndarray  # (N, 4) float32, rounded pixel coordinates, unclamped
    scores: np.ndarray  # (N,)
    landmarks: np.ndarray  # (N, 5, 2)


class FaceDetector(InferenceModel):
    identity = (ModelType.DETECTION, ModelTask.FACIAL_RECOGNITION)

    def __init__(self, model_name: str, *args: Any, min_score: float = 0.7, **kwargs: Any) -> None:
        self.min_score = float(kwargs.pop("minScore", min_score))
        super().__init__(model_name, *args, **kwargs)
        self._detectors: dict[float, Any] = {}
        self._detectors_lock = threading.Lock()

    def _load(self) -> Session:
        shapes = {}
        session = self._make_session(self.model_path)
        inp = session.get_inputs()[0]
        if self.requested_device.runtime == "openvino" and not all(isinstance(d, int) for d in inp.shape):
            # Detection always runs at 640x640: a static shape lets OpenVINO compile a faster graph.
            shapes = {inp.name: [1, 3, DETECTION_SIZE[1], DETECTION_SIZE[0]]}
            session = self._make_session(self.model_path, ov_input_shapes=shapes)
        self._detectors.clear()
        return session

    def _release(self) -> None:
        with self._detectors_lock:
            self._detectors.clear()  # each RetinaFace holds the session

    def _detector(self, min_score: float) -> Any:
        """One RetinaFace per threshold (they share the session), so concurrent requests with
        different `minScore` never race on insightface's instance state."""
        from insightface.model_zoo import RetinaFace

        with self._detectors_lock:
            det = self._detectors.get(min_score)
            if det is None:
                det = RetinaFace(session=self.session)
                # A static 640x640 graph (OpenVINO) already fixes the size; insightface would print a warning.
                det.prepare(ctx_id=0, det_thresh=min_score, input_size=None if det.input_size else DETECTION_SIZE)
                self._detectors[min_score] = det
            return det

    def detect_bgr(self, image_bgr: np.ndarray, min_score: float | None = None, *, rounded: bool = True) -> FaceDetectionOutput:
        """Faces in an OpenCV BGR image: boxes rounded to pixels as Immich answers them (`rounded`)."""
        score = float(self.min_score if min_score is None else min_score)
        with self.in_use():
            bboxes, landmarks = self._detector(score).detect(image_bgr)
        return {
            "boxes": np.ascontiguousarray(bboxes[:, :4].round() if rounded else bboxes[:, :4]),
            "scores": np.ascontiguousarray(bboxes[:, 4]),
            "landmarks": landmarks if landmarks is not None else np.zeros((0, 5, 2), np.float32),
        }

    def _predict(self, inputs: ImageInput, minScore: float | None = None, **options: Any) -> FaceDetectionOutput:
        return self.detect_bgr(bgr_of(inputs), minScore)


class FaceRecognizer(InferenceModel):
    identity = (ModelType.RECOGNITION, ModelTask.FACIAL_RECOGNITION)
    depends = [(ModelType.DETECTION, ModelTask.FACIAL_RECOGNITION)]

    def __init__(self, model_name: str, *args: Any, batch: bool = True, **kwargs: Any) -> None:
        kwargs.pop("minScore", None)
        super().__init__(model_name, *args, **kwargs)
        self.batch = batch

    def _load(self) -> Session:
        from insightface.model_zoo import ArcFaceONNX

        session = self._make_session(self.model_path)
        self.can_batch = False
        if self.batch:
            session, self.can_batch = self._with_batch_axis(session)
        self.model = ArcFaceONNX(str(self.model_path), session=session)
        return session

    def _release(self) -> None:
        self.model = None  # ArcFaceONNX holds the session

    def _with_batch_axis(self, session: Session) -> tuple[Session, bool]:
        inp = session.get_inputs()[0]
        candidate = session
        if not has_batch_axis(inp.shape):
            if self.work_dir is None:
                return session, False
            try:
                candidate = self._make_session(batchable_copy(self.model_path, self.work_dir))
            except Exception as e:  # noqa: BLE001
                log.info("%r cannot take a batch axis (%s); one face per call", self, e)
                return session, False
        size = inp.shape[2] if isinstance(inp.shape[2], int) else 112
        rng = np.random.default_rng(0)
        samples = rng.standard_normal((3, 3, size, size), dtype=np.float32)
        name = candidate.get_inputs()[0].name
        if batch_matches(lambda x: candidate.run(None, {name: x})[0], samples):
            return candidate, True
        log.info("%r gives different vectors when batched; one face per call", self)
        return session, False

    def _calibrate(self, session: Session) -> np.ndarray:
        from insightface.model_zoo import ArcFaceONNX

        model = ArcFaceONNX(str(self.model_path), session=session)
        return np.concatenate([model.get_feat([crop]) for crop in samples.face_crops()])

    def crops(self, image_bgr: np.ndarray, faces: FaceDetectionOutput) -> list[np.ndarray]:
        from insightface.utils.face_align import norm_crop

        return [norm_crop(image_bgr, landmark) for landmark in faces["landmarks"]]

    def embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros((0, 0), np.float32)
        with self.in_use():
            model = self.model
            if self.can_batch:
                return model.get_feat(crops)
            return np.concatenate([model.get_feat([c]) for c in crops])

    def embed_faces(self, image_bgr: np.ndarray, faces: FaceDetectionOutput) -> np.ndarray:
        return self.embed_crops(self.crops(image_bgr, faces))

    def _predict(self, inputs: ImageInput, faces: FaceDetectionOutput, **options: Any) -> list[dict[str, Any]]:
        if faces["boxes"].shape[0] == 0:
            return []
        embeddings = self.embed_faces(bgr_of(inputs), faces)
        return [
            {
                "boundingBox": {"x1": x1, "y1": y1, "x2": x2, "y2": y2},
                "embedding": serialize_embedding(embedding),
                "score": score,
            }
            for (x1, y1, x2, y2), embedding, score in zip(faces["boxes"], embeddings, faces["scores"])
        ]
