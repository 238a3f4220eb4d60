"""Installers: the icons and .desktop file, build_installer.py's plans for every platform (dry runs, the
generated scripts), and — marked slow — a real Linux build whose frozen app is run."""

from __future__ import annotations

import configparser
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from PIL import Image

from immich_ml_desktop.app_resources import ICON_SIZES, icon_path, icon_paths

from conftest import CLIP_PACK, FACE_PACK, ROOT, photo

spec = importlib.util.spec_from_file_location("build_installer", ROOT / "build_installer.py")
build_installer = importlib.util.module_from_spec(spec)
sys.modules["build_installer"] = build_installer
spec.loader.exec_module(build_installer)

APP = "immich-ml-desktop"


# --- resources -------------------------------------------------------------------------------------------
def test_icon_path_picks_the_smallest_size_that_is_large_enough():
    assert icon_path(20).name == f"{APP}-24.png"
    assert icon_path(256).name == f"{APP}-256.png"
    assert icon_path(5000).name == f"{APP}-512.png"  # larger than all: the largest
    with Image.open(icon_path(48)) as im:
        assert im.size == (48, 48) and im.mode == "RGBA"


def test_every_icon_size_exists_and_has_its_size():
    paths = icon_paths()
    assert len(paths) == len(ICON_SIZES)
    for size, path in zip(ICON_SIZES, paths):
        with Image.open(path) as im:
            assert im.size == (size, size)


def test_windows_and_macos_icons_carry_the_sizes_the_platforms_ask_for():
    with Image.open(ROOT / "resources" / f"{APP}.ico") as ico:
        assert {(256, 256), (48, 48), (32, 32), (16, 16)} <= set(ico.info["sizes"])
    with Image.open(ROOT / "resources" / f"{APP}.icns") as icns:
        assert (512, 512) in {s[:2] for s in icns.info["sizes"]} or icns.size[0] >= 512


def test_desktop_file_is_a_valid_launcher_for_the_packaged_binary():
    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # keys are case-sensitive in .desktop files
    entry.read(ROOT / "resources" / f"{APP}.desktop", encoding="utf-8")
    d = entry["Desktop Entry"]
    assert d["Type"] == "Application" and d["Exec"] == APP and d["Icon"] == APP
    assert d["Terminal"] == "false" and d["Categories"].endswith(";")
    # the icon name must match the PNG names the .deb installs into hicolor
    assert icon_path(256).name.startswith(d["Icon"] + "-")


# --- dry runs: the plans for every platform ----------------------------------------------------------------
def _dry_run(capsys: pytest.CaptureFixture, *args: str) -> list[str]:
    assert build_installer.main([*args, "--dry-run"]) == 0
    return capsys.readouterr().out.splitlines()


def _commands(lines: list[str]) -> list[str]:
    return [line[2:] for line in lines if line.startswith("$ ")]


def test_windows_dry_run_freezes_then_compiles_the_inno_setup_script(capsys):
    lines = _dry_run(capsys, "--platform", "windows")
    cmds = _commands(lines)
    assert "PyInstaller" in cmds[0] and f"{APP}.spec" in cmds[0]
    iscc = cmds[-1]
    assert "iscc" in iscc.lower() and f"{APP}.iss" in iscc
    defines = dict(re.findall(r"/D(\w+)=(\S+)", iscc))
    assert defines["AppVersion"] == build_installer.project_version()
    assert Path(defines["SourceDir"]).parts[-3:] == ("windows-cpu", "pyinstaller-dist", APP)
    assert defines["OutputBaseName"] == f"{APP}-{defines['AppVersion']}-windows-x64-cpu-setup"
    assert Path(defines["IconFile"]).is_file()
    assert any("Inno Setup 6" in line for line in lines)  # states what the platform needs


def test_inno_setup_script_is_per_user_with_start_menu_entry_and_uninstaller(capsys):
    iss = (ROOT / "installer" / "windows" / f"{APP}.iss").read_text(encoding="utf-8")
    setup = dict(re.findall(r"^(\w+)=(.*)$", iss, flags=re.M))
    assert setup["PrivilegesRequired"] == "lowest"  # per-user: no administrator rights
    assert setup["DefaultDirName"].startswith("{autopf}")
    assert setup["Uninstallable"] == "yes" and "UninstallDisplayIcon" in setup
    assert re.search(r'^Name: "\{autoprograms\}\\\{#AppName\}"; Filename: "\{app\}\\\{#AppExe\}"', iss, flags=re.M)
    # every preprocessor variable used is defined in the script or passed by build_installer.py
    used = set(re.findall(r"\{#(\w+)\}", iss))
    defined = set(re.findall(r"^#define (\w+)", iss, flags=re.M)) | set(re.findall(r"^\s+#define (\w+)", iss, flags=re.M))
    passed = set(re.findall(r"/D(\w+)=", _commands(_dry_run(capsys, "--platform", "windows"))[-1]))
    assert used <= defined | passed, used - defined - passed
    # the spec makes the two executables the script refers to
    spec_text = (ROOT / "installer" / f"{APP}.spec").read_text(encoding="utf-8")
    assert 'name=f"{APP}-cli"' in spec_text and "immich-ml-desktop-cli.exe" in iss


