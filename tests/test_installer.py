"""Installers: the icons and .desktop file, build_installer.py's plans for every platform (dry runs, the
generated scripts), and — marked slow — a real Linux build whose frozen app is run."""

from __future__ import annotations

import configparser
import contextlib
import importlib.util
import json
import os
import re
import shlex
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

sys.path.insert(0, str(ROOT / "installer"))
import system_libraries

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
    assert fields["Version"] == build_installer.project_version()
    depends = [d.split(" (")[0] for d in fields["Depends"].split(", ")]
    assert depends[0] == "libc6" and set(depends[1:]) == set(system_libraries.packages())
    assert {"libwayland-cursor0", "libwayland-egl1", "libxcb1", "libgl1", "libegl1"} <= set(depends)
    appdir = work / f"{APP}.AppDir"
    apprun = appdir / "AppRun"
    assert os.access(apprun, os.X_OK) and f"usr/lib/{APP}/{APP}" in apprun.read_text()
    assert (appdir / "usr/lib/system/SONAMES").read_text().split() == list(system_libraries.all_required())
    assert '<dir prefix="relative">.</dir>' in (appdir / "usr/share/fonts/fonts.conf").read_text()


def test_tarball_readme_lists_every_library_and_the_apt_command(capsys):
    _dry_run(capsys, "--platform", "linux")
    readme = (ROOT / "build" / "installer" / "linux-cpu" / "README.txt").read_text()
    for soname, package in system_libraries.all_required().items():
        assert re.search(rf"^  {re.escape(soname)} +{package}$", readme, flags=re.M), soname
    assert system_libraries.apt_command() in readme and "./install-desktop-entry.sh --uninstall" in readme
    assert "{" not in readme  # every placeholder filled


def test_window_problem_names_the_missing_library_and_its_package_in_one_line(monkeypatch):
    """A real dlopen of a library that does not exist (and of libc, which does)."""
    monkeypatch.setattr(system_libraries, "ANY_PLATFORM", {"libc.so.6": "libc6", "libnot-there-20.so.7": "libnot-there7"})
    problem = system_libraries.window_problem({"QT_QPA_PLATFORM": "offscreen"})
    assert problem is not None and "\n" not in problem
    assert "libnot-there-20.so.7" in problem and "`sudo apt-get install libnot-there7`" in problem
    assert "libc.so.6" not in problem
    monkeypatch.setattr(system_libraries, "ANY_PLATFORM", {"libc.so.6": "libc6"})
    assert system_libraries.window_problem({"QT_QPA_PLATFORM": "offscreen"}) is None
    # Wayland's libraries are asked for only when Wayland is chosen
    monkeypatch.setattr(system_libraries, "WAYLAND", {"libnot-there-wl.so.0": "libnot-there-wl0"})
    assert "libnot-there-wl0" in system_libraries.window_problem({"QT_QPA_PLATFORM": "wayland"})
    assert system_libraries.window_problem({"QT_QPA_PLATFORM": "offscreen"}) is None


def _fake_appdir(tmp_path: Path, sonames: list[str]) -> Path:
    appdir = tmp_path / "AppDir"
    appdir.mkdir()
    shutil.copy(ROOT / "installer" / "linux" / "AppRun", appdir / "AppRun")
    (appdir / "usr/lib/system").mkdir(parents=True)
    (appdir / "usr/lib/system/SONAMES").write_text("\n".join(sonames) + "\n")
    binary = appdir / "usr" / "lib" / APP / APP
    binary.parent.mkdir(parents=True)
    binary.write_text('#!/bin/sh\necho "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"\necho "FONTCONFIG_FILE=$FONTCONFIG_FILE"\necho "ARGS=$*"\n')
    binary.chmod(0o755)
    return appdir


