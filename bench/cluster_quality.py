"""Grouping quality: Immich's rules at their defaults against our default, on the same face vectors.

    python bench/cluster_quality.py [--device cpu|openvino:CPU] [--shared ../shared]

Sets (faces from the real face pack test-scrfd25g-r512, found with the library's detection including its own
passes: padded, bright, rotated; see services/face_passes.py):
  easy        the labelled faces of face_identities.csv and photoprism_face_identities.csv
  hard        the same people again as tight 150 px crops, small faces pasted into scenes, rotated 25
              degrees and darkened, mixed with every face of the group photos (Solvay 1927, PASCAL VOC
              crowds, ...) as strangers
  look-alike  synthetic 512-d identities, half of them with a sibling close by, 8% one-off strangers,
              three faces per photo (several seeds)
Pairwise precision/recall/F1 and BCubed F count unassigned faces as groups of one; "same-photo" counts
groups holding two faces of one photo. Also measures how many more labelled faces the padded pass finds
on tight crops. Vectors are cached in --cache so that reruns only cluster.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from immich_ml_desktop.library.clustering import UNASSIGNED, GroupingParams, ImmichParams, group_faces, immich_cluster  # noqa: E402

FACE_PACK = "test-scrfd25g-r512"
STRANGER_PHOTOS = [
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


# ------------------------------------------------------------------------------------------ metrics


def scores(truth: np.ndarray, labels: np.ndarray, photos: np.ndarray) -> dict[str, float]:
    from sklearn.metrics.cluster import contingency_matrix, pair_confusion_matrix

    pred = labels.copy()
    lonely = pred == UNASSIGNED
    pred[lonely] = pred.max() + 1 + np.arange(lonely.sum())  # unassigned: groups of one
    (_, fp), (fn, tp) = pair_confusion_matrix(truth, pred) / 2
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    c = contingency_matrix(truth, pred, sparse=True).tocoo()
    # BCubed: each face's share of its group that is its identity, and of its identity that is its group.
    cells = c.data.astype(np.float64)
    group_size = np.asarray(c.sum(axis=0)).ravel()[c.col]
    identity_size = np.asarray(c.sum(axis=1)).ravel()[c.row]
    b_precision = (cells**2 / group_size).sum() / cells.sum()
    b_recall = (cells**2 / identity_size).sum() / cells.sum()
    same_photo = 0
    for g in np.unique(labels[labels != UNASSIGNED]):
        members = photos[labels == g]
        same_photo += int(len(members) != len(np.unique(members)))
    return {
        "P": precision, "R": recall, "F1": _f(precision, recall),
        "BP": b_precision, "BR": b_recall, "BF": _f(b_precision, b_recall),
        "groups": len(np.unique(labels[labels != UNASSIGNED])), "unassigned": int(lonely.sum()), "same_photo": same_photo,
    }


def _f(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


# ------------------------------------------------------------------------------------------ real faces


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


def variants(image: Image.Image, box: np.ndarray, scene: Image.Image) -> dict[str, Image.Image]:
    """The harder versions of one labelled photo, each built around its labelled face `box`."""
    x1, y1, x2, y2 = [int(v) for v in box]
    x1, y1 = max(0, x1), max(0, y1)
    x2, y2 = min(image.width, x2), min(image.height, y2)
    tight = image.crop((x1, y1, x2, y2)).resize((150, 150), Image.Resampling.BICUBIC)
    scale = 40 / max(1, x2 - x1)  # the face ~40 px wide inside a 1600 px scene: ~16 px at detection
    small_photo = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))), Image.Resampling.LANCZOS)
    small = scene.resize((1600, 1067)).copy()
    small.paste(small_photo, (700, 400))
    rotated = image.rotate(25, expand=True, resample=Image.Resampling.BICUBIC, fillcolor=(128, 128, 128))
    dark = ImageEnhance.Brightness(image).enhance(0.25)
    return {"tight": tight, "small": small, "rotated": rotated, "dark": dark}


def real_sets(photos_dir: Path, engine, cache: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{'easy': (vectors, identities, photos), 'hard': (...)}, from the cache when present."""
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        return {s: (data[f"{s}_v"], data[f"{s}_t"], data[f"{s}_p"]) for s in ("easy", "hard")}
    from immich_ml_desktop.models.images import decode_image
    from immich_ml_desktop.services.face_passes import detect_faces_with_fallback

    def largest(faces):
        return max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))

    scene = decode_image((photos_dir / SCENE).read_bytes())
    easy: list[tuple[np.ndarray, str, str]] = []
    hard: list[tuple[np.ndarray, str, str]] = []
    plain_found = padded_found = tight_total = 0
    for rel, identity in labelled_photos(photos_dir):
        image = decode_image((photos_dir / rel).read_bytes())
        faces = engine.faces(FACE_PACK, image)
        if not faces:
            print(f"  no face found in labelled {rel}; left out")
            continue
        face = largest(faces)
        easy.append((face.embedding, identity, rel))
        hard.append((face.embedding, identity, rel))
        for kind, variant in variants(image, face.box, scene).items():
            found = detect_faces_with_fallback(engine, FACE_PACK, variant)
            if kind == "tight":
                tight_total += 1
                plain_found += bool(engine.faces(FACE_PACK, variant))
                padded_found += bool(found)
            if found:
                hard.append((largest(found).embedding, identity, f"{rel}#{kind}"))
    print(f"tight 150 px crops of {tight_total} labelled faces: Immich's pass finds {plain_found}, "
          f"with the padded second pass {padded_found} (+{padded_found - plain_found})")
    for i, rel in enumerate(STRANGER_PHOTOS):
        path = photos_dir / rel
        if not path.exists():
            continue
        for j, face in enumerate(detect_faces_with_fallback(engine, FACE_PACK, decode_image(path.read_bytes()))):
            hard.append((face.embedding, f"stranger:{i}:{j}", rel))
    out = {}
    for name, rows in (("easy", easy), ("hard", hard)):
        ids = {ident: k for k, ident in enumerate(dict.fromkeys(r[1] for r in rows))}
        pids = {p: k for k, p in enumerate(dict.fromkeys(r[2] for r in rows))}
        out[name] = (np.stack([r[0] for r in rows]).astype(np.float32),
                     np.array([ids[r[1]] for r in rows]), np.array([pids[r[2]] for r in rows]))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **{f"{s}_{k}": a for s, arrs in out.items() for k, a in zip("vtp", arrs)})
    return out


