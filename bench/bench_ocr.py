"""OCR requests per second on the four text photos (1440 px previews, Immich's default OCR options).

Measures, per device: the two OCR models called directly (decoded image in), the whole `/predict` path
(`predict_entries` from JPEG bytes, as the server runs it), and as baseline RapidOCR's own pipeline
(`RapidOCR()` with its own ONNX Runtime session, same wheel models, no angle classifier).

    python bench/bench_ocr.py [--devices cpu openvino:CPU] [--repeat 3] [--cache-dir ../shared/models]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path
from collections.abc import Callable

from PIL import Image

from immich_ml_desktop.models.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
TEXT_PHOTOS = ROOT.parent / "shared" / "photos" / "immich_test_assets" / "albums" / "text"
MODEL = "PP-OCRv6_small"  # ships in the rapidocr wheel
ENTRIES = {
    "ocr": {
        "detection": {"modelName": MODEL, "options": {"minScore": 0.5, "maxResolution": 736}},
        "recognition": {"modelName": MODEL, "options": {"minScore": 0.8}},
    }
}


def preview(path: Path) -> bytes:
    image = Image.open(path)
    image.draft("RGB", (1440, 1440))
    image = image.convert("RGB")
    scale = 1440 / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def median_seconds(run: Callable[[], object], repeat: int) -> float:
    run()  # warm-up: first call loads models and lets runtimes settle
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def per_photo(label: str, names: list[str], make_run: Callable[[str], Callable[[], object]], repeat: int) -> float:
    """Median seconds per request for each photo; returns requests/s over the set of photos."""
    medians = {name: median_seconds(make_run(name), repeat) for name in names}
    rps = len(medians) / sum(medians.values())
    detail = "  ".join(f"{name.split('.')[0]} {m * 1000:.0f} ms" for name, m in medians.items())
    print(f"  {label:<28} {rps:5.2f} requests/s   ({detail})")
    return rps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", default=["cpu", "openvino:CPU"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=ROOT.parent / "shared" / "models")
    args = parser.parse_args()

    jpegs = {p.name: preview(p) for p in sorted(TEXT_PHOTOS.glob("*.jpg"))}
    images = {name: Image.open(io.BytesIO(data)).convert("RGB") for name, data in jpegs.items()}
    print(f"OCR {MODEL} on {len(jpegs)} text photos (1440 px previews), median of {args.repeat} runs each")

    from rapidocr import RapidOCR

    rapid = RapidOCR(params={"Global.use_cls": False, "Global.log_level": "critical"})
    print("baseline: RapidOCR's own pipeline (its ONNX Runtime CPU session)")
    names = list(jpegs)
    base = per_photo("RapidOCR()", names, lambda name: (lambda: rapid(images[name])), args.repeat)

    for device in args.devices:
        with Engine([args.cache_dir], device) as engine:
            det = engine.get_model("ocr", "detection", MODEL)
            rec = engine.get_model("ocr", "recognition", MODEL)
            print(f"device {device} ({det.session.device.description})")

            def models_only(name: str) -> Callable[[], object]:
                image = images[name]
                return lambda: rec.predict(image, det.predict(image, minScore=0.5, maxResolution=736), minScore=0.8)  # noqa: B023 - run within this iteration

            ours = per_photo("detector + recognizer", names, models_only, args.repeat)
            full = per_photo(
                "predict_entries (JPEG in)", names, lambda name: (lambda: engine.predict_entries(ENTRIES, image=jpegs[name])), args.repeat
            )
            print(f"  ratio vs RapidOCR(): models {ours / base:.2f}x, full request {full / base:.2f}x")


if __name__ == "__main__":
    main()
