"""`serve` beside Immich's own ML service, in the same run, on the same model cache and names.

Starts Immich's ML service v3.1.0 (`../shared/immich-kit/ml-start.sh`, its own venv, defaults as in its
container: 1 gunicorn worker, request threads = cores, ONNX Runtime 2 intra-op threads) and
`immich-ml-desktop serve` (defaults: device and precision `auto`, workers = cores), both with the same models
preloaded and never unloaded. Then, round after round, each load tool (Locust with `locustfile.py`, and
this script's own keep-alive socket clients) sends each request kind at each concurrency to one server and
then the other, the order swapped every round; requests are what Immich sends (a 1440 px JPEG preview,
multipart text). Per kind and concurrency it prints medians over the rounds: req/s, p50/p95, server CPU time
per request (from /proc, the server's whole process tree), server RSS, and our/Immich ratio (median of the
per-round ratios, so a noisy round shifts both sides alike).

    python bench/bench_vs_immich.py                                   # tiny test CLIP, faces buffalo_l
    python bench/bench_vs_immich.py --clip-dir /path/to/ViT-B-32__openai --rounds 5 --seconds 15

`--clip-dir` is a full-size CLIP pack in Immich's layout (e.g. `immich-ml-desktop models export-clip
ViT-B-32 --random-init --name ViT-B-32__openai`: the real graph, so the real speed). The cache is made with
`ml-cache.sh` (per-file symlinks; catalogue names `ViT-B-32__openai`, `buffalo_l` = test-scrfd25g-r512).
Both servers and the load generators share this machine's cores, as they would on a workstation that runs
Immich's jobs against itself. Everything started here is stopped by its PID on exit.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("IMMICH_ML_SHARED", ROOT.parent / "shared"))
KIT = SHARED / "immich-kit"
KIT_WORK = Path(os.environ.get("IMMICH_KIT_WORK", "/var/tmp/immich-kit"))
IMMICH_PYTHON = KIT_WORK / "ml" / "venv" / "bin" / "python"
DEFAULT_IMAGE = SHARED / "photos" / "insightface" / "t1.jpg"
TEXT = "a dog running on the beach at sunset"
KINDS = {"clip-image": "ClipImageUser", "clip-text": "ClipTextUser", "faces": "FaceUser"}
CLIP_NAME, FACE_NAME = "ViT-B-32__openai", "buffalo_l"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import preview_jpeg  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


# -- processes ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (gunicorn's master and worker)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of the process tree (every thread)."""
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return total / TICKS


def rss_mb(pid: int) -> float:
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited ({self.process.returncode}); see {self.log}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/ping")
                if conn.getresponse().read() == b"pong":
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"{self.name} did not answer /ping within {timeout:.0f} s; see {self.log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.pid, signal.SIGTERM)  # its own session: the group we started, nothing else
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.process.wait(10)


