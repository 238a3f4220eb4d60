"""Load test for the ML server (`immich-ml-desktop serve`), shaped like Immich's own ML locustfile.

    locust -f locustfile.py --headless -u 4 -r 1 -t 60s --host http://127.0.0.1:3003
    locust -f locustfile.py --headless -u 2 -r 2 -t 60s --host http://127.0.0.1:3003 ClipImageUser

Each user sends exactly what Immich sends (multipart `entries` + `image` named `blob`, or `text`).
See docs/server.md for the options and how to read the numbers.
"""

from __future__ import annotations

import io
import json
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

import numpy as np
from locust import HttpUser, constant, events, task
from locust.env import Environment
from PIL import Image

_image = {"bytes": b""}


@events.init_command_line_parser.add_listener
def _options(parser: ArgumentParser) -> None:
    parser.add_argument("--clip-model", default="ViT-B-32__openai", help="CLIP model name sent in entries")
    parser.add_argument("--face-model", default="buffalo_l", help="face model name sent in entries")
    parser.add_argument("--ocr-model", default="PP-OCRv5_mobile", help="OCR model name sent in entries")
    parser.add_argument("--face-min-score", type=float, default=0.7, help="face detection minScore")
    parser.add_argument("--image-size", type=int, default=1440, help="side of the generated square test JPEG")
    parser.add_argument("--image", default="", help="send this image file instead of a generated one")


@events.test_start.add_listener
def _make_image(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is not None and options.image:
        _image["bytes"] = Path(options.image).read_bytes()
        return
    size = options.image_size if options is not None else 1440
    # Smooth noise, so the JPEG has the size and decode cost of a photo rather than a flat colour.
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (max(1, size // 16), max(1, size // 16), 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    _image["bytes"] = buffer.getvalue()


class _ImmichMlUser(HttpUser):
    abstract = True
    host = "http://127.0.0.1:3003"
    wait_time = constant(0)  # back to back: measures what the server can do

    def predict_image(self, entries: dict[str, Any], name: str) -> None:
        files = {"image": ("blob", _image["bytes"], "application/octet-stream")}
        self.client.post("/predict", data={"entries": json.dumps(entries)}, files=files, name=name)

    @property
    def options(self) -> Any:
        return self.environment.parsed_options


class ClipTextUser(_ImmichMlUser):
    @task
    def encode_text(self) -> None:
        entries = {"clip": {"textual": {"modelName": self.options.clip_model, "options": {}}}}
        # multipart with plain fields, as Immich's server sends text
        fields = {"entries": (None, json.dumps(entries)), "text": (None, "a dog running on the beach at sunset")}
        self.client.post("/predict", files=fields, name="clip text")


class ClipImageUser(_ImmichMlUser):
    @task
    def encode_image(self) -> None:
        self.predict_image({"clip": {"visual": {"modelName": self.options.clip_model}}}, "clip image")


class FaceUser(_ImmichMlUser):
    @task
    def recognize(self) -> None:
        model = self.options.face_model
        entries = {
            "facial-recognition": {
                "detection": {"modelName": model, "options": {"minScore": self.options.face_min_score}},
                "recognition": {"modelName": model},
            }
        }
        self.predict_image(entries, "faces")


class OcrUser(_ImmichMlUser):
    """Immich 3.x sends OCR for every new asset; answered here or handed on with `serve --forward`."""

    @task
    def read_text(self) -> None:
        model = self.options.ocr_model
        entries = {
            "ocr": {
                "detection": {"modelName": model, "options": {"minScore": 0.5, "maxResolution": 736}},
                "recognition": {"modelName": model, "options": {"minScore": 0.8}},
            }
        }
        self.predict_image(entries, "ocr")
