"""How many labelled faces each detection pass finds under hard conditions, and what each pass costs.

    python bench/face_conditions.py [--device cpu] [--shared ../shared]

The conditions are built here from the labelled photos of ../shared/photos (face_identities.csv and the
one-person photos of photoprism_face_identities.csv): plain, dark (x0.25, x0.1 and x0.05 brightness + Gaussian
noise), low contrast (x0.12 around the mean colour), rotated 35 degrees, a small face (~40 px) in a 1600 px scene, a tight 150 px crop, that
crop rotated 35 degrees, JPEG quality 15; and the photos labelled "no-face" (what a pass finds there is
wrong). The labels have no boxes: a photo's labelled face is the largest face Immich's pass finds on the
plain photo, and each condition maps that box into its own image (its centre and its axis-aligned
bounds). A face counts as found when a detected box contains the labelled centre and overlaps the
labelled box (IoU >= 0.25).

Passes run as the library runs them (`services.face_passes`): Immich's, then padded, bright, rotated,
each only when all before it found nothing. Columns: labelled faces found after each pass; ms: median
milliseconds of Immich's pass per photo (the baseline, same run) and, for each added pass, its median
milliseconds on the photos it ran on, its median ratio to Immich's pass on the same photo (x), and how
many photos it ran on. Also compares brightening methods and where the bright and
rotated passes' embeddings are cut, by cosine similarity to the same person's upright faces.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from face_sets import FACE_PACK, SCENE, _mapped, _turned, labelled_photos  # noqa: E402

from immich_ml_desktop.library.copies import box_iou  # noqa: E402

from immich_ml_desktop.models.engine import Engine, Face  # noqa: E402
from immich_ml_desktop.models.images import DecodedImage, decode_image, to_bgr  # noqa: E402
from immich_ml_desktop.services import face_passes as fp  # noqa: E402

# A condition: (image, labelled box in it (x1, y1, x2, y2), labelled centre in it).
Condition = tuple[np.ndarray, np.ndarray, np.ndarray]


def _jpeg(bgr: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).save(buf, "JPEG", quality=quality)
    return to_bgr(Image.open(buf).convert("RGB"))


def conditions(bgr: np.ndarray, box: np.ndarray, scene: np.ndarray, rng: np.random.Generator) -> dict[str, Condition]:
    h, w = bgr.shape[:2]
    x1, y1, x2, y2 = np.clip(box, 0, [w, h, w, h]).astype(int)
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    clipped = np.array([x1, y1, x2, y2], dtype=np.float64)
    out: dict[str, Condition] = {"plain": (bgr, clipped, centre)}
    for factor, sigma in ((0.25, 4), (0.1, 3), (0.05, 2)):  # brightness factor, noise (grey levels)
        dark = bgr.astype(np.float32) * factor + rng.normal(0, sigma, bgr.shape)
        out[f"dark x{factor}+noise {sigma}"] = (np.clip(dark, 0, 255).astype(np.uint8), clipped, centre)
    mean = bgr.reshape(-1, 3).mean(0)
    out["low contrast x0.12"] = (np.clip((bgr - mean) * 0.12 + mean, 0, 255).astype(np.uint8), clipped, centre)
    turned, m = _turned(bgr, 35)
    out["rotated 35"] = (turned, *_mapped(m, clipped))
    scale = 40 / max(1, x2 - x1)
    small = cv2.resize(bgr, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
    canvas = cv2.resize(scene, (1600, 1067), interpolation=cv2.INTER_AREA)
    sh, sw = min(small.shape[0], 1067 - 400), min(small.shape[1], 1600 - 700)
    canvas[400 : 400 + sh, 700 : 700 + sw] = small[:sh, :sw]
    out["small in 1600 px scene"] = (canvas, clipped * scale + [700, 400, 700, 400], centre * scale + [700, 400])
    tight = cv2.resize(bgr[y1:y2, x1:x2], (150, 150), interpolation=cv2.INTER_CUBIC)
    full = np.array([0, 0, 150, 150], dtype=np.float64)
    out["tight 150 px"] = (tight, full, np.array([75.0, 75.0]))
    turned, m = _turned(tight, 35)
    out["tight, rotated 35"] = (turned, *_mapped(m, full))
    out["jpeg q15"] = (_jpeg(bgr, 15), clipped, centre)
    return out


def match(faces: list[Face], box: np.ndarray, centre: np.ndarray) -> Face | None:
    for f in faces:
        b = f.box
        if b[0] <= centre[0] <= b[2] and b[1] <= centre[1] <= b[3] and box_iou(b, box) >= 0.25:
            return f
    return None


STAGES = ("immich", "+padded", "+bright", "+rotated")


def run_passes(engine: Engine, bgr: np.ndarray) -> tuple[list[list[Face]], dict[str, float]]:
    """The faces after each stage (as `detect_faces_with_fallback` runs them) and each pass's ms where it ran."""
    ms: dict[str, float] = {}
    start = time.perf_counter()
    faces = engine.faces(FACE_PACK, DecodedImage.from_bgr(bgr))
    ms["immich"] = (time.perf_counter() - start) * 1000
    after = [faces]
    steps: list[tuple[str, Callable[[], list[Face]]]] = [
        ("+padded", lambda: fp.padded_pass(engine, FACE_PACK, bgr)),
        ("+bright", lambda: fp.bright_pass(engine, FACE_PACK, bgr) if fp.is_dark(bgr) else []),
        ("+rotated", lambda: fp.rotated_pass(engine, FACE_PACK, bgr)),
    ]
    for stage, step in steps:
        if not faces:
            start = time.perf_counter()
            faces = step()
            if stage != "+bright" or fp.is_dark(bgr):
                ms[stage] = (time.perf_counter() - start) * 1000
        after.append(faces)
    return after, ms


