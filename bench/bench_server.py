"""Benchmark the ML server: its overhead over the engine's own call, and requests/s with p50/p95 latency
for CLIP image, CLIP text and faces at 1, 2 and 4 concurrent clients.

    python bench/bench_server.py --cache-dir /path/with/ViT-B-32__openai     # ../shared/models is always added
    python bench/bench_server.py --clip-model tiny-random-clip --seconds 10

The image is what Immich sends: a JPEG preview whose shorter side is 1440 px, made from --image
(default insightface's 6-face t1.jpg).

The server runs in this process on the same Engine as the baseline, so both use the very same loaded
models; clients are httpx threads sending exactly what Immich sends. Figures are medians. On a machine
shared with other work, wall-clock figures shrink with the load; CPU time per request does much less,
so `req/s if idle` (cores / CPU seconds per request) estimates what the same cores would do unshared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from collections.abc import Callable

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import preview_jpeg

ROOT = Path(__file__).resolve().parent.parent
SHARED_MODELS = ROOT.parent / "shared" / "models"
DEFAULT_IMAGE = ROOT.parent / "shared" / "photos" / "insightface" / "t1.jpg"
TEXT = "a dog running on the beach at sunset"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def median_ms(call: Callable[[], object], repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def load(url: str, send: Callable[[httpx.Client], httpx.Response], clients: int, seconds: float) -> dict[str, float]:
    """`clients` threads sending back to back for `seconds`; every answer must be 200."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client() -> None:
        with httpx.Client(base_url=url, timeout=300) as c:
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                ok = send(c).status_code == 200
                ms = (time.perf_counter() - start) * 1000
                with lock:
                    latencies.append(ms)
                    failures[0] += not ok

    start = time.perf_counter()
    cpu_start = time.process_time()  # every thread of this process: server, engine and clients
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    cpu_ms = (time.process_time() - cpu_start) * 1000 / max(1, len(latencies))
    return {
        "cpu_ms": cpu_ms,
        "rps": len(latencies) / elapsed,
        "p50": percentile(latencies, 0.5),
        "p95": percentile(latencies, 0.95),
        "n": len(latencies),
        "failures": failures[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, action="append", default=[], help="model cache (repeatable); ../shared/models is added")
    parser.add_argument("--clip-model", help="default ViT-B-32__openai when present, else tiny-random-clip")
    parser.add_argument("--face-model", default="test-scrfd25g-r512")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="photo sent (default insightface/t1.jpg, 6 faces)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=15.0, help="load duration per endpoint and client count")
    parser.add_argument("--repeats", type=int, default=15, help="calls for the overhead medians")
    parser.add_argument("--workers", type=int, nargs="+", default=[0], help="inference threads to compare (0 = server default)")
    args = parser.parse_args()

    from immich_ml_desktop.server.ml_server import MlServer
    from immich_ml_desktop.models.engine import Engine
    from immich_ml_desktop.models.runtime import default_parallel

    caches = [*args.cache_dir, SHARED_MODELS]
    clip_model = args.clip_model or (
        "ViT-B-32__openai" if any((c / "clip" / "ViT-B-32__openai").is_dir() for c in caches) else "tiny-random-clip"
    )
    image = preview_jpeg(args.image)
    clip_image_entries = json.dumps({"clip": {"visual": {"modelName": clip_model}}})
    clip_text_entries = json.dumps({"clip": {"textual": {"modelName": clip_model, "options": {}}}})
    face_entries = json.dumps({
        "facial-recognition": {
            "detection": {"modelName": args.face_model, "options": {"minScore": 0.7}},
            "recognition": {"modelName": args.face_model},
        }
    })

    def send_image(entries: str) -> Callable[[httpx.Client], httpx.Response]:
        files = {"image": ("blob", image, "application/octet-stream")}
        return lambda c: c.post("/predict", data={"entries": entries}, files=files)

    endpoints: dict[str, tuple[Callable[[httpx.Client], httpx.Response], Callable[[Engine], object]]] = {
        "clip image": (send_image(clip_image_entries), lambda e: e.clip_image(clip_model, image)),
        "clip text": (
            lambda c: c.post("/predict", files={"entries": (None, clip_text_entries), "text": (None, TEXT)}),
            lambda e: e.clip_text(clip_model, TEXT),
        ),
        "faces": (send_image(face_entries), lambda e: e.faces(args.face_model, image, 0.7)),
    }

    cores = os.cpu_count() or 1
    print(f"load average {os.getloadavg()[0]:.1f} on {cores} cores ('req/s if idle' = cores / CPU time per request)")
    print(f"caches: {', '.join(map(str, caches))}; clip: {clip_model}; faces: {args.face_model}; "
          f"image: {args.image.name} ({len(image) // 1024} KiB); device {args.device}")
    with Engine(caches, args.device, precision=args.precision, parallel=max(args.workers) or default_parallel()) as engine:
        faces = engine.faces(args.face_model, image, 0.7)
        print(f"{len(faces)} faces in the image")
        for workers in args.workers:
            with MlServer(engine, "127.0.0.1", 0, workers=workers or None) as server:
                print(f"\n== server with {server.workers} inference threads (default {default_parallel()}) ==")
                print(f"{'endpoint':<11} {'engine ms':>9} {'HTTP ms':>8} {'overhead':>9}")
                with httpx.Client(base_url=server.url, timeout=300) as c:
                    for name, (send, direct) in endpoints.items():
                        assert send(c).status_code == 200, send(c).text
                        engine_ms = median_ms(lambda direct=direct: direct(engine), args.repeats)
                        http_ms = median_ms(lambda send=send: send(c), args.repeats)
                        print(f"{name:<11} {engine_ms:9.1f} {http_ms:8.1f} {http_ms - engine_ms:+7.1f}ms ({http_ms / engine_ms:.2f}x)")
                print(f"\n{'endpoint':<11} {'clients':>7} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'n':>5} {'fail':>4}"
                      f" {'cpu ms/req':>10} {'req/s if idle':>13}")
                for name, (send, _) in endpoints.items():
                    for clients in args.clients:
                        r = load(server.url, send, clients, args.seconds)
                        print(f"{name:<11} {clients:7d} {r['rps']:7.2f} {r['p50']:7.0f} {r['p95']:7.0f} {r['n']:5d} {r['failures']:4d}"
                              f" {r['cpu_ms']:10.0f} {cores * 1000 / r['cpu_ms']:13.1f}")
                        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