@pytest.mark.skipif(shutil.which("ldconfig") is None and not Path("/sbin/ldconfig").exists(), reason="needs glibc's ldconfig")
def test_apprun_uses_the_bundled_libraries_only_where_the_system_lacks_one(tmp_path):
    appdir = _fake_appdir(tmp_path, ["libc.so.6", "libnot-there-20.so.7"])
    env = {"PATH": os.environ["PATH"] + ":/sbin:/usr/sbin", "FONTCONFIG_FILE": "/x/fonts.conf"}
    out = subprocess.run([appdir / "AppRun", "a b"], capture_output=True, text=True, env=env, check=True).stdout
    assert f"LD_LIBRARY_PATH={appdir}/usr/lib/system\n" in out and "ARGS=a b" in out
    assert "FONTCONFIG_FILE=/x/fonts.conf" in out  # the user's own choice is kept
    (appdir / "usr/lib/system/SONAMES").write_text("libc.so.6\n")
    out = subprocess.run([appdir / "AppRun"], capture_output=True, text=True, env=env, check=True).stdout
    assert "LD_LIBRARY_PATH=\n" in out  # the system has every one: its own are used


@pytest.mark.skipif(bool(build_installer.InstallerBuild("linux", "cpu", dry_run=True).runtime_build_missing()),
                    reason="building the AppImage runtime needs gcc, squashfs-tools, libsquashfuse-dev, libfuse3-dev")
def test_appimage_runtime_extracts_and_runs_its_image(tmp_path):
    """The runtime built from installer/linux/appimage-runtime.c, with a tiny AppDir: extract-and-run passes the
    arguments and the exit status through and deletes its copy; --appimage-extract unpacks files and links."""
    appdir = _fake_appdir(tmp_path, ["libc.so.6"])
    (appdir / "usr/lib/system/link").symlink_to("SONAMES")
    runtime = tmp_path / "runtime"
    build = build_installer.InstallerBuild("linux", "cpu", dry_run=False)
    build.run(["sh", "-c", build_installer.runtime_compile_command(runtime)])
    image = tmp_path / "image.squashfs"
    subprocess.run(["mksquashfs", appdir, image, "-root-owned", "-noappend", "-comp", "zstd", "-quiet"], check=True)
    app = tmp_path / "Tiny.AppImage"
    build_installer.assemble_appimage(runtime, image, app)
    assert app.read_bytes()[8:11] == b"AI\x02"
    offset = int(subprocess.run([app, "--appimage-offset"], capture_output=True, text=True, check=True).stdout)
    assert offset == runtime.stat().st_size
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "APPIMAGE_EXTRACT_AND_RUN": "1", "TMPDIR": str(scratch)}
    proc = subprocess.run([app, "x", "y z"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "ARGS=x y z" in proc.stdout, proc.stderr
    assert list(scratch.iterdir()) == []  # the extracted copy is gone
    out = tmp_path / "unpacked"
    subprocess.run([app, "--appimage-extract", str(out)], check=True, capture_output=True)
    assert (out / "usr/lib/system/link").readlink() == Path("SONAMES") and os.access(out / "AppRun", os.X_OK)


def test_wrong_runtime_for_the_variant_is_refused_with_the_fix():
    """A venv with the CPU onnxruntime (the build venv the slow lane makes, or this one if it has PyInstaller):
    a CUDA build from it must stop and say how to get one."""
    python = ROOT / "build" / "venv-cpu" / "bin" / "python"
    if not python.exists():
        pytest.importorskip("PyInstaller", reason="no build venv yet (the slow lane makes build/venv-cpu), and no PyInstaller here")
        python = Path(sys.executable)
    build = build_installer.InstallerBuild("linux", "cuda", dry_run=False, python=str(python))
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


BUILD_VENV = ROOT / "build" / "venv-cpu"


@pytest.fixture(scope="module")
def linux_build() -> dict:
    """Builds the Linux installers as CI does: in their own venv (build/venv-cpu, made on the first run), so the
    lane needs no PyInstaller in the test venv. IMMICH_ML_REUSE_BUILD=1 takes the last build in dist/ instead."""
    if sys.platform != "linux":
        pytest.skip("the real build test runs on Linux (CI builds the other platforms with build_installer.py)")
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    report_file = ROOT / "build" / "installer" / "linux-cpu" / "build-report.json"
    started = time.perf_counter()
    if os.environ.get("IMMICH_ML_REUSE_BUILD") == "1" and report_file.exists():
        stdout = "(reused the last build)"
    else:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "build_installer.py"), "--venv", str(BUILD_VENV)],
            cwd=ROOT, capture_output=True, text=True, timeout=2400,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        stdout = proc.stdout
    report = json.loads(report_file.read_text())
    report["wall_s"] = time.perf_counter() - started
    report["stdout"] = stdout
    report["binary"] = ROOT / "build" / "installer" / "linux-cpu" / "pyinstaller-dist" / APP / APP
    print(f"build: {report['wall_s']:.0f} s; " + ", ".join(f"{Path(p).name} {n / 1e6:.0f} MB" for p, n in report["artifacts"].items()))
    return report


