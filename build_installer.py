#!/usr/bin/env python3
"""Build Immich ML Desktop's installers: freeze the app with PyInstaller (one folder), then wrap it the way
the platform expects (Linux: .deb + .tar.gz [+ AppImage]; Windows: Inno Setup installer; macOS: .app in a .dmg).

    python build_installer.py                      # build for this machine, CPU variant
    python build_installer.py --variant cuda --venv build/venv-cuda   # NVIDIA build in its own venv
    python build_installer.py --platform windows --dry-run            # print the commands, write the scripts

What each platform needs is in PLATFORM_NEEDS (and `--help`); a missing tool stops the build with a message
saying where to get it. Details and measured numbers: docs/installers.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as platform_module
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "installer"))
import system_libraries  # noqa: E402  (installer/: the table of what the window needs from a Linux system)

APP = "immich-ml-desktop"
APP_NAME = "Immich ML Desktop"
SPEC = ROOT / "installer" / f"{APP}.spec"
ISS = ROOT / "installer" / "windows" / f"{APP}.iss"
DESKTOP_FILE = ROOT / "resources" / f"{APP}.desktop"
ICONS_DIR = ROOT / "immich_ml_desktop" / "resources" / "icons"
CUDA_RUNTIME = "onnxruntime-gpu>=1.17"  # the `cuda` extra in pyproject.toml (a test keeps the two equal)
LINUX_DIR = ROOT / "installer" / "linux"
# Where the .deb puts the app: a folder of its own under /usr/lib, so the package owns only its own paths
# (a package that ships /opt/<app> also registers /opt, and dpkg removes /opt with it when nothing else is there).
DEB_APP_DIR = f"usr/lib/{APP}"
# Libraries every glibc system has, never bundled into the AppImage (a copy older than the system's C++ runtime
# would break the system's own libraries loaded into the app, e.g. the GPU driver).
BASE_LIBRARIES = ("libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1", "libresolv.so.2",
                  "libutil.so.1", "libmvec.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1",
                  "libgcc_s.so.1", "libstdc++.so.6")  # fmt: skip
# The AppImage's own runtime (installer/linux/appimage-runtime.c) is built from these Debian/Ubuntu packages.
RUNTIME_PACKAGES = ("gcc", "pkg-config", "squashfs-tools", "libsquashfuse-dev", "libfuse3-dev", "libzstd-dev",
                    "liblzma-dev", "liblz4-dev", "liblzo2-dev", "zlib1g-dev")  # fmt: skip
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf")
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
PLATFORMS = ("linux", "windows", "macos")
VARIANTS = ("cpu", "cuda")
# What the frozen app must never carry: model weights and test data (models are downloaded on first use).
FORBIDDEN_SUFFIXES = (".onnx", ".onnx_data", ".pt", ".pth", ".safetensors", ".ckpt", ".tflite", ".pdparams")
FORBIDDEN_DIRS = ("tests", "test_data", "shared")

PLATFORM_NEEDS = {
    "linux": [
        "Python 3.10+ with the project and PyInstaller installed (pip install '.[installer]')",
        "dpkg-deb (package dpkg; on any Debian/Ubuntu) for the .deb",
        "for the AppImage: appimagetool on PATH (https://github.com/AppImage/appimagetool/releases), or, to build "
        "its runtime here, " + " ".join(RUNTIME_PACKAGES) + ", and fonts-dejavu-core plus the window's libraries ("
        + " ".join(system_libraries.packages()) + ") to bundle",
    ],
    "windows": [
        "Python 3.10+ with the project and PyInstaller installed (pip install .[installer])",
        "Inno Setup 6 (iscc.exe on PATH or in its default folder; `choco install innosetup` or https://jrsoftware.org/isdl.php)",
    ],
    "macos": [
        "Python 3.10+ with the project and PyInstaller installed (pip install '.[installer]')",
        "hdiutil (part of macOS) for the .dmg; the build is for the machine's architecture (arm64 or x86_64)",
    ],
}


class BuildError(Exception):
    """A build step cannot run; the message says what to install or change."""


def this_platform() -> str:
    return {"win32": "windows", "darwin": "macos"}.get(sys.platform, "linux")


def project_version() -> str:
    for line in (ROOT / "pyproject.toml").read_text(encoding="utf-8").splitlines():
        if line.startswith("version"):
            return line.split("=", 1)[1].strip().strip('"')
    raise BuildError("pyproject.toml has no version line.")


def arch_name(target: str) -> str:
    machine = platform_module.machine().lower()
    if target == "linux":
        return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    if target == "windows":
        return "x64"
    return {"x86_64": "x86_64", "amd64": "x86_64"}.get(machine, "arm64")


def glibc_version() -> str:
    """The build machine's glibc: the frozen binaries need at least this one (CI builds on an older distro)."""
    name, version = platform_module.libc_ver()
    return version if name == "glibc" and version else "2.31"


def tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def human(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@dataclass
class InstallerBuild:
    """One build: a platform and variant, run for real or printed (dry run)."""

    target: str
    variant: str
    dry_run: bool
    python: str = sys.executable
    venv: Path | None = None
    work: Path = field(init=False)
    dist: Path = field(init=False)
    version: str = field(init=False)
    artifacts: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.version = project_version()
        self.work = ROOT / "build" / "installer" / f"{self.target}-{self.variant}"
        self.dist = ROOT / "dist"

    @property
    def native(self) -> bool:
        return self.target == this_platform()

    @property
    def base_name(self) -> str:
        return f"{APP}-{self.version}-{self.target}-{arch_name(self.target)}-{self.variant}"

    @property
    def frozen_dir(self) -> Path:
        """PyInstaller's one-folder output (on macOS the .app bundle sits next to it)."""
        return self.work / "pyinstaller-dist" / APP

    # --- running -------------------------------------------------------------------------------------------
    def run(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        # quoted the way this machine's shell reads it, so a printed line can be pasted
        shown = subprocess.list2cmdline([str(a) for a in argv]) if os.name == "nt" else shlex.join(str(a) for a in argv)
        if env:
            shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + shown
        print(f"$ {shown}", flush=True)
        if self.dry_run:
            return
        try:
            subprocess.run([str(a) for a in argv], check=True, env={**os.environ, **(env or {})}, cwd=ROOT)
        except FileNotFoundError:
            raise BuildError(f"{argv[0]} is not installed or not on PATH.") from None
        except subprocess.CalledProcessError as e:
            raise BuildError(f"`{shown}` failed with exit code {e.returncode} (its output is above).") from None

    def write(self, path: Path, text: str, executable: bool = False) -> Path:
        """Generated files are written in dry runs too, so they can be inspected and tested."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="\n")
        if executable:
            path.chmod(0o755)
        print(f"# wrote {path.relative_to(ROOT)}")
        return path

    def need_tool(self, name: str, hint: str) -> str:
        found = shutil.which(name)
        if found:
            return found
        if self.dry_run or not self.native:
            return name
        raise BuildError(f"{name} is needed for this step but is not on PATH: {hint}")

    # --- steps ---------------------------------------------------------------------------------------------
    def prepare_python(self) -> None:
        """With --venv: a fresh build environment with the variant's runtime. Without: check the current one."""
        if self.venv is not None:
            bindir = "Scripts" if self.target == "windows" else "bin"
            py = self.venv / bindir / ("python.exe" if self.target == "windows" else "python")
            if not py.exists():
                self.run([sys.executable, "-m", "venv", self.venv])
            self.python = str(py)
            self.run([py, "-m", "pip", "install", "-q", "-U", "pip"])
            self.run([py, "-m", "pip", "install", "-q", f"{ROOT}[installer]"])
            if self.variant == "cuda":
                # onnxruntime and onnxruntime-gpu install the same module: the CPU one has to go first, and the
                # GPU one is installed on its own (installing `.[cuda]` would pull the CPU one back in)
                self.run([py, "-m", "pip", "uninstall", "-y", "onnxruntime"])
                self.run([py, "-m", "pip", "install", "-q", CUDA_RUNTIME])
        if self.dry_run:
            if self.venv is None:
                if not self.native:
                    self.python = "python"  # this machine's interpreter means nothing on the target platform
                print(f"# using {self.python} as it is (pass --venv DIR for a fresh build environment)")
            return
        probe = (
            "import importlib.metadata as m, json\n"
            "names = ('onnxruntime', 'onnxruntime-gpu', 'pyinstaller')\n"
            "found = {}\n"
            "for n in names:\n"
            "    try: found[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(found))\n"
        )
        found = json.loads(subprocess.run([self.python, "-c", probe], capture_output=True, text=True, check=True).stdout)
        if "pyinstaller" not in found:
            raise BuildError(f"PyInstaller is not installed for {self.python}: run `{self.python} -m pip install '.[installer]'`.")
        want, other = ("onnxruntime-gpu", "onnxruntime") if self.variant == "cuda" else ("onnxruntime", "onnxruntime-gpu")
        if want not in found or other in found:
            raise BuildError(
                f"The {self.variant} variant needs {want} (and not {other}) in {self.python}; found "
                f"{', '.join(f'{k} {v}' for k, v in found.items())}. Use --venv DIR to build in a fresh environment."
            )

    def freeze(self) -> None:
        if not self.native:
            print(f"# PyInstaller cannot cross-compile: this step runs on {self.target} only")
        self.run(
            [self.python, "-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
             "--distpath", self.work / "pyinstaller-dist", "--workpath", self.work / "pyinstaller-work", SPEC]
        )  # fmt: skip
        if not self.dry_run:
            self.check_frozen()

    def check_frozen(self) -> None:
        """Refuses a build that carries model weights or test data."""
        bad = [
            p for p in self.frozen_dir.rglob("*")
            if p.suffix.lower() in FORBIDDEN_SUFFIXES or (p.is_dir() and p.name in FORBIDDEN_DIRS)
        ]  # fmt: skip
        if bad:
            listed = ", ".join(str(p.relative_to(self.frozen_dir)) for p in bad[:5])
            raise BuildError(f"The frozen app contains model weights or test data ({listed}): exclude them in {SPEC.name}.")

    def size_report(self) -> dict:
        internal = self.frozen_dir / "_internal"
        groups: dict[str, int] = {}
        for p in internal.rglob("*"):
            if p.is_file() and not p.is_symlink():
                top = p.relative_to(internal).parts[0]
                key = top if (internal / top).is_dir() else _library_group(top)
                groups[key] = groups.get(key, 0) + p.stat().st_size
        total = tree_size(self.frozen_dir)
        top = sorted(groups.items(), key=lambda kv: -kv[1])[:12]
        print(f"\nFrozen app: {human(total)} in {self.frozen_dir.relative_to(ROOT)}; largest parts:")
        for name, size in top:
            print(f"  {human(size):>10}  {name}")
        return {"frozen_bytes": total, "largest": dict(top)}

    def package_linux(self) -> None:
        arch = arch_name("linux")
        self.artifacts.append(self.tarball())
        self.artifacts.append(self.deb(arch))
        appimage = self.appimage()
        if appimage:
            self.artifacts.append(appimage)

    def tarball(self) -> Path:
        """The folder build plus README.txt, the .desktop file, its install script and the icon, for any distribution."""
        out = self.dist / f"{self.base_name}.tar.gz"
        readme = self.write(self.work / "README.txt", self.tarball_readme())
        extras = {
            readme: "README.txt",
            DESKTOP_FILE: DESKTOP_FILE.name,
            LINUX_DIR / "install-desktop-entry.sh": "install-desktop-entry.sh",
            ICONS_DIR / f"{APP}-256.png": f"{APP}.png",
        }
        print(f"# tar -czf {out.relative_to(ROOT)} {self.base_name}/ (frozen app + {', '.join(extras.values())})")
        if not self.dry_run:
            self.dist.mkdir(parents=True, exist_ok=True)
            with tarfile.open(out, "w:gz", compresslevel=6) as tar:
                tar.add(self.frozen_dir, arcname=self.base_name)
                for source, name in extras.items():
                    tar.add(source, arcname=f"{self.base_name}/{name}")
        return out

    def tarball_readme(self) -> str:
        return (LINUX_DIR / "README-tarball.txt").read_text(encoding="utf-8").format(
            version=self.version, app=APP, folder=self.base_name, glibc=glibc_version(),
            apt=system_libraries.apt_command(),
            libraries="\n".join(
                f"  {soname:<24} {package}" for soname, package in system_libraries.all_required().items()
            ),
        )  # fmt: skip

    def deb(self, arch: str) -> Path:
        """/usr/lib/immich-ml-desktop, a /usr/bin link, the menu entry and hicolor icons."""
        root = self.work / "deb"
        package = APP if self.variant == "cpu" else f"{APP}-{self.variant}"
        other = f"{APP}-cuda" if self.variant == "cpu" else APP
        relations = f"Conflicts: {other}\nReplaces: {other}\n" + (f"Provides: {APP}\n" if self.variant != "cpu" else "")
        installed_kb = 0 if self.dry_run else tree_size(self.frozen_dir) // 1024
        control = (LINUX_DIR / "control").read_text(encoding="utf-8").format(
            package=package, version=self.version, arch=arch, installed_kb=installed_kb, relations=relations,
            variant=self.variant.upper(), glibc=glibc_version(), depends=", ".join(system_libraries.packages()),
        )  # fmt: skip
        if not self.dry_run and root.exists():
            shutil.rmtree(root)
        self.write(root / "DEBIAN" / "control", control)
        print(f"# copy frozen app to {root.relative_to(ROOT)}/{DEB_APP_DIR}, link /usr/bin/{APP}, add menu entry + icons")
        if not self.dry_run:
            shutil.copytree(self.frozen_dir, root / DEB_APP_DIR, symlinks=True)
            (root / "usr" / "bin").mkdir(parents=True)
            (root / "usr" / "bin" / APP).symlink_to(f"../lib/{APP}/{APP}")
            apps = root / "usr" / "share" / "applications"
            apps.mkdir(parents=True)
            shutil.copy2(DESKTOP_FILE, apps / DESKTOP_FILE.name)
            for icon in ICONS_DIR.glob(f"{APP}-*.png"):
                size = icon.stem.rsplit("-", 1)[1]
                dest = root / "usr" / "share" / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{APP}.png"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(icon, dest)
        out = self.dist / f"{package}_{self.version}_{arch}.deb"
        dpkg = self.need_tool("dpkg-deb", "install the dpkg package (Debian/Ubuntu have it).")
        # zstd: ~10x faster than xz at ~10 % more bytes; every dpkg that can run this build (glibc above) reads it.
        self.run([dpkg, "--root-owner-group", "-Zzstd", "-z9", "--build", root, out])
        return out

    def appimage(self) -> Path | None:
        """The frozen app, the window's system libraries and a font in one self-mounting file.

        With appimagetool on PATH it packs the AppDir (AppImage's own runtime). Without it the runtime is built
        here from installer/linux/appimage-runtime.c and the Debian/Ubuntu packages in RUNTIME_PACKAGES, and
        the file is assembled as the AppImage spec describes: runtime ELF + squashfs image, "AI\\x02" at offset 8.
        """
        appdir = self.work / f"{APP}.AppDir"
        out = self.dist / f"{self.base_name}.AppImage"
        tool = shutil.which("appimagetool")
        missing = [] if tool else self.runtime_build_missing()
        if not self.dry_run and appdir.exists():
            shutil.rmtree(appdir)
        # The AppDir metadata is always generated (small, checkable); the app copy only when it will be packed.
        self.write(appdir / "AppRun", (LINUX_DIR / "AppRun").read_text(encoding="utf-8"), executable=True)
        self.write(appdir / DESKTOP_FILE.name, DESKTOP_FILE.read_text(encoding="utf-8"))
        self.write(appdir / "usr" / "share" / "fonts" / "fonts.conf", (LINUX_DIR / "fonts.conf").read_text(encoding="utf-8"))
        self.write(appdir / "usr" / "lib" / "system" / "SONAMES", "\n".join(system_libraries.all_required()) + "\n")
        if missing and not self.dry_run:
            print(
                "AppImage skipped: appimagetool is not on PATH (https://github.com/AppImage/appimagetool/releases), "
                f"and building its runtime here needs {', '.join(missing)} (apt-get install {' '.join(missing)}); "
                "the .deb and .tar.gz cover Linux meanwhile."
            )
            return None
        print(f"# copy frozen app to {appdir.relative_to(ROOT)}/usr/lib/{APP}, the window's system libraries to "
              f"usr/lib/system, {' and '.join(FONT_FILES)} to usr/share/fonts, the 256 px icon to its root")  # fmt: skip
        if not self.dry_run:
            shutil.copytree(self.frozen_dir, appdir / "usr" / "lib" / APP, symlinks=True)
            self.bundle_system_libraries(appdir / "usr" / "lib" / "system")
            for name in FONT_FILES:
                shutil.copy2(FONT_DIR / name, appdir / "usr" / "share" / "fonts" / name)
            shutil.copy2("/usr/share/doc/fonts-dejavu-core/copyright", appdir / "usr" / "share" / "fonts" / "DejaVu-LICENSE")
            shutil.copy2(ICONS_DIR / f"{APP}-256.png", appdir / f"{APP}.png")
            shutil.copy2(ICONS_DIR / f"{APP}-256.png", appdir / ".DirIcon")
        if tool:
            self.run([tool, appdir, out], env={"ARCH": platform_module.machine()})
            return out
        runtime = self.work / "appimage-runtime"
        self.run(["sh", "-c", runtime_compile_command(runtime)])
        image = self.work / "appimage.squashfs"
        self.run(["mksquashfs", appdir, image, "-root-owned", "-noappend", "-comp", "zstd", "-b", "1M", "-quiet"])
        print(f"# cat {runtime.name} {image.name} > {out.relative_to(ROOT)}; write AI\\x02 at offset 8; chmod +x")
        if not self.dry_run:
            assemble_appimage(runtime, image, out)
            image.unlink()
        return out

    def runtime_build_missing(self) -> list[str]:
        """Of RUNTIME_PACKAGES (and the font and libraries to bundle), what this machine lacks."""
        checks = {
            "gcc": shutil.which("gcc"), "pkg-config": shutil.which("pkg-config"),
            "squashfs-tools": shutil.which("mksquashfs"),
            "libsquashfuse-dev": Path("/usr/include/squashfuse/ll.h").exists(),
            "libfuse3-dev": Path("/usr/include/fuse3/fuse_lowlevel.h").exists(),
            "fonts-dejavu-core": all((FONT_DIR / name).exists() for name in FONT_FILES),
        }  # fmt: skip
        return [package for package, found in checks.items() if not found]

    def bundle_system_libraries(self, dest: Path) -> None:
        """Copies the window's system libraries (system_libraries.py) and what they link, minus the C runtime
        and what the frozen app already has, named by soname; AppRun uses them where the system lacks any."""
        bundled = {p.name for p in (self.frozen_dir / "_internal").glob("*.so*")}
        found: dict[str, Path] = {}
        for soname in system_libraries.all_required():
            path = _system_library(soname)
            if path is None:
                package = system_libraries.all_required()[soname]
                raise BuildError(f"{soname} is not installed on this build machine: apt-get install {package} (it is bundled into the AppImage).")
            found[soname] = path
            found.update(_linked_libraries(path))
        dest.mkdir(parents=True, exist_ok=True)
        for soname, path in sorted(found.items()):
            if soname not in BASE_LIBRARIES and soname not in bundled:
                shutil.copy2(path.resolve(), dest / soname)

    def package_windows(self) -> None:
        iscc = shutil.which("iscc") or shutil.which("ISCC")
        default = Path(os.environ.get("ProgramFiles(x86)", r"C:\Program Files (x86)"))  # noqa: SIM112 - Windows spells it so / "Inno Setup 6" / "ISCC.exe"
        if iscc is None and default.exists():
            iscc = str(default)
        if iscc is None:
            iscc = self.need_tool("iscc", "install Inno Setup 6 (`choco install innosetup`, or https://jrsoftware.org/isdl.php).")
        out_name = f"{self.base_name}-setup"
        self.run([
            iscc, f"/DAppVersion={self.version}", f"/DSourceDir={self.frozen_dir}", f"/DOutputDir={self.dist}",
            f"/DOutputBaseName={out_name}", f"/DIconFile={ROOT / 'resources' / f'{APP}.ico'}", ISS,
        ])  # fmt: skip
        self.artifacts.append(self.dist / f"{out_name}.exe")

    def package_macos(self) -> None:
        app_bundle = self.work / "pyinstaller-dist" / f"{APP_NAME}.app"
        stage = self.work / "dmg"
        print(f"# stage {app_bundle.name} and an /Applications link in {stage.relative_to(ROOT)}")
        if not self.dry_run:
            if stage.exists():
                shutil.rmtree(stage)
            stage.mkdir(parents=True)
            shutil.copytree(app_bundle, stage / app_bundle.name, symlinks=True)
            (stage / "Applications").symlink_to("/Applications")
        hdiutil = self.need_tool("hdiutil", "it is part of macOS; build the .dmg on a Mac.")
        out = self.dist / f"{self.base_name}.dmg"
        self.run([hdiutil, "create", "-volname", APP_NAME, "-srcfolder", stage, "-fs", "HFS+", "-format", "UDZO", "-ov", out])
        self.artifacts.append(out)

    def build(self) -> dict:
        print(f"Building {APP_NAME} {self.version} for {self.target} ({self.variant}){' [dry run]' if self.dry_run else ''}")
        print("Needs: " + "; ".join(PLATFORM_NEEDS[self.target]))
        if self.target == "macos" and self.variant != "cpu":
            raise BuildError("macOS has no CUDA (there is no onnxruntime-gpu for it): build macOS with --variant cpu.")
        if not self.native and not self.dry_run:
            raise BuildError(
                f"Building for {self.target} must run on {self.target} (PyInstaller does not cross-compile); "
                f"use --dry-run here to see and check the steps."
            )
        started = time.perf_counter()
        self.prepare_python()
        self.freeze()
        self.timings["freeze_s"] = round(time.perf_counter() - started, 1)
        report: dict = {"platform": self.target, "variant": self.variant, "version": self.version}
        if not self.dry_run:
            report.update(self.size_report())
        packaged = time.perf_counter()
        getattr(self, f"package_{self.target}")()
        self.timings["package_s"] = round(time.perf_counter() - packaged, 1)
        report.update(self.timings)
        report["artifacts"] = {str(p.relative_to(ROOT)): (0 if self.dry_run else p.stat().st_size) for p in self.artifacts}
        if not self.dry_run:
            print("\nArtifacts:")
            for path in self.artifacts:
                print(f"  {human(path.stat().st_size):>10}  {path.relative_to(ROOT)}")
            print(f"Freeze {self.timings['freeze_s']} s, packaging {self.timings['package_s']} s.")
            self.write(self.work / "build-report.json", json.dumps(report, indent=2))
        return report


def runtime_compile_command(out: Path) -> str:
    """gcc for installer/linux/appimage-runtime.c: squashfuse, libfuse3 and the codecs static, only glibc dynamic."""
    return (
        f"gcc -O2 -Wall -o {shlex.quote(str(out))} {shlex.quote(str(LINUX_DIR / 'appimage-runtime.c'))} "
        "$(pkg-config --cflags squashfuse_ll fuse3) -Wl,-Bstatic -lsquashfuse_ll -lsquashfuse -lfuse3 "
        "-lzstd -llzma -llz4 -llzo2 -lz -Wl,-Bdynamic -lpthread -ldl"
    )


def assemble_appimage(runtime: Path, image: Path, out: Path) -> None:
    """A type 2 AppImage: the runtime ELF, the squashfs image right after it, "AI\\x02" at offset 8."""
    with open(out, "wb") as f:
        f.write(runtime.read_bytes())
        with open(image, "rb") as src:
            shutil.copyfileobj(src, f, 1 << 20)
        f.seek(8)
        f.write(b"AI\x02")  # the magic, in the ELF header's padding
    out.chmod(0o755)


def _system_library(soname: str) -> Path | None:
    """Where the dynamic loader finds `soname` on this machine (`ldconfig -p`), for this architecture."""
    machine = {"x86_64": "x86-64", "aarch64": "AArch64"}.get(platform_module.machine(), "")
    listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    for line in listing.splitlines():
        name, _, rest = line.strip().partition(" ")
        if name == soname and machine in rest and "=>" in rest:
            return Path(rest.split("=>", 1)[1].strip())
    return None


def _linked_libraries(path: Path) -> dict[str, Path]:
    """soname -> file for everything `path` links, directly or not (`ldd`)."""
    out = subprocess.run(["ldd", str(path)], capture_output=True, text=True, check=True).stdout
    return {m.group(1): Path(m.group(2)) for m in re.finditer(r"^\s*(\S+) => (/\S+)", out, flags=re.M)}


def _library_group(filename: str) -> str:
    """Shared libraries at the bundle root grouped by what they belong to (libQt6Gui.so.6 -> Qt6)."""
    for prefix, group in (("libQt6", "Qt6 libraries"), ("Qt6", "Qt6 libraries"), ("libpyside6", "PySide6"),
                          ("libshiboken6", "PySide6"), ("libpython", "Python"), ("python3", "Python")):  # fmt: skip
        if filename.startswith(prefix):
            return group
    return "other shared libraries"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="What each platform needs:\n"
        + "\n".join(f"  {p}: " + "; ".join(needs) for p, needs in PLATFORM_NEEDS.items()),
    )
    parser.add_argument("--platform", choices=PLATFORMS, default=this_platform(), help="default: this machine's")
    parser.add_argument("--variant", choices=VARIANTS, default="cpu", help="cuda: onnxruntime-gpu instead of onnxruntime")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and write the generated scripts only")
    parser.add_argument("--venv", type=Path, help="build in this (new or existing) venv, installing the variant's runtime")
    args = parser.parse_args(argv)
    build = InstallerBuild(args.platform, args.variant, args.dry_run, venv=args.venv)
    try:
        build.build()
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
