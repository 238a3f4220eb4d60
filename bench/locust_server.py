"""Run `locustfile.py` headless against a fresh `immich-ml-desktop serve`: each user class alone at 1, 2
and 4 users, then all of them together, and print requests/s with p50/p95 per endpoint.

    python bench/locust_server.py --seconds 20 --cache-dir /work/bench-models --cache-dir ../shared/models

The image is what Immich sends: a JPEG preview whose shorter side is 1440 px (made from --image, by
default insightface's 6-face t1.jpg, 2080x1440). Locust runs on the same cores as the server.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import preview_jpeg

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = ROOT.parent / "shared" / "photos" / "insightface" / "t1.jpg"
CLASSES = ["ClipTextUser", "ClipImageUser", "FaceUser"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_locust(url: str, classes: list[str], users: int, seconds: float, model_args: list[str], out: Path) -> list[dict[str, str]]:
    prefix = out / f"{'-'.join(classes)}-{users}"
    subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfile.py"), "--headless", "-u", str(users),
         "-r", str(users), "-t", f"{int(seconds)}s", "--host", url, "--csv", str(prefix), "--only-summary",
         "--loglevel", "WARNING", *model_args, *classes],
        check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    with open(f"{prefix}_stats.csv", newline="") as f:
        return [row for row in csv.DictReader(f) if row["Name"] != "Aggregated"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", action="append", default=[], help="model caches, first = primary")
    parser.add_argument("--clip-model", default="ViT-B-32__openai")
    parser.add_argument("--face-model", default="test-scrfd25g-r512")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--users", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--classes", nargs="+", default=CLASSES, help="user classes to run alone")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--mixed-seconds", type=float, default=60, help="all classes together (0 = skip)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve_cmd = [sys.executable, "-m", "immich_ml_desktop", "serve", "--port", str(port), "--device", args.device,
                 "--precision", args.precision, "--no-download", "--no-answer-cache",  # repeated photos: compute each
                 "--preload", args.clip_model, args.face_model]
    # serve takes one --cache-dir; further caches go in through a throw-away settings file
    config = Path(tempfile.mkdtemp())
    if args.cache_dir:
        serve_cmd += ["--cache-dir", args.cache_dir[0]]
    (config / "settings.json").write_text(json.dumps({"extra_model_dirs": args.cache_dir[1:]}))
    env = {**os.environ, "IMMICH_ML_DESKTOP_CONFIG_DIR": str(config)}
    server = subprocess.Popen(serve_cmd, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/ping").text == "pong":
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("serve did not start")
            time.sleep(0.2)
        preview = config / "preview.jpg"
        preview.write_bytes(preview_jpeg(args.image))
        model_args = ["--clip-model", args.clip_model, "--face-model", args.face_model, "--image", str(preview)]
        print(f"serve on {url} ({args.device}, precision {args.precision}): clip {args.clip_model}, "
              f"faces {args.face_model}, image {args.image.name} as a 1440 px preview")
        print(f"{'endpoint':<11} {'users':>5} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'reqs':>5} {'fails':>5}")
        with tempfile.TemporaryDirectory() as tmp:
            runs = [([c], u, args.seconds) for c in args.classes for u in args.users]
            if args.mixed_seconds:
                runs.append((CLASSES, 2 * len(CLASSES), args.mixed_seconds))
            for classes, users, seconds in runs:
                label = "" if len(classes) == 1 else f" (all {len(classes)} classes, {seconds:.0f} s)"
                for row in run_locust(url, classes, users, seconds, model_args, Path(tmp)):
                    print(f"{row['Name']:<11} {users:5d} {float(row['Requests/s']):7.2f} {row['50%']:>7} {row['95%']:>7} "
                          f"{row['Request Count']:>5} {row['Failure Count']:>5}{label}")
                sys.stdout.flush()
    finally:
        server.terminate()
        server.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