def _frozen_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "IMMICH_ML_DESKTOP_CONFIG_DIR": str(tmp_path / "config"),
        "IMMICH_ML_DESKTOP_CACHE_DIR": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
    }


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_linux_build_produces_deb_tarball_and_appimage_without_weights_or_test_data(linux_build):
    artifacts = {Path(p).name: size for p, size in linux_build["artifacts"].items()}
    version = linux_build["version"]
    deb = ROOT / "dist" / f"{APP}_{version}_amd64.deb"
    tarball = ROOT / "dist" / f"{APP}-{version}-linux-amd64-cpu.tar.gz"
    appimage = ROOT / "dist" / f"{APP}-{version}-linux-amd64-cpu.AppImage"
    assert artifacts[deb.name] > 50e6 and artifacts[tarball.name] > 50e6 and artifacts[appimage.name] > 50e6
    with open(appimage, "rb") as f:
        assert f.read(11)[8:] == b"AI\x02"  # AppImage type 2

    contents = subprocess.run(["dpkg-deb", "--contents", deb], capture_output=True, text=True, check=True).stdout
    for needed in (f"./usr/lib/{APP}/{APP}", f"./usr/bin/{APP} -> ../lib/{APP}/{APP}",
                   f"./usr/share/applications/{APP}.desktop", f"./usr/share/icons/hicolor/256x256/apps/{APP}.png"):  # fmt: skip
        assert needed in contents
    # the package owns only its own paths: no /opt (dpkg would remove an empty /opt with the package)
    assert not re.search(r" \./opt/", contents)
    info = subprocess.run(["dpkg-deb", "--field", deb, "Package", "Architecture"], capture_output=True, text=True).stdout
    assert info.split() == ["Package:", APP, "Architecture:", "amd64"]

    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    top = f"{APP}-{version}-linux-amd64-cpu"
    for name in (APP, f"{APP}.desktop", f"{APP}.png", "README.txt", "install-desktop-entry.sh"):
        assert f"{top}/{name}" in names, name
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
    _need_display_tools()
    shot = tmp_path / "window.png"
    with virtual_display(97) as display:
        seconds, _ = window_startup([str(linux_build["binary"])], {**_frozen_env(tmp_path), "DISPLAY": display}, shot)
    print(f"frozen app to a visible window: {seconds:.2f} s")
    with Image.open(shot) as im:
        colours = im.convert("RGB").resize((64, 48)).getcolors(64 * 48)
    assert colours is not None and len(colours) > 5  # something was drawn, not a blank screen


# The main window in `xwininfo -tree`: its title, and the WM_CLASS the .desktop file's StartupWMClass names.
WINDOW = re.compile(r'(0x[0-9a-f]+) "Immich ML Desktop[^"]*": \("immich-ml-desktop" "immich-ml-desktop"\)')


def _need_display_tools() -> None:
    for tool in ("Xvfb", "xwininfo", "import"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install xvfb x11-utils imagemagick)")