def lookalike_sets(seeds: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    from synthetic_faces import clustered_faces

    sets = []
    for seed in range(seeds):
        v, truth, photos = clustered_faces(3000, 150, spread=0.45, lookalike_share=0.5, lookalike_distance=0.5,
                                           stranger_share=0.08, faces_per_photo=3, seed=seed)
        lonely = truth < 0
        truth = truth.copy()
        truth[lonely] = truth.max() + 1 + np.arange(lonely.sum())  # each stranger is their own identity
        sets.append((v, truth, photos))
    return sets


# ------------------------------------------------------------------------------------------ table


ALGORITHMS = {
    "immich (0.5, 3)": lambda v, p: immich_cluster(v, ImmichParams()),
    "ours (default)": lambda v, p: group_faces(v, p, GroupingParams()),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache", type=Path, default=ROOT / "build" / "bench" / "cluster_quality_vectors.npz")
    parser.add_argument("--seeds", type=int, default=3, help="synthetic look-alike libraries to average")
    args = parser.parse_args()

    from immich_ml_desktop.models.engine import Engine

    start = time.perf_counter()
    with Engine(args.shared / "models", args.device, work_dir=args.cache.parent / "engine-work") as engine:
        real = real_sets(args.shared / "photos", engine, args.cache)
    print(f"vectors ready in {time.perf_counter() - start:.1f} s")
    rows = []
    for set_name, (v, truth, photos) in real.items():
        for algo, run in ALGORITHMS.items():
            rows.append((set_name, len(v), len(np.unique(truth)), algo, scores(truth, run(v, photos), photos)))
    synthetic = lookalike_sets(args.seeds)
    for algo, run in ALGORITHMS.items():
        per_seed = [scores(t, run(v, p), p) for v, t, p in synthetic]
        mean = {k: float(np.mean([s[k] for s in per_seed])) for k in per_seed[0]}
        mean["same_photo"] = int(sum(s["same_photo"] for s in per_seed))
        rows.append(("look-alike", len(synthetic[0][0]), len(np.unique(synthetic[0][1])), algo, mean))
    header = f"{'set':<11} {'faces':>5} {'ids':>4} {'algorithm':<16} {'pair P':>6} {'pair R':>6} {'pair F1':>7} " \
             f"{'B3 P':>5} {'B3 R':>5} {'B3 F':>5} {'groups':>6} {'unassigned':>10} {'same-photo':>10}"
    print(header)
    for set_name, n, ids, algo, s in rows:
        print(f"{set_name:<11} {n:>5} {ids:>4} {algo:<16} {s['P']:>6.3f} {s['R']:>6.3f} {s['F1']:>7.3f} "
              f"{s['BP']:>5.3f} {s['BR']:>5.3f} {s['BF']:>5.3f} {s['groups']:>6.0f} {s['unassigned']:>10.0f} {s['same_photo']:>10}")


if __name__ == "__main__":
    main()
