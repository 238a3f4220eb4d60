#!/usr/bin/env python3
"""Smoke test of a built Immich ML Desktop: what CI runs on each OS's installed or unpacked app.

    python installer/smoke_test.py --app PATH/TO/immich-ml-desktop [--cli PATH/TO/immich-ml-desktop-cli.exe]

1. `--version` prints the project's version; `devices` lists the CPU.
2. `predict` answers a CLIP image request with a tiny CLIP image encoder this script builds (onnx, 24x24
   input, 8-d output; no download, no test data), and the vector is the one ONNX Runtime computes here.
3. The window: the app started without a command shows a window of its own within 120 s (Linux: an X
   window with the app's title and WM_CLASS, found with xwininfo on $DISPLAY; Windows: a visible top-level
   window of the process titled "Immich ML Desktop", through user32; macOS: an on-screen window owned by the
   process, through CoreGraphics' window list), and is still running when stopped.

Needs Python with numpy, onnx, onnxruntime and Pillow (CI installs them); exits non-zero with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACK = "smoke-tiny-clip"
TITLE = "Immich ML Desktop"
SIZE, DIM = 24, 8


def project_version() -> str:
    for line in (ROOT / "pyproject.toml").read_text(encoding="utf-8").splitlines():
        if line.startswith("version"):
            return line.split("=", 1)[1].strip().strip('"')
    raise SystemExit("pyproject.toml has no version line")


def write_tiny_clip_pack(cache: Path, name: str = PACK) -> Path:
    """A CLIP pack in Immich's layout whose image encoder is a fixed random projection of the pixels."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(20).standard_normal((3 * SIZE * SIZE, DIM)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["image"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["embedding"]),
        ],
        "smoke_clip_visual",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, DIM])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    pack = cache / "clip" / name
    (pack / "visual").mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(pack / "visual" / "model.onnx"))
    (pack / "config.json").write_text(json.dumps({"embed_dim": DIM, "vision_cfg": {"image_size": SIZE}}))
    (pack / "visual" / "preprocess_cfg.json").write_text(json.dumps({
        "size": [SIZE, SIZE], "mode": "RGB", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
        "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0,
    }))  # fmt: skip
    return pack


def write_photo(path: Path) -> Path:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (320, 240), (40, 90, 160))
    ImageDraw.Draw(image).ellipse((100, 50, 220, 190), fill=(230, 200, 60))
    image.save(path, quality=92)
    return path


def run(argv: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"FAIL: {' '.join(argv[:2])} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


def check_cli(cli: str, env: dict[str, str], work: Path) -> dict[str, float]:
    timings = {}
    started = time.perf_counter()
    version = run([cli, "--version"], env).stdout.strip()
    timings["version_s"] = time.perf_counter() - started
    if project_version() not in version:
        raise SystemExit(f"FAIL: --version printed {version!r}, not {project_version()}")
    devices = run([cli, "devices"], env).stdout
    if not re.search(r"^cpu\b", devices, flags=re.M):
        raise SystemExit(f"FAIL: `devices` lists no cpu:\n{devices}")
    cache = work / "models"
    write_tiny_clip_pack(cache)
    photo = write_photo(work / "photo.jpg")
    entries = json.dumps({"clip": {"visual": {"modelName": PACK}}})
    started = time.perf_counter()
    proc = run([cli, "predict", "--cache-dir", str(cache), "--no-download", "--device", "cpu", "--entries", entries,
                "--image", str(photo)], env)  # fmt: skip
    timings["predict_s"] = time.perf_counter() - started
    answer = json.loads(proc.stdout)
    vector = json.loads(answer["clip"]) if isinstance(answer["clip"], str) else answer["clip"]
    if len(vector) != DIM or answer.get("imageWidth") != 320:
        raise SystemExit(f"FAIL: unexpected answer {proc.stdout[:500]}")
    print(f"ok: --version ({version}), devices, predict ({DIM}-d vector, {timings['predict_s']:.2f} s)")
    return timings


# --- the window, per OS ----------------------------------------------------------------------------------------
def _x11_window(pid: int, env: dict[str, str]) -> bool:
    tree = subprocess.run(["xwininfo", "-root", "-tree"], env=env, capture_output=True, text=True).stdout
    found = re.search(rf'(0x[0-9a-f]+) "{TITLE}[^"]*": \("immich-ml-desktop" "immich-ml-desktop"\)', tree)
    if not found:
        return False
    info = subprocess.run(["xwininfo", "-id", found.group(1)], env=env, capture_output=True, text=True).stdout
    return "Map State: IsViewable" in info


def _windows_window(pid: int, env: dict[str, str]) -> bool:
    import ctypes
    from ctypes import wintypes

    user32 = ctypes.windll.user32
    titles: list[str] = []

    @ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.HWND, wintypes.LPARAM)
    def each(hwnd, _):
        owner = wintypes.DWORD()
        user32.GetWindowThreadProcessId(hwnd, ctypes.byref(owner))
        if owner.value == pid and user32.IsWindowVisible(hwnd):
            buf = ctypes.create_unicode_buffer(256)
            user32.GetWindowTextW(hwnd, buf, 256)
            titles.append(buf.value)
        return True

    user32.EnumWindows(each, 0)
    return any(t.startswith(TITLE) for t in titles)