@contextlib.contextmanager
def virtual_display(number: int):
    """An Xvfb display for the test (unix socket only, no TCP); its abstract socket is reachable from a chroot."""
    xvfb = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["xwininfo", "-root"], env={**os.environ, "DISPLAY": f":{number}"}, capture_output=True).returncode:
            assert xvfb.poll() is None and time.monotonic() < deadline, "Xvfb did not start"
            time.sleep(0.2)
        yield f":{number}"
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=30)


def window_startup(argv: list[str], env: dict[str, str], screenshot: Path) -> tuple[float, str]:
    """Starts the app (`argv`) on env's DISPLAY; seconds until its window is mapped, and what it printed.
    Saves a screenshot of the display."""
    display = {**os.environ, "DISPLAY": env["DISPLAY"]}  # xwininfo and import run here, on the host
    env = {**env, "QT_QPA_PLATFORM": "xcb"}
    started = time.perf_counter()
    app = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        while True:
            tree = subprocess.run(["xwininfo", "-root", "-tree"], env=display, capture_output=True, text=True).stdout
            if WINDOW.search(tree) and "Map State: IsViewable" in _window_state(tree, display):
                seconds = time.perf_counter() - started
                break
            assert app.poll() is None, app.stdout.read().decode(errors="replace")[-3000:]
            assert time.perf_counter() - started < 180, "no window within 180 s"
            time.sleep(0.1)
        time.sleep(2.0)  # let it paint its first frame before the screenshot
        subprocess.run(["import", "-window", "root", str(screenshot)], env=display, check=True, timeout=60)
        assert app.poll() is None, "the window closed by itself"
    finally:
        if app.poll() is None:
            app.terminate()
        try:
            out = app.communicate(timeout=60)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            app.kill()
            out = app.communicate()[0].decode(errors="replace")
    return seconds, out


def _window_state(tree: str, env: dict[str, str]) -> str:
    window_id = WINDOW.search(tree).group(1)
    return subprocess.run(["xwininfo", "-id", window_id], env=env, capture_output=True, text=True).stdout


# --- each Linux artifact on a fresh minimal Debian 12 (mmdebstrap, root; minutes) ---------------------------

# What a fresh root's state is compared on: everything but the kernel's, the package manager's own records and
# logs, and the homes and /tmp (checked on their own). dpkg's package list is compared separately.
SNAPSHOT_SKIP = ("proc", "dev", "sys", "run", "tmp", "root", "home", "var/cache", "var/lib/apt", "var/lib/dpkg", "var/log")
TESTER = "tester"


class FreshRoot:
    """A minimal Debian 12 (`mmdebstrap --variant=minbase bookworm`) and a way to run commands in it.

    Commands run through `unshare --mount` + chroot: the mounts (proc, dev, the test data read-only) live in a
    namespace of their own and vanish with it. Test data: the model packs at /mnt/models, photos at /mnt/photos,
    the artifacts at /mnt/dist. DISPLAY reaches the host's Xvfb through its abstract socket."""

    def __init__(self, path: Path):
        self.path = path

    def run(self, command: str, user: str = "root", env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 900, popen: bool = False):  # fmt: skip
        home = "/root" if user == "root" else f"/home/{user}"
        variables = {"HOME": home, "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8",
                     "DEBIAN_FRONTEND": "noninteractive", "HF_HUB_OFFLINE": "1", **(env or {})}  # fmt: skip
        binds = [(MODELS_SRC, "mnt/models"), (PHOTOS_SRC, "mnt/photos"), (ROOT / "dist", "mnt/dist")]
        mounts = " && ".join(
            [f"mount -t proc proc {self.path}/proc", f"mount --rbind /dev {self.path}/dev"]
            + [f"mount --bind -o ro {src} {self.path}/{dst}" for src, dst in binds]
        )
        # a started program replaces every shell on the way (exec), so that stopping the Popen stops the app itself
        command = f"exec {command}" if popen else command
        inner = f"env -i {' '.join(f'{k}={shlex.quote(v)}' for k, v in variables.items())} sh -c {shlex.quote(command)}"
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                f"{mounts} && cd {self.path} && exec chroot --userspec={user}:{user} {self.path} {inner}"]  # fmt: skip
        if popen:
            return argv
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc

    def snapshot(self) -> dict[str, tuple]:
        """path -> (type, mode, size or link target) of everything outside SNAPSHOT_SKIP."""
        state = {}
        for dirpath, dirnames, filenames in os.walk(self.path):
            rel = os.path.relpath(dirpath, self.path)
            dirnames[:] = [d for d in dirnames if os.path.normpath(os.path.join(rel, d)) not in SNAPSHOT_SKIP]
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                kind = "l" if os.path.islink(path) else "d" if os.path.isdir(path) else "f"
                detail = os.readlink(path) if kind == "l" else st.st_size if kind == "f" else None
                state[os.path.normpath(os.path.join(rel, name))] = (kind, st.st_mode, detail)
        state["<packages>"] = tuple(self.run("dpkg-query -W -f '${Package} ${Version}\\n'").stdout.split("\n"))
        return state

    def tmp_leftovers(self) -> list[str]:
        """What an AppImage leaves in /tmp if it does not clean up (its mount folder or extracted copy)."""
        return sorted(n for n in os.listdir(self.path / "tmp") if n.startswith((".mount_", "appimage_extracted_")))


