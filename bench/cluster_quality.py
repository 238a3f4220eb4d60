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
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from face_sets import CONDITIONS, FACE_PACK, SCENE, FaceSet, build, labelled_photos  # noqa: E402, F401

from immich_ml_desktop.library.clustering import (  # noqa: E402
    UNASSIGNED,
    GroupingParams,
    ImmichParams,
    group_faces,
    immich_cluster,
    weak_by_quality,
)
from immich_ml_desktop.library.copies import copy_components  # noqa: E402
from immich_ml_desktop.library.people import WEAK_PASSES  # noqa: E402


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
    same_photo = mixed = 0
    for g in np.unique(labels[labels != UNASSIGNED]):
        members = photos[labels == g]
        same_photo += int(len(members) != len(np.unique(members)))
        mixed += int(len(np.unique(truth[labels == g])) > 1)
    return {
        "P": precision, "R": recall, "F1": _f(precision, recall),
        "BP": b_precision, "BR": b_recall, "BF": _f(b_precision, b_recall),
        "groups": len(np.unique(labels[labels != UNASSIGNED])), "unassigned": int(lonely.sum()), "same_photo": same_photo,
        "mixed": mixed,
    }


def _f(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


# ------------------------------------------------------------------------------------------ real faces


def condition_sets(faces: FaceSet, half: str) -> dict[str, FaceSet]:
    """'easy': the labelled faces on their plain photos; 'plain': every base face on its plain photo;
    one set per condition: the plain photos plus their copies under that condition (a library holding
    originals and their edited copies side by side); 'all': every version of every photo. Only the
    identities of `half` ('tune' or 'report')."""
    mine = faces.tune if half == "tune" else ~faces.tune
    plain = faces.condition == "plain"
    labelled = np.array([not n.startswith("extra:") and "#" not in n for n in faces.name.tolist()])
    out = {"easy": faces.take(mine & plain & labelled), "plain": faces.take(mine & plain)}
    for condition in CONDITIONS:
        out[condition] = faces.take(mine & (plain | (faces.condition == condition)))
    out["all"] = faces.take(mine)
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


def ours(f: FaceSet, params: GroupingParams | None = None) -> np.ndarray:
    """Our default as the library runs it: with the faces' measured quality and the passes that found them."""
    params = params or GroupingParams()
    weak = weak_by_quality(f.sharpness, f.lower_detail, params) | np.isin(f.found_by, list(WEAK_PASSES))
    copies = None if np.isnan(f.relative_box).all() else copy_components(f.photo, f.photo_print, f.relative_box)
    return group_faces(f.vectors, f.photo, params, weak=weak, copies=copies)


ALGORITHMS = {
    "immich (0.5, 3)": lambda f: immich_cluster(f.vectors, ImmichParams()),
    "ours (default)": ours,
}
HEADER = (f"{'set':<13} {'faces':>5} {'ids':>4} {'found':>7} {'algorithm':<16} {'pair P':>6} {'pair R':>6} {'pair F1':>7} "
          f"{'B3 P':>5} {'B3 R':>5} {'B3 F':>5} {'groups':>6} {'unassigned':>10} {'mixed':>5} {'same-photo':>10}")


def _row(set_name: str, n: int, ids: int, found: str, algo: str, s: dict) -> str:
    return (f"{set_name:<13} {n:>5} {ids:>4} {found:>7} {algo:<16} {s['P']:>6.3f} {s['R']:>6.3f} {s['F1']:>7.3f} "
            f"{s['BP']:>5.3f} {s['BR']:>5.3f} {s['BF']:>5.3f} {s['groups']:>6.0f} {s['unassigned']:>10.0f} "
            f"{s['mixed']:>5.0f} {s['same_photo']:>10.0f}")


def _synthetic(vectors: np.ndarray, photos: np.ndarray) -> FaceSet:
    """Synthetic vectors as a FaceSet whose quality is unknown (NaN: counted as good)."""
    n = len(vectors)
    nan = np.full(n, np.nan)
    return FaceSet(vectors=vectors, identity=np.zeros(n, dtype=int), name=np.array([""] * n), photo=photos,
                   base=np.zeros(n, dtype=int), condition=np.array([""] * n), tune=np.zeros(n, dtype=bool),
                   found_by=np.array(["detector"] * n), score=nan, box=np.zeros((n, 4)), landmarks=np.zeros((n, 5, 2)),
                   brightness=nan, contrast=nan, sharpness=nan, lower_detail=nan, photo_print=np.zeros((n, 4), dtype=np.int64),
                   relative_box=np.full((n, 4), np.nan), expected={}, found={}, seconds={})


def tune(sets: dict[str, FaceSet]) -> None:
    """A grid over the grouping's quality rules, scored on the tuning half only: the fewest groups mixing
    people or holding two faces of one photo (summed over the sets), then the worst BCubed F of a set."""
    import itertools

    grid = {"copy_distance": (0.015, 0.08, 0.12, 0.16, 0.2), "weak_norm": (0.6, 0.7, 0.75),
            "weak_join_distance": (0.4, 0.45, 0.5, 0.6), "weak_sharpness": (0.0, 5.0, 10.0, 20.0),
            "weak_lower_detail": (0.0, 0.4, 0.5)}
    results = []
    for values in itertools.product(*grid.values()):
        params = GroupingParams(**dict(zip(grid, values)))
        per = {n: scores(f.identity, ours(f, params), f.photo) for n, f in sets.items()}
        worst = min(x["BF"] for x in per.values())
        bad = sum(x["mixed"] + x["same_photo"] for x in per.values())
        results.append((-bad, worst, per["all"]["BF"], values))
    results.sort(reverse=True)
    print("tuning half: mixed + same-photo groups summed over the sets, worst B3 F of a set, B3 F of 'all', parameters")
    for bad, worst, whole, values in results[:15]:
        print(f"  {-bad:>3} {worst:.3f} {whole:.3f} " + ", ".join(f"{k}={v}" for k, v in zip(grid, values)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache", type=Path, default=ROOT / "build" / "bench" / "face_sets.npz")
    parser.add_argument("--seeds", type=int, default=3, help="synthetic look-alike libraries to average")
    parser.add_argument("--half", choices=("report", "tune"), default="report",
                        help="which half of the identities to score (defaults are chosen on 'tune' only)")
    parser.add_argument("--tune", action="store_true", help="search the grouping's parameters on the tuning half")
    args = parser.parse_args()

    from immich_ml_desktop.models.engine import Engine

    start = time.perf_counter()
    with Engine(args.shared / "models", args.device, work_dir=args.cache.parent / "engine-work") as engine:
        faces = build(args.shared / "photos", engine, args.cache)
    print(f"{len(faces.vectors)} faces ready in {time.perf_counter() - start:.1f} s (cached in {args.cache})")
    if args.tune:
        tune(condition_sets(faces, "tune"))
        return
    print("detection: base faces found in each condition's copies (both halves), and seconds per photo")
    per_photo = len(np.unique(faces.photo[faces.condition == "plain"]))
    for condition, expected in faces.expected.items():
        print(f"  {condition:<13} {faces.found[condition]:>4} of {expected:<4} {faces.found[condition] / expected:>6.1%}"
              f"  {faces.seconds[condition] / max(1, per_photo):.2f} s")
    print(f"grouping, {args.half} half of the identities:")
    print(HEADER)
    for set_name, f in condition_sets(faces, args.half).items():
        recall = f"{faces.found[set_name] / faces.expected[set_name]:.0%}" if set_name in faces.found else ""
        for algo, run in ALGORITHMS.items():
            labels = run(f)
            print(_row(set_name, len(f.vectors), len(np.unique(f.identity)), recall, algo, scores(f.identity, labels, f.photo)))
    synthetic = lookalike_sets(args.seeds)
    for algo, run in ALGORITHMS.items():
        per_seed = [scores(t, run(_synthetic(v, p)), p) for v, t, p in synthetic]
        mean = {k: float(np.mean([s[k] for s in per_seed])) for k in per_seed[0]}
        for k in ("same_photo", "mixed"):
            mean[k] = int(sum(s[k] for s in per_seed))
        print(_row("look-alike", len(synthetic[0][0]), len(np.unique(synthetic[0][1])), "", algo, mean))


if __name__ == "__main__":
    main()