def _macos_window(pid: int, env: dict[str, str]) -> bool:
    """An on-screen window whose owner is `pid` (titles need the screen-recording permission; owners do not)."""
    import ctypes
    import ctypes.util

    cg = ctypes.CDLL(ctypes.util.find_library("CoreGraphics"))
    cf = ctypes.CDLL(ctypes.util.find_library("CoreFoundation"))
    cg.CGWindowListCopyWindowInfo.restype = ctypes.c_void_p
    cg.CGWindowListCopyWindowInfo.argtypes = [ctypes.c_uint32, ctypes.c_uint32]
    cf.CFArrayGetCount.restype = ctypes.c_long
    cf.CFArrayGetCount.argtypes = [ctypes.c_void_p]
    cf.CFArrayGetValueAtIndex.restype = ctypes.c_void_p
    cf.CFArrayGetValueAtIndex.argtypes = [ctypes.c_void_p, ctypes.c_long]
    cf.CFStringCreateWithCString.restype = ctypes.c_void_p
    cf.CFStringCreateWithCString.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32]
    cf.CFDictionaryGetValue.restype = ctypes.c_void_p
    cf.CFDictionaryGetValue.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    cf.CFNumberGetValue.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    cf.CFRelease.argtypes = [ctypes.c_void_p]
    on_screen_only, no_window = 1, 0
    windows = cg.CGWindowListCopyWindowInfo(on_screen_only, no_window)
    key = cf.CFStringCreateWithCString(None, b"kCGWindowOwnerPID", 0x08000100)  # UTF-8
    try:
        for i in range(cf.CFArrayGetCount(windows)):
            number = cf.CFDictionaryGetValue(cf.CFArrayGetValueAtIndex(windows, i), key)
            owner = ctypes.c_int32()
            if number and cf.CFNumberGetValue(number, 3, ctypes.byref(owner)) and owner.value == pid:  # SInt32
                return True
        return False
    finally:
        cf.CFRelease(key)
        cf.CFRelease(windows)


def check_window(app: str, env: dict[str, str], timeout: float = 120) -> float:
    """Seconds from start until the app's window is shown; fails if the app exits or no window comes."""
    found = {"linux": _x11_window, "win32": _windows_window, "darwin": _macos_window}.get(sys.platform, _x11_window)
    env = dict(env)
    if sys.platform.startswith("linux"):
        env["QT_QPA_PLATFORM"] = "xcb"  # X11 on $DISPLAY (CI: xvfb-run)
    else:
        env.pop("QT_QPA_PLATFORM", None)
    started = time.perf_counter()
    proc = subprocess.Popen([app], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        while not found(proc.pid, env):
            if proc.poll() is not None:
                raise SystemExit(f"FAIL: the window exited ({proc.returncode}):\n{proc.stdout.read().decode(errors='replace')[-3000:]}")
            if time.perf_counter() - started > timeout:
                raise SystemExit(f"FAIL: no window within {timeout:.0f} s")
            time.sleep(0.2)
        seconds = time.perf_counter() - started
        time.sleep(2)
        if proc.poll() is not None:
            raise SystemExit(f"FAIL: the window closed by itself ({proc.returncode})")
        print(f"ok: window shown after {seconds:.2f} s")
        return seconds
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", required=True, help="the app's executable (opens the window without a command)")
    parser.add_argument("--cli", help="the executable for commands, if another one (Windows: immich-ml-desktop-cli.exe)")
    parser.add_argument("--no-window", action="store_true", help="skip the window check")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="immich-ml-smoke-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "IMMICH_ML_DESKTOP_CONFIG_DIR": str(work / "config"),
               "IMMICH_ML_DESKTOP_CACHE_DIR": str(work / "cache"), "HF_HUB_OFFLINE": "1"}  # fmt: skip
        env.pop("QT_QPA_PLATFORM", None)  # CI sets offscreen for the tests; the window must really show
        timings = check_cli(args.cli or args.app, env, work)
        if not args.no_window:
            timings["window_s"] = check_window(args.app, env)
    print(json.dumps({k: round(v, 2) for k, v in timings.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