def _record(times: dict[str, list[float]], ms: dict[str, float]) -> None:
    """Each pass's ms, and its ratio to Immich's pass on the same photo (`<stage> x`): on a shared machine
    whose load changes during the run, the ratio moves less than the milliseconds."""
    for stage, t in ms.items():
        times.setdefault(stage, []).append(t)
        if stage != "immich":
            times.setdefault(f"{stage} x", []).append(t / ms["immich"])


def _cost(times: dict[str, list[float]], stage: str) -> str:
    if stage not in times:
        return "- (0)"
    return f"{statistics.median(times[stage]):.0f}, {statistics.median(times[stage + ' x']):.2f} ({len(times[stage])})"


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("IMMICH_ML_SHARED", ROOT.parent / "shared")))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    photos = args.shared / "photos"
    rng = np.random.default_rng(0)
    with Engine(args.shared / "models", args.device, work_dir=ROOT / "build" / "bench" / "engine-work") as engine:
        scene = to_bgr(decode_image((photos / SCENE).read_bytes()))
        engine.faces(FACE_PACK, DecodedImage.from_bgr(scene))  # load the models before timing
        found: dict[str, list[int]] = {}
        totals: dict[str, int] = {}
        times: dict[str, dict[str, list[float]]] = {}
        upright: dict[str, list[np.ndarray]] = {}
        bright_cos: dict[str, list[float]] = {"bright": [], "original": [], "bright, to other photos": [],
                                              "original, to other photos": []}
        plain_other: list[float] = []  # the plain faces' mean cosine to the person's other photos
        rotated_cos: list[float] = []
        brighten: dict[str, dict[str, int]] = {}
        dark_plain = 0
        labelled = labelled_photos(photos)
        kept = []
        for rel, identity in labelled:
            bgr = to_bgr(decode_image((photos / rel).read_bytes()))
            faces = engine.faces(FACE_PACK, DecodedImage.from_bgr(bgr))
            if not faces:
                print(f"  no face found in labelled {rel}; left out")
                continue
            face = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
            upright.setdefault(identity, []).append(face.embedding)
            kept.append((rel, identity, bgr, face))
        for _rel, identity, bgr, face in kept:
            dark_plain += fp.is_dark(bgr)
            for name, (image, box, centre) in conditions(bgr, face.box, scene, rng).items():
                after, ms = run_passes(engine, image)
                totals[name] = totals.get(name, 0) + 1
                counts = found.setdefault(name, [0] * len(STAGES))
                for i, faces in enumerate(after):
                    counts[i] += match(faces, box, centre) is not None
                _record(times.setdefault(name, {}), ms)
                hit = match(after[-1], box, centre)
                others = [e for e in upright[identity] if e is not face.embedding]  # the person's other photos
                if hit is not None and hit.found_by == "bright":
                    lit = fp.brightened(image)
                    marks = {"boxes": hit.box[None], "scores": np.array([hit.score]), "landmarks": hit.landmarks[None]}
                    for source, im in (("bright", lit), ("original", image)):
                        e = engine.face_recognizer(FACE_PACK).embed_faces(im, marks)[0]  # type: ignore[arg-type]
                        bright_cos[source].append(cosine(e, face.embedding))
                        if others:
                            bright_cos[f"{source}, to other photos"].append(float(np.mean([cosine(e, o) for o in others])))
                if hit is not None and hit.found_by == "rotated":
                    rotated_cos.append(cosine(hit.embedding, face.embedding))
                if hit is not None and name == "rotated 35" and others:
                    plain_other.append(float(np.mean([cosine(face.embedding, o) for o in others])))
                if name.startswith(("dark", "low contrast")):
                    methods = brighten.setdefault(name, {})
                    for method, lit in (("none", image), ("clahe", fp.clahe_l(image)),
                                        ("gamma", fp.gamma_to_mid(image)), ("gamma+clahe", fp.brightened(image))):
                        d = engine.face_detector(FACE_PACK).detect_bgr(lit, 0.7, rounded=False)
                        hits = [Face(b, 0.0, np.zeros((5, 2)), np.zeros(1)) for b in d["boxes"]]
                        methods[method] = methods.get(method, 0) + (match(hits, box, centre) is not None)
        nofaces = [r for r in _no_face_photos(photos)]
        for rel in nofaces:
            bgr = to_bgr(decode_image((photos / rel).read_bytes()))
            after, ms = run_passes(engine, bgr)
            totals["no-face photos (wrong finds)"] = totals.get("no-face photos (wrong finds)", 0) + 1
            counts = found.setdefault("no-face photos (wrong finds)", [0] * len(STAGES))
            for i, faces in enumerate(after):
                counts[i] += bool(faces)
            _record(times.setdefault("no-face photos (wrong finds)", {}), ms)

    print(f"{len(kept)} labelled faces; is_dark() holds for {dark_plain} of the {len(kept)} plain photos")
    head = f"{'condition':<29} {'n':>3} " + " ".join(f"{s:>8}" for s in STAGES) + \
        f" {'immich ms':>9} " + " ".join(f"{s + ' ms, x (runs)':>23}" for s in STAGES[1:])
    print(head)
    for name, counts in found.items():
        t = times[name]
        cost = " ".join(f"{_cost(t, s):>23}" for s in STAGES[1:])
        print(f"{name:<29} {totals[name]:>3} " + " ".join(f"{c:>8}" for c in counts) +
              f" {statistics.median(t['immich']):>9.0f} {cost}")
    print("brightening, labelled faces found by one detector call on the brightened copy:")
    for name, methods in brighten.items():
        print(f"  {name:<22} " + "  ".join(f"{m} {n}" for m, n in methods.items()))
    for source, values in bright_cos.items():
        if values:
            what = "the person's other plain photos (mean)" if "other" in source else "the plain photo's face"
            print(f"bright pass, embedding cut from the {source.split(',')[0]} photo: median cosine to {what} "
                  f"{statistics.median(values):.3f} (n={len(values)})")
    if plain_other:
        print(f"for scale: plain faces' median cosine to the person's other plain photos (mean) "
              f"{statistics.median(plain_other):.3f} (n={len(plain_other)})")
    if rotated_cos:
        print(f"rotated pass, embedding (norm_crop on the original): median cosine to the plain photo's face "
              f"{statistics.median(rotated_cos):.3f}, min {min(rotated_cos):.3f} (n={len(rotated_cos)})")


def _no_face_photos(photos: Path) -> list[str]:
    import csv

    with open(photos / "photoprism_face_identities.csv") as f:
        return [r["path"] for r in csv.DictReader(f) if r["persons_per_photoprism_net_test"] == "no-face"]


if __name__ == "__main__":
    main()
