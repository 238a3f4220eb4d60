"""How long grouping takes and how much memory it needs, on synthetic clustered 512-d face vectors.

    python bench/cluster_scale.py [--sizes 2000,10000,100000] [--algorithm default|immich|both]

Each size runs in a fresh process so that the peak RSS printed is that run's own; "load" is the machine's
1-minute load average after the run (other work on the 2 cores slows the figures down).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _one(size: int, algorithm: str, repeats: int) -> dict:
    import numpy as np

    from immich_ml_desktop.library.clustering import UNASSIGNED, group_faces, immich_cluster
    from synthetic_faces import clustered_faces

    vectors, truth, photos = clustered_faces(size, max(2, size // 40), faces_per_photo=3, seed=size)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        labels = group_faces(vectors, photos) if algorithm == "default" else immich_cluster(vectors)
        times.append(time.perf_counter() - start)
    groups = len(set(labels[labels != UNASSIGNED].tolist()))
    from cluster_quality import scores

    people = len(set(truth[truth >= 0].tolist()))
    truth = truth.copy()
    truth[truth < 0] = truth.max() + 1 + np.arange((truth < 0).sum())  # each stranger is their own identity
    quality = scores(truth, labels, photos)
    return {
        "bcubed_f": quality["BF"],
        "same_photo": quality["same_photo"],
        "faces": size,
        "algorithm": algorithm,
        "seconds": float(np.median(times)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "groups": groups,
        "true_people": people,
        "load": os.getloadavg()[0],
        "unassigned": int((labels == UNASSIGNED).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,5000,20000,100000")
    parser.add_argument("--algorithm", choices=["default", "immich", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=3, help="runs per size below 20k faces (median)")
    parser.add_argument("--child", nargs=3, metavar=("SIZE", "ALGORITHM", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_one(int(args.child[0]), args.child[1], int(args.child[2]))))
        return
    algorithms = ["default", "immich"] if args.algorithm == "both" else [args.algorithm]
    baseline_memory = _baseline_rss()
    print(f"interpreter + numpy/scipy/sklearn imports alone: {baseline_memory:.0f} MB peak RSS")
    print(f"{'faces':>8} {'algorithm':>9} {'median s':>9} {'peak RSS MB':>12} {'groups':>7} {'people':>7} {'unassigned':>10} {'B3 F':>6} {'same-photo':>10} {'load':>5}")
    for size in [int(s) for s in args.sizes.split(",")]:
        for algorithm in algorithms:
            repeats = args.repeats if size < 20_000 else 1
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(size), algorithm, str(repeats)],
                check=True, capture_output=True, text=True,
            ).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"{r['faces']:>8} {r['algorithm']:>9} {r['seconds']:>9.2f} {r['peak_rss_mb']:>12.0f} "
                  f"{r['groups']:>7} {r['true_people']:>7} {r['unassigned']:>10} {r['bcubed_f']:>6.3f} {r['same_photo']:>10} {r['load']:>5.1f}", flush=True)


def _baseline_rss() -> float:
    code = ("import resource, numpy, scipy.sparse, sklearn.cluster;"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    try:
        return float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
    except subprocess.CalledProcessError:
        return float("nan")


if __name__ == "__main__":
    main()