def test_macos_dry_run_makes_a_dmg_holding_the_app_bundle(capsys):
    cmds = _commands(_dry_run(capsys, "--platform", "macos"))
    hdiutil = cmds[-1].split()
    assert Path(hdiutil[0]).name == "hdiutil" and hdiutil[1] == "create" and "UDZO" in hdiutil
    assert hdiutil[-1].endswith("-macos-" + build_installer.arch_name("macos") + "-cpu.dmg")
    spec_text = (ROOT / "installer" / f"{APP}.spec").read_text(encoding="utf-8")
    assert "BUNDLE(" in spec_text and f"{APP}.icns" in spec_text


def test_cuda_variant_with_venv_swaps_onnxruntime_for_the_gpu_build(capsys, tmp_path):
    cmds = _commands(_dry_run(capsys, "--platform", "linux", "--variant", "cuda", "--venv", str(tmp_path / "v")))
    uninstall = next(i for i, c in enumerate(cmds) if "uninstall -y onnxruntime" in c)
    gpu = next(i for i, c in enumerate(cmds) if build_installer.CUDA_RUNTIME in c)
    assert f'cuda = ["{build_installer.CUDA_RUNTIME}"]' in (ROOT / "pyproject.toml").read_text()
    freeze = next(i for i, c in enumerate(cmds) if "-m PyInstaller" in c)
    assert uninstall < gpu < freeze
    assert cmds[freeze].startswith(str(tmp_path / "v" / "bin" / "python"))
    deb = f"{APP}-cuda_{build_installer.project_version()}_{build_installer.arch_name('linux')}.deb"
    assert any(c.endswith(deb) for c in cmds)


def test_linux_dry_run_writes_a_debian_control_file_and_appimage_metadata(capsys):
    cmds = _commands(_dry_run(capsys, "--platform", "linux", "--variant", "cuda"))
    assert any(c.split()[0].endswith("dpkg-deb") for c in cmds)
    work = ROOT / "build" / "installer" / "linux-cuda"
    fields = dict(
        line.split(": ", 1) for line in (work / "deb" / "DEBIAN" / "control").read_text().splitlines() if ": " in line
    )
    assert fields["Package"] == f"{APP}-cuda" and fields["Conflicts"] == APP and fields["Provides"] == APP
    assert fields["Version"] == build_installer.project_version() and "libxcb-cursor0" in fields["Depends"]
    apprun = work / f"{APP}.AppDir" / "AppRun"
    assert os.access(apprun, os.X_OK) and f"usr/lib/{APP}/{APP}" in apprun.read_text()


def test_wrong_runtime_for_the_variant_is_refused_with_the_fix():
    """This venv has the CPU onnxruntime: a CUDA build from it must stop and say how to get one."""
    pytest.importorskip("PyInstaller", reason="PyInstaller is in the `installer` extra, not the test set-up")
    build = build_installer.InstallerBuild("linux", "cuda", dry_run=False)
    with pytest.raises(build_installer.BuildError, match=r"onnxruntime-gpu.*--venv"):
        build.prepare_python()


def test_building_for_another_platform_is_refused_outside_a_dry_run():
    other = next(p for p in build_installer.PLATFORMS if p != build_installer.this_platform())
    with pytest.raises(build_installer.BuildError, match="does not cross-compile"):
        build_installer.InstallerBuild(other, "cpu", dry_run=False).build()


def test_cuda_variant_for_macos_is_refused_even_in_a_dry_run():
    with pytest.raises(build_installer.BuildError, match="macOS has no CUDA"):
        build_installer.InstallerBuild("macos", "cuda", dry_run=True).build()


def test_a_missing_packaging_tool_stops_the_build_with_where_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    build = build_installer.InstallerBuild(build_installer.this_platform(), "cpu", dry_run=False)
    with pytest.raises(build_installer.BuildError, match="not on PATH: install the dpkg"):
        build.need_tool("dpkg-deb", "install the dpkg package (Debian/Ubuntu have it).")