MODELS_SRC = Path(os.environ.get("IMMICH_ML_SHARED", ROOT.parent / "shared")) / "models"
PHOTOS_SRC = MODELS_SRC.parent / "photos"


def _diff(before: dict, after: dict) -> list[str]:
    changed = [p for p in before.keys() | after.keys() if before.get(p) != after.get(p)]
    return sorted(f"{p}: {before.get(p)} -> {after.get(p)}" for p in changed)[:20]


@pytest.fixture(scope="module")
def fresh_root(tmp_path_factory, linux_build) -> FreshRoot:
    if os.geteuid() != 0:
        pytest.skip("a fresh root filesystem needs root (mmdebstrap, chroot, mounts)")
    for tool in ("mmdebstrap", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install mmdebstrap)")
    _need_display_tools()
    if not (MODELS_SRC / "clip" / CLIP_PACK).exists():
        pytest.skip(f"test data {MODELS_SRC} is absent (set IMMICH_ML_SHARED)")
    path = tmp_path_factory.mktemp("fresh") / "bookworm"
    started = time.perf_counter()
    proc = subprocess.run(["mmdebstrap", "--variant=minbase", "--quiet", "bookworm", str(path)],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"mmdebstrap --variant=minbase bookworm: {time.perf_counter() - started:.0f} s")
    root = FreshRoot(path)
    for mountpoint in ("mnt/models", "mnt/photos", "mnt/dist"):
        (path / mountpoint).mkdir(parents=True)
    root.run(f"useradd --create-home --shell /bin/sh {TESTER} && apt-get update -q")
    yield root
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


PREDICT = json.dumps({
    "clip": {"visual": {"modelName": CLIP_PACK}},
    "facial-recognition": {"detection": {"modelName": FACE_PACK, "options": {"minScore": 0.5}},
                           "recognition": {"modelName": FACE_PACK}},
})  # fmt: skip


def _cli_works(root: FreshRoot, program: str, user: str = TESTER) -> dict[str, float]:
    """--version, devices and a predict on the shared packs (6 faces on t1.jpg), run as a user would."""
    timings = {}
    started = time.perf_counter()
    version = root.run(f"{program} --version", user=user).stdout
    timings["version_s"] = time.perf_counter() - started
    assert build_installer.project_version() in version
    assert re.search(r"^cpu\s+ONNX Runtime", root.run(f"{program} devices", user=user).stdout, flags=re.M)
    started = time.perf_counter()
    out = root.run(f"{program} predict --cache-dir /mnt/models --no-download --device cpu --entries '{PREDICT}' "
                   "--image /mnt/photos/insightface/t1.jpg", user=user).stdout  # fmt: skip
    timings["predict_s"] = time.perf_counter() - started
    answer = json.loads(out)
    assert len(json.loads(answer["clip"])) > 0 and len(answer["facial-recognition"]) == 6
    return timings


