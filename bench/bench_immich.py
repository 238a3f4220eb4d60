"""Immich client throughput against the fake Immich server with a simulated network delay.

Prints previews/s by parallel-request cap (ratio against 1 request at a time, measured in the same run)
and the push rate (steps/s). Run: `python bench/bench_immich.py [--latency 0.02] [--assets 40]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fake_immich import FakeImmich  # noqa: E402

from immich_ml_desktop.immich.client import ImmichClient  # noqa: E402
from immich_ml_desktop.services.push import LocalFace, PushRun, ReviewedPerson, build_plan  # noqa: E402

SHARED = ROOT.parent / "shared"


def downloads_per_second(fake: FakeImmich, cap: int, repeats: int) -> float:
    ids = list(fake.assets)
    rates = []
    for _ in range(repeats):
        with ImmichClient(fake.url, fake.admin_key, max_parallel=cap) as client, ThreadPoolExecutor(cap) as pool:
            start = time.perf_counter()
            sizes = list(pool.map(lambda i: len(client.download_preview(i)), ids))
            rates.append(len(sizes) / (time.perf_counter() - start))
    return statistics.median(rates)


def push_steps_per_second(fake: FakeImmich, people: int) -> tuple[int, float]:
    assets = list(fake.assets)
    groups = []
    for n in range(people):
        faces = []
        for k, asset in enumerate(assets):
            box = (10 + 60 * n, 10 + 5 * k % 30, 50 + 60 * n, 60 + 5 * k % 30)
            fake.add_face(asset, box)
            faces.append(LocalFace(asset, box))
        groups.append(ReviewedPerson(f"Person {n}", faces))
    with ImmichClient(fake.url, fake.admin_key) as client, tempfile.TemporaryDirectory() as tmp:
        plan = build_plan(client, groups)
        plan.save(Path(tmp) / "push.json")
        start = time.perf_counter()
        PushRun(client, plan).apply()
        return len(plan.steps), len(plan.steps) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=0.02, help="seconds the fake takes per request")
    parser.add_argument("--assets", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    photos = sorted((SHARED / "photos/photoprism/assets/examples").glob("*.jpg"))[: args.assets]
    fake = FakeImmich(SHARED / "immich/immich-openapi-specs.json")
    for photo in photos:
        fake.add_asset(photo)
    fake.start()
    fake.latency = args.latency
    try:
        print(f"{len(photos)} previews, {args.latency * 1000:.0f} ms per request (median of {args.repeats})")
        base = downloads_per_second(fake, 1, args.repeats)
        for cap in (1, 2, 4, 8):
            rate = base if cap == 1 else downloads_per_second(fake, cap, args.repeats)
            print(f"  max_parallel={cap}: {rate:6.1f} previews/s  x{rate / base:.2f}")
        steps, rate = push_steps_per_second(fake, people=3)
        print(f"push: {steps} steps at {rate:.1f} steps/s (each step one request plus a log write)")
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