# --- the real Linux build (minutes) ------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def linux_build() -> dict:
    if sys.platform != "linux":
        pytest.skip("the real build test runs on Linux (CI builds the other platforms with build_installer.py)")
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "build_installer.py")], cwd=ROOT, capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((ROOT / "build" / "installer" / "linux-cpu" / "build-report.json").read_text())
    report["wall_s"] = time.perf_counter() - started
    report["stdout"] = proc.stdout
    report["binary"] = ROOT / "build" / "installer" / "linux-cpu" / "pyinstaller-dist" / APP / APP
    return report


def _frozen_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "IMMICH_ML_DESKTOP_CONFIG_DIR": str(tmp_path / "config"),
        "IMMICH_ML_DESKTOP_CACHE_DIR": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
    }


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_linux_build_produces_deb_and_tarball_without_weights_or_test_data(linux_build):
    artifacts = {Path(p).name: size for p, size in linux_build["artifacts"].items()}
    version = linux_build["version"]
    deb = ROOT / "dist" / f"{APP}_{version}_amd64.deb"
    tarball = ROOT / "dist" / f"{APP}-{version}-linux-amd64-cpu.tar.gz"
    assert artifacts[deb.name] > 50e6 and artifacts[tarball.name] > 50e6
    if shutil.which("appimagetool") is None:
        assert "AppImage skipped: appimagetool is not on PATH" in linux_build["stdout"]

    contents = subprocess.run(["dpkg-deb", "--contents", deb], capture_output=True, text=True, check=True).stdout
    for needed in (f"./opt/{APP}/{APP}", f"./usr/bin/{APP} -> /opt/{APP}/{APP}",
                   f"./usr/share/applications/{APP}.desktop", f"./usr/share/icons/hicolor/256x256/apps/{APP}.png"):  # fmt: skip
        assert needed in contents
    info = subprocess.run(["dpkg-deb", "--field", deb, "Package", "Architecture"], capture_output=True, text=True).stdout
    assert info.split() == ["Package:", APP, "Architecture:", "amd64"]

    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    top = f"{APP}-{version}-linux-amd64-cpu"
    assert f"{top}/{APP}" in names and f"{top}/{APP}.desktop" in names and f"{top}/{APP}.png" in names
    for name in names + contents.splitlines():
        assert not name.endswith((".onnx", ".safetensors", ".pt")), name
        assert "/tests/" not in name and "/shared/" not in name, name
    # trimmed: none of the big libraries the app does not use
    bundled = {Path(n).parts[2] for n in names if n.count("/") >= 2 and n.startswith(f"{top}/_internal/")}
    assert not bundled & {"matplotlib", "torch", "albumentations", "tkinter", "pandas", "IPython"}
    assert linux_build["frozen_bytes"] < 900e6


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_frozen_app_lists_devices_and_predicts_with_the_shared_models(linux_build, models_dir, tmp_path):
    env = _frozen_env(tmp_path)
    started = time.perf_counter()
    devices = subprocess.run([linux_build["binary"], "devices"], capture_output=True, text=True, env=env, timeout=120)
    startup = time.perf_counter() - started
    assert devices.returncode == 0, devices.stderr
    assert re.search(r"^cpu\s+ONNX Runtime", devices.stdout, flags=re.M)
    assert "openvino:CPU" in devices.stdout  # OpenVINO's CPU plugin was collected and loads
    print(f"frozen `devices`: {startup:.2f} s")

    entries = {
        "clip": {"visual": {"modelName": CLIP_PACK}},
        "facial-recognition": {"detection": {"modelName": FACE_PACK, "options": {"minScore": 0.5}},
                               "recognition": {"modelName": FACE_PACK}},
    }  # fmt: skip
    image = photo("insightface/t1.jpg")  # 6 faces
    for device in ("cpu", "openvino:CPU"):
        proc = subprocess.run(
            [linux_build["binary"], "predict", "--cache-dir", str(models_dir), "--device", device,
             "--entries", json.dumps(entries), "--image", str(image)],
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "falling back" not in proc.stderr, proc.stderr[-2000:]  # the runtime really ran on `device`
        answer = json.loads(proc.stdout)
        assert len(json.loads(answer["clip"])) > 0
        assert answer["imageWidth"] == 1280 and len(answer["facial-recognition"]) == 6


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_frozen_app_reads_text_like_the_source_checkout(linux_build, tmp_path):
    """OCR weights are not bundled: a cache made from the RapidOCR wheel's own files stands in for a download."""
    wheel_models = Path(importlib.util.find_spec("rapidocr").origin).parent / "models"
    det, rec = wheel_models / "PP-OCRv6_det_small.onnx", wheel_models / "PP-OCRv6_rec_small.onnx"
    if not (det.is_file() and rec.is_file()):
        pytest.skip("this RapidOCR wheel ships no PP-OCRv6 small models")
    cache = tmp_path / "models"
    for stage, source in (("detection", det), ("recognition", rec)):
        (cache / "ocr" / "PP-OCRv6_small" / stage).mkdir(parents=True)
        shutil.copy(source, cache / "ocr" / "PP-OCRv6_small" / stage / "model.onnx")
    entries = json.dumps({"ocr": {"detection": {"modelName": "PP-OCRv6_small"}, "recognition": {"modelName": "PP-OCRv6_small"}}})
    args = ["predict", "--cache-dir", str(cache), "--no-download", "--device", "cpu", "--entries", entries,
            "--image", str(photo("immich_test_assets/albums/text/book-beside-flowers.jpg"))]  # fmt: skip
    texts = []
    for program in ([linux_build["binary"]], [sys.executable, "-m", "immich_ml_desktop"]):
        proc = subprocess.run([*program, *args], capture_output=True, text=True, env=_frozen_env(tmp_path), timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        texts.append(json.loads(proc.stdout)["ocr"]["text"])
    assert len(texts[0]) > 5 and texts[0] == texts[1]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_frozen_app_serves_ping(linux_build, models_dir, tmp_path):
    if not (ROOT / "immich_ml_desktop" / "cli" / "serve.py").exists():
        pytest.skip("`serve` is not in this checkout yet (immich_ml_desktop/cli/serve.py)")
    import httpx

    port = _free_port()
    server = subprocess.Popen(
        [linux_build["binary"], "serve", "--host", "127.0.0.1", "--port", str(port), "--cache-dir", str(models_dir)],
        env=_frozen_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stdout.read().decode(errors="replace")[-2000:]
                assert time.monotonic() < deadline, "the frozen server did not answer /ping within 60 s"
                time.sleep(0.3)
        assert r.status_code == 200 and r.text == "pong"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_frozen_app_opens_its_window_on_a_virtual_display(linux_build, tmp_path):
    if not (ROOT / "immich_ml_desktop" / "ui" / "app.py").exists():
        pytest.skip("the window (immich_ml_desktop/ui/app.py) is not in this checkout yet")
    for tool in ("Xvfb", "xwininfo", "import"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install xvfb x11-utils imagemagick)")
    shot = tmp_path / "window.png"
    seconds = window_startup(linux_build["binary"], _frozen_env(tmp_path), shot)
    print(f"frozen app to a visible window: {seconds:.2f} s")
    with Image.open(shot) as im:
        colours = im.convert("RGB").resize((64, 48)).getcolors(64 * 48)
    assert colours is not None and len(colours) > 5  # something was drawn, not a blank screen


# The main window in `xwininfo -tree`: its title, and the WM_CLASS the .desktop file's StartupWMClass names.
WINDOW = re.compile(r'(0x[0-9a-f]+) "Immich ML Desktop[^"]*": \("immich-ml-desktop" "immich-ml-desktop"\)')


def window_startup(binary: Path, env: dict[str, str], screenshot: Path, display: int = 97) -> float:
    """Starts the frozen app on a fresh Xvfb display; seconds until its window is mapped; saves a screenshot."""
    xvfb = subprocess.Popen(["Xvfb", f":{display}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"])
    env = {**env, "DISPLAY": f":{display}", "QT_QPA_PLATFORM": "xcb"}
    app = None
    try:
        time.sleep(1.0)
        started = time.perf_counter()
        app = subprocess.Popen([binary], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        while True:
            tree = subprocess.run(["xwininfo", "-root", "-tree"], env=env, capture_output=True, text=True).stdout
            if WINDOW.search(tree) and "Map State: IsViewable" in _window_state(tree, env):
                seconds = time.perf_counter() - started
                break
            assert app.poll() is None, app.stdout.read().decode(errors="replace")[-3000:]
            assert time.perf_counter() - started < 120, "no window within 120 s"
            time.sleep(0.1)
        time.sleep(2.0)  # let it paint its first frame before the screenshot
        subprocess.run(["import", "-window", "root", str(screenshot)], env=env, check=True, timeout=60)
        return seconds
    finally:
        if app is not None:
            app.terminate()
            app.wait(timeout=30)
        xvfb.terminate()
        xvfb.wait(timeout=30)


def _window_state(tree: str, env: dict[str, str]) -> str:
    window_id = WINDOW.search(tree).group(1)
    return subprocess.run(["xwininfo", "-id", window_id], env=env, capture_output=True, text=True).stdout