def _window_works(root: FreshRoot, program: str, display: str, shot: Path, user: str = TESTER, env=None) -> float:
    argv = root.run(program, user=user, env={"DISPLAY": display, "QT_QPA_PLATFORM": "xcb", **(env or {})}, popen=True)
    seconds, out = window_startup(argv, {"DISPLAY": display}, shot)
    assert "Traceback" not in out and "QFontDatabase" not in out, out[-2000:]  # no crash, and fonts were found
    with Image.open(shot) as im:
        colours = im.convert("RGB").resize((64, 48)).getcolors(64 * 48)
    assert colours is not None and len(colours) > 5
    return seconds


def _missing_libraries(root: FreshRoot, folder: str) -> set[str]:
    """Sonames that ELF files under `folder` need and the root cannot resolve (with the app's own folder first)."""
    script = (f"cd {folder} && find . -type f \\( -name '*.so*' -o -perm -u+x \\) | while read f; do "
              "head -c4 \"$f\" | grep -q ELF && LD_LIBRARY_PATH=$PWD/_internal ldd \"$f\" 2>/dev/null | grep 'not found'; "
              "done; true")  # fmt: skip
    return {line.split()[0] for line in root.run(script).stdout.splitlines() if line.strip()}


REPORT: dict[str, dict] = {}


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_fresh_debian_tarball_names_its_packages_then_works_and_leaves_nothing(fresh_root, linux_build, tmp_path):
    root, version = fresh_root, linux_build["version"]
    top = f"{APP}-{version}-linux-amd64-cpu"
    before = root.snapshot()
    # exactly the libraries system_libraries.py lists are missing on a fresh system (plus the optional ones)
    root.run(f"tar -xzf /mnt/dist/{top}.tar.gz -C /home/{TESTER}", user=TESTER)
    missing = _missing_libraries(root, f"/home/{TESTER}/{top}")
    assert missing - set(system_libraries.OPTIONAL) == set(system_libraries.all_required()), missing
    program = f"/home/{TESTER}/{top}/{APP}"
    timings = _cli_works(root, program)

    with virtual_display(98) as display:
        refused = root.run(program, user=TESTER, env={"DISPLAY": display}, check=False)
        assert refused.returncode == 3 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
        line = refused.stderr.strip()
        assert "\n" not in line and line.startswith("error: the window needs"), line
        packages = re.search(r"`sudo apt-get install ([^`]+)`", line).group(1).split()
        assert {"libgl1", "libegl1", "libxcb1", "fonts-dejavu-core"} <= set(packages), packages
        root.run(f"apt-get install -y -q {' '.join(packages)}")  # what the line said, and nothing else
        timings["window_s"] = _window_works(root, program, display, tmp_path / "tarball.png")

    # the menu entry the install script writes launches the unpacked binary
    root.run(f"/home/{TESTER}/{top}/install-desktop-entry.sh", user=TESTER)
    entry = (root.path / "home" / TESTER / ".local/share/applications" / f"{APP}.desktop").read_text()
    assert f'Exec="{program}"' in entry
    root.run(f"/home/{TESTER}/{top}/install-desktop-entry.sh --uninstall", user=TESTER)
    assert not (root.path / "home" / TESTER / ".local/share/applications" / f"{APP}.desktop").exists()

    root.run(f"apt-get purge -y -q --autoremove {' '.join(packages)} && rm -r /home/{TESTER}/{top}")
    assert _diff(before, root.snapshot()) == []
    assert root.tmp_leftovers() == []
    REPORT["tar.gz"] = {**timings, "MB": linux_build["artifacts"][f"dist/{top}.tar.gz"] / 1e6}


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_fresh_debian_deb_installs_its_dependencies_works_and_removes_cleanly(fresh_root, linux_build, tmp_path):
    root, version = fresh_root, linux_build["version"]
    deb = f"{APP}_{version}_amd64.deb"
    before = root.snapshot()
    started = time.perf_counter()
    root.run(f"apt-get install -y -q /mnt/dist/{deb}")
    timings = {"install_s": time.perf_counter() - started}
    # every library any part of the app links resolves, Wayland's included, but for the optional ones
    assert _missing_libraries(root, f"/usr/lib/{APP}") <= set(system_libraries.OPTIONAL)
    timings |= _cli_works(root, APP)
    with virtual_display(98) as display:
        timings["window_s"] = _window_works(root, APP, display, tmp_path / "deb.png")
    # Wayland: the platform plugin loads (and then finds no compositor here) instead of failing to load
    # (no compositor runs here: a Wayland session itself is not tested)
    wayland_env = {"QT_QPA_PLATFORM": "wayland", "XDG_RUNTIME_DIR": "/tmp", "QT_DEBUG_PLUGINS": "1"}
    wayland = root.run(APP, user=TESTER, env=wayland_env, check=False)
    assert "Failed to create wl_display" in wayland.stderr, wayland.stderr[-2000:]
    unloadable = [ln for ln in wayland.stderr.splitlines() if "cannot open shared object" in ln and "wayland" in ln.lower()]
    assert unloadable == [], unloadable

    started = time.perf_counter()
    root.run(f"apt-get purge -y -q --autoremove {APP}")
    timings["remove_s"] = time.perf_counter() - started
    assert (root.path / "opt").is_dir()  # the package never owned /opt
    assert _diff(before, root.snapshot()) == []
    REPORT[".deb"] = {**timings, "MB": linux_build["artifacts"][f"dist/{deb}"] / 1e6}


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_fresh_debian_appimage_runs_by_itself_and_leaves_nothing(fresh_root, linux_build, tmp_path):
    root, version = fresh_root, linux_build["version"]
    name = f"{APP}-{version}-linux-amd64-cpu.AppImage"
    before = root.snapshot()
    root.run(f"cp /mnt/dist/{name} /home/{TESTER}/ && chmod +x /home/{TESTER}/{name}", user=TESTER)
    program = f"/home/{TESTER}/{name}"
    # a user without FUSE (no fuse3 on a minimal system): one line, then it runs from an extracted copy
    started = time.perf_counter()
    proc = root.run(f"{program} --version", user=TESTER)
    extracted_s = time.perf_counter() - started
    assert build_installer.project_version() in proc.stdout and "extracting it to" in proc.stderr
    assert root.tmp_leftovers() == []  # the extracted copy is deleted when the app exits
    # root can mount it with FUSE (/dev/fuse): the CLI and the window from the mounted image, no package installed
    timings = _cli_works(root, program, user="root")
    with virtual_display(98) as display:
        timings["window_s"] = _window_works(root, program, display, tmp_path / "appimage.png", user="root")
    timings["extract_and_version_s"] = extracted_s
    root.run(f"rm /home/{TESTER}/{name}")
    assert _diff(before, root.snapshot()) == [] and root.tmp_leftovers() == []
    REPORT["AppImage"] = {**timings, "MB": linux_build["artifacts"][f"dist/{name}"] / 1e6}


@pytest.mark.slow
def test_fresh_debian_home_folder_leftovers_are_the_documented_ones(fresh_root):
    """What the runs above left in the user's home (the system itself is checked per artifact): each is named in
    docs/installers.md, with how to remove it."""
    home = fresh_root.path / "home" / TESTER
    left = sorted(
        str(p.relative_to(home)) for base in (".cache", ".config", ".local/share") if (home / base).is_dir()
        for p in (home / base).iterdir()
    )  # fmt: skip
    print("left in the home folder:", left, "\nper artifact:", json.dumps(REPORT, indent=1))
    doc = (ROOT / "docs" / "installers.md").read_text(encoding="utf-8")
    assert left and all(f"~/{p}" in doc for p in left), left