def start_immich(port: int, cache: Path, logs: Path) -> Server:
    env = {
        **os.environ,
        "MACHINE_LEARNING_MODEL_TTL": "0",
        "MACHINE_LEARNING_PRELOAD__CLIP__VISUAL": CLIP_NAME,
        "MACHINE_LEARNING_PRELOAD__CLIP__TEXTUAL": CLIP_NAME,
        "MACHINE_LEARNING_PRELOAD__FACIAL_RECOGNITION__DETECTION": FACE_NAME,
        "MACHINE_LEARNING_PRELOAD__FACIAL_RECOGNITION__RECOGNITION": FACE_NAME,
    }
    env.pop("PYTHONPATH", None)
    log = logs / "immich-ml.log"
    proc = subprocess.Popen([str(KIT / "ml-start.sh"), str(port), str(cache)], env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    return Server("immich", port, proc, log)


def start_ours(port: int, cache: Path, logs: Path, work: Path, extra: list[str]) -> Server:
    config = logs / "ours-config"
    config.mkdir(exist_ok=True)
    env = {**os.environ, "IMMICH_ML_DESKTOP_CONFIG_DIR": str(config), "IMMICH_ML_DESKTOP_CACHE_DIR": str(work)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    log = logs / "ours.log"
    cmd = [sys.executable, "-m", "immich_ml_desktop", "serve", "--port", str(port), "--cache-dir", str(cache),
           "--model-ttl", "0", "--no-download", "--no-answer-cache",  # the same photo again and again: compute each
           "--preload", CLIP_NAME, FACE_NAME, *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    return Server("ours", port, proc, log)


# -- requests ----------------------------------------------------------------------------------------
def multipart(fields: list[tuple[str, bytes, str | None]]) -> tuple[bytes, str]:
    """(body, content type) of a multipart form; a part with a filename is sent as Immich sends `image`."""
    boundary = uuid.uuid4().hex
    out = bytearray()
    for name, data, filename in fields:
        out += f"--{boundary}\r\n".encode()
        if filename is None:
            out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        else:
            out += (f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n").encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def request_body(kind: str, image: bytes) -> tuple[bytes, str]:
    if kind == "clip-text":
        entries = {"clip": {"textual": {"modelName": CLIP_NAME, "options": {}}}}
        return multipart([("entries", json.dumps(entries).encode(), None), ("text", TEXT.encode(), None)])
    if kind == "clip-image":
        entries = {"clip": {"visual": {"modelName": CLIP_NAME}}}
    else:
        entries = {"facial-recognition": {"detection": {"modelName": FACE_NAME, "options": {"minScore": 0.7}},
                                          "recognition": {"modelName": FACE_NAME}}}
    return multipart([("entries", json.dumps(entries).encode(), None), ("image", image, "blob")])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def native_load(port: int, body: bytes, content_type: str, clients: int, seconds: float) -> dict[str, float]:
    """`clients` keep-alive connections sending back to back for `seconds` (requests in flight finish)."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
    barrier = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        mine: list[float] = []
        bad = 0
        barrier.wait()
        while time.perf_counter() < stop_at[0]:
            start = time.perf_counter()
            try:
                conn.request("POST", "/predict", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                bad += response.status != 200
            except OSError:
                bad += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            mine.append((time.perf_counter() - start) * 1000)
        conn.close()
        with lock:
            latencies.extend(mine)
            failures[0] += bad

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    stop_at[0] = start + seconds
    barrier.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {"n": len(latencies), "rps": len(latencies) / elapsed, "p50": percentile(latencies, 0.5),
            "p95": percentile(latencies, 0.95), "fails": failures[0]}


def locust_load(port: int, kind: str, clients: int, seconds: float, preview: Path, out: Path) -> dict[str, float]:
    prefix = out / f"locust-{kind}-{clients}-{port}"
    subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfile.py"), "--headless", "-u", str(clients),
         "-r", str(clients), "-t", f"{max(1, round(seconds))}s", "--host", f"http://127.0.0.1:{port}",
         "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING", "--clip-model", CLIP_NAME,
         "--face-model", FACE_NAME, "--image", str(preview), KINDS[kind]],
        check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    with open(f"{prefix}_stats.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] != "Aggregated")
    return {"n": int(row["Request Count"]), "rps": float(row["Requests/s"]), "p50": float(row["50%"]),
            "p95": float(row["95%"]), "fails": int(row["Failure Count"])}


# -- the run -----------------------------------------------------------------------------------------
@dataclass
class Cell:
    """One (tool, kind, clients, server): a measurement per round."""

    runs: list[dict[str, float]] = field(default_factory=list)

    def median(self, key: str) -> float:
        return statistics.median(r[key] for r in self.runs)


def measure(server: Server, tool: str, kind: str, clients: int, seconds: float, bodies: dict, preview: Path,
            tmp: Path) -> dict[str, float]:
    cpu0 = cpu_seconds(server.pid)
    if tool == "native":
        result = native_load(server.port, *bodies[kind], clients, seconds)
    else:
        result = locust_load(server.port, kind, clients, seconds, preview, tmp)
    cpu = cpu_seconds(server.pid) - cpu0
    result["cpu_ms"] = 1000 * cpu / max(1, result["n"])
    result["rss"] = rss_mb(server.pid)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip-dir", type=Path, help="CLIP pack to serve as ViT-B-32__openai (default: the tiny test pack)")
    parser.add_argument("--cache", type=Path, help="use this cache made by ml-cache.sh instead of making one")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="photo sent as a 1440 px preview (faces need several)")
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS))
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--tools", nargs="+", choices=["native", "locust"], default=["native", "locust"])
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds; medians over them")
    parser.add_argument("--seconds", type=float, default=10.0, help="load per tool, kind, concurrency and server")
    parser.add_argument("--work", type=Path, help="our app cache (compiled models, precision verdicts); default a temp dir")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--serve-arg", action="append", default=[], help="extra argument for our serve (repeatable)")
    args = parser.parse_args()
    if not IMMICH_PYTHON.exists():
        raise SystemExit(f"Immich's ML service is not built ({IMMICH_PYTHON}): run {KIT / 'ml-build.sh'}")

    with tempfile.TemporaryDirectory(prefix="bench-vs-immich-") as tmp_name:
        tmp = Path(tmp_name)
        cache = args.cache
        if cache is None:
            cache = tmp / "cache"
            env = {**os.environ, **({"CLIP_DIR": str(args.clip_dir.resolve())} if args.clip_dir else {})}
            subprocess.run([str(KIT / "ml-cache.sh"), str(cache)], env=env, check=True, stdout=subprocess.DEVNULL)
        preview = tmp / "preview.jpg"
        preview.write_bytes(preview_jpeg(args.image))
        image = preview.read_bytes()
        bodies = {kind: request_body(kind, image) for kind in KINDS}
        work = args.work or tmp / "ours-work"
        servers = [start_immich(free_port(), cache, tmp), start_ours(free_port(), cache, tmp, work, args.serve_arg)]
        try:
            for s in servers:
                s.wait_ready()
            for s in servers:  # first requests compile and allocate: not measured
                for kind in args.kinds:
                    r = native_load(s.port, *bodies[kind], 2, 2.0)
                    if r["fails"]:
                        raise SystemExit(f"{s.name} failed {kind} requests; see {s.log}")
            idle_rss = {s.name: rss_mb(s.pid) for s in servers}
            print(f"{platform.node()} {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}, "
                  f"load average {os.getloadavg()[0]:.1f}; clip {args.clip_dir or 'tiny-random-clip'}, faces buffalo_l "
                  f"(test-scrfd25g-r512), image {args.image.name} as a {len(image) // 1024} KiB 1440 px preview")
            for line in servers[1].log.read_text().splitlines():
                if "Loaded " in line or "vectors have cosine" in line:
                    print("  ours:", line.split(" ", 2)[-1][:200])
            print(f"RSS after warm-up: Immich {idle_rss['immich']:.0f} MB, ours {idle_rss['ours']:.0f} MB")
            cells: dict[tuple[str, str, int, str], Cell] = {}
            for rnd in range(args.rounds):
                order = servers if rnd % 2 == 0 else servers[::-1]
                for tool in args.tools:
                    for kind in args.kinds:
                        for clients in args.clients:
                            for s in order:
                                r = measure(s, tool, kind, clients, args.seconds, bodies, preview, tmp)
                                cells.setdefault((tool, kind, clients, s.name), Cell()).runs.append(r)
                                if r["fails"]:
                                    print(f"  ! {s.name} {tool} {kind} x{clients}: {r['fails']} failed requests")
                print(f"round {rnd + 1}/{args.rounds} done (load average {os.getloadavg()[0]:.1f})", flush=True)
            report(cells, args)
            if args.json:
                args.json.write_text(json.dumps({"|".join(map(str, k)): v.runs for k, v in cells.items()}, indent=1))
        finally:
            for s in servers:
                s.stop()
            if args.work is None:
                shutil.rmtree(work, ignore_errors=True)
    return 0


def report(cells: dict[tuple[str, str, int, str], Cell], args: argparse.Namespace) -> None:
    print(f"\nmedians over {args.rounds} rounds of {args.seconds:.0f} s; ratio = median of per-round ours/Immich req/s")
    head = (f"{'tool':<7} {'request':<10} {'c':>2} | {'req/s ours':>10} {'Immich':>7} {'ratio':>6} | "
            f"{'p50 ours':>8} {'Immich':>7} | {'p95 ours':>8} {'Immich':>7} | {'CPU ms/req ours':>15} {'Immich':>7} | "
            f"{'RSS MB ours':>11} {'Immich':>7}")
    print(head)
    print("-" * len(head))
    for tool in args.tools:
        for kind in args.kinds:
            for clients in args.clients:
                ours, immich = cells[(tool, kind, clients, "ours")], cells[(tool, kind, clients, "immich")]
                ratio = statistics.median(o["rps"] / max(i["rps"], 1e-9) for o, i in zip(ours.runs, immich.runs))
                print(f"{tool:<7} {kind:<10} {clients:>2} | {ours.median('rps'):>10.1f} {immich.median('rps'):>7.1f} "
                      f"{ratio:>5.2f}x | {ours.median('p50'):>8.0f} {immich.median('p50'):>7.0f} | "
                      f"{ours.median('p95'):>8.0f} {immich.median('p95'):>7.0f} | {ours.median('cpu_ms'):>15.1f} "
                      f"{immich.median('cpu_ms'):>7.1f} | {max(r['rss'] for r in ours.runs):>11.0f} "
                      f"{max(r['rss'] for r in immich.runs):>7.0f}")
    if len(args.tools) == 2:
        print("\ntools agree? Locust req/s / native req/s, median per server:")
        for kind in args.kinds:
            for clients in args.clients:
                parts = []
                for name in ("ours", "immich"):
                    a, b = cells[("locust", kind, clients, name)], cells[("native", kind, clients, name)]
                    parts.append(f"{name} {a.median('rps') / max(b.median('rps'), 1e-9):.2f}")
                print(f"  {kind:<10} c={clients}: {', '.join(parts)}")


if __name__ == "__main__":
    raise SystemExit(main())
