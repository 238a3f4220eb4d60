"""A real Immich 3.1's own smartSearch + faceDetection jobs, timed with three ML services behind it.

Each run: a fresh user uploads the same photos while Immich's ML URL points nowhere (nothing is computed),
then Immich's jobs for those assets (not forced) run with its ML URL set to one of
  immich  - Immich's own ML service v3.1.0 (../shared/immich-kit ml-start.sh, same model files),
  serve   - our `serve`, computing (no answer cache),
  send    - our `serve` answering from the library (`immich send`'s path: the user's assets indexed first,
            the index not timed here; its time is printed beside),
and the time until Immich's queues are empty is measured. The kinds are alternated run by run (`--rounds`
each); prints every run, the medians and the ratios against Immich's own service measured in the same run.

    IMMICH_KIT=1 python bench/bench_immich_jobs.py [--rounds 2] [--photos 40]

Needs the kit built (server and ML service); starts what is not running and stops what it started.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from immich_kit import KIT, RealImmich  # noqa: E402

SHARED = Path(os.environ.get("IMMICH_ML_SHARED", ROOT.parent / "shared"))
NOWHERE = "http://127.0.0.1:9"
QUEUES = ["smartSearch", "faceDetection", "facialRecognition"]


def photos(n: int) -> list[Path]:
    found = sorted(p for p in (SHARED / "photos").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
                   and p.stat().st_size > 20_000)
    return found[:n]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until_idle(immich: RealImmich, settle: float = 2.0, timeout: float = 1800) -> float:
    """Seconds from now until the queues are empty (the moment they were first seen empty, confirmed by
    `settle` more seconds of empty)."""
    start = time.monotonic()
    idle_at = None
    while time.monotonic() - start < timeout:
        if immich.queues_idle(QUEUES):
            idle_at = idle_at or time.monotonic()
            if time.monotonic() - idle_at >= settle:
                return idle_at - start
        else:
            idle_at = None
        time.sleep(0.25)
    raise SystemExit(f"Immich's queues still busy after {timeout} s")


def set_urls(immich: RealImmich, urls: list[str]) -> None:
    config = immich.json("GET", "/system-config")
    config["machineLearning"]["urls"] = urls
    immich.json("PUT", "/system-config", json=config)


def fresh_user(immich: RealImmich, name: str, files: list[Path]) -> tuple[str, list[str]]:
    set_urls(immich, [NOWHERE])
    user = immich.new_user(name)
    ids = [immich.upload(user.key, f) for f in files]
    immich.wait_for_previews(user.key, ids, timeout=600)
    until_idle(immich, settle=1.0)
    return user.key, ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--photos", type=int, default=40)
    args = parser.parse_args()

    from immich_ml_desktop.immich.client import ImmichClient
    from immich_ml_desktop.library.immich_source import ImmichSource
    from immich_ml_desktop.library.store import LibraryStore
    from immich_ml_desktop.models.engine import Engine
    from immich_ml_desktop.models.runtime import default_parallel
    from immich_ml_desktop.server.answer_cache import AnswerCache
    from immich_ml_desktop.server.ml_server import MlServer
    from immich_ml_desktop.services.index import IndexJob

    files = photos(args.photos)
    immich = RealImmich.get()
    work = Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    cache = work / "models"
    subprocess.run([str(KIT / "ml-cache.sh"), str(cache)], check=True, capture_output=True)
    before = immich.json("GET", "/system-config")["machineLearning"]
    config = immich.json("GET", "/system-config")["machineLearning"]
    clip, face, min_score = config["clip"]["modelName"], config["facialRecognition"]["modelName"], config["facialRecognition"]["minScore"]
    immich_port = free_port()
    theirs = subprocess.Popen([str(KIT / "ml-start.sh"), str(immich_port), str(cache)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    answers = AnswerCache(work / "answers.sqlite3")
    times: dict[str, list[float]] = {"immich": [], "serve": [], "send": []}
    index_seconds: list[float] = []
    try:
        deadline = time.monotonic() + 300
        while not _ping(f"http://127.0.0.1:{immich_port}"):
            if time.monotonic() > deadline or theirs.poll() is not None:
                raise SystemExit("Immich's ML service did not start (ml-build.sh run?)")
            time.sleep(0.5)
        with Engine(cache, "auto", work_dir=work / "engine", parallel=default_parallel()) as engine, \
                MlServer(engine, port=0, workers=engine.parallel) as computing, \
                MlServer(engine, port=0, workers=engine.parallel, answers=answers) as from_library:
            urls = {"immich": f"http://127.0.0.1:{immich_port}", "serve": computing.url, "send": from_library.url}
            # Warm every service once (model loading is not what is compared): Immich's two requests for a photo.
            import httpx

            image = files[0].read_bytes()
            for url in urls.values():
                for entries in ({"clip": {"visual": {"modelName": clip}}},
                                {"facial-recognition": {"detection": {"modelName": face, "options": {"minScore": min_score}},
                                                        "recognition": {"modelName": face}}}):
                    httpx.post(f"{url}/predict", data={"entries": json.dumps(entries)},
                               files={"image": ("blob", image, "application/octet-stream")}, timeout=300).raise_for_status()
            for round_ in range(args.rounds):
                for kind in ("immich", "serve", "send") if round_ % 2 == 0 else ("send", "serve", "immich"):
                    key, ids = fresh_user(immich, f"bench {kind} {round_}", files)
                    if kind == "send":
                        with ImmichClient(immich.url, key) as client, LibraryStore(work / f"lib-{round_}.sqlite3") as store:
                            started = time.monotonic()
                            IndexJob(store, engine, ImmichSource(client), clip_model=clip, face_model=face,
                                     face_min_score=min_score, answers=answers).run()
                            index_seconds.append(time.monotonic() - started)
                    set_urls(immich, [urls[kind]])
                    immich.run_job("smartSearch")
                    immich.run_job("faceDetection")
                    seconds = until_idle(immich)
                    times[kind].append(seconds)
                    print(f"round {round_ + 1} {kind:6} {len(ids)} assets: {seconds:6.1f} s", flush=True)
            print(f"\nour server from the library: {from_library.stats.from_cache} answers from the cache, "
                  f"{from_library.stats.requests - from_library.stats.from_cache} computed; errors: "
                  f"serve {computing.stats.errors}, send {from_library.stats.errors}")
    finally:
        config = immich.json("GET", "/system-config")
        config["machineLearning"] = before
        immich.json("PUT", "/system-config", json=config)
        os.killpg(theirs.pid, 15)
        theirs.wait(timeout=60)
        answers.close()
        immich.close()
    base = statistics.median(times["immich"])
    print(f"\n{len(files)} photos, smartSearch + faceDetection (+ facialRecognition), medians of {args.rounds}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| ML service | seconds | vs Immich's own |\n| --- | --- | --- |")
    for kind in times:
        median = statistics.median(times[kind])
        print(f"| {kind} | {median:.1f} | {base / median:.2f}x |")
    print(f"(send: the library's index of those assets took {statistics.median(index_seconds):.1f} s, not counted)")
    return 0


def _ping(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/ping", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
