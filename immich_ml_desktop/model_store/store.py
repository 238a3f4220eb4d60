"""The model store: gets Immich's model packs from Hugging Face (or a mirror), keeps them healthy, and
imports packs the user already has.

A pack is `<cache>/<task>/<name>/` in Immich's layout. Files are downloaded into
`<cache>/.incomplete/<task>/<name>/` (resumable `.part` files checked against the hub's size and
sha256) and moved into place only when verified; a manifest written last records what was fetched, so
a pack is never taken for whole while half-written. When a pack is complete, nothing touches the
network. Packs the store did not write (another Immich cache, a read-only folder) are never modified.

The hub's HTTP API is used directly (httpx) rather than through huggingface_hub: that library reads
HF_ENDPOINT and HF_HUB_OFFLINE once, at import, and has no byte-level progress callback for a GUI.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable
from urllib.parse import quote

import httpx
from filelock import FileLock

from immich_ml_desktop.errors import DownloadError, InvalidInputError, ModelDamagedError, ModelNotFoundError
from immich_ml_desktop.model_store import catalog
from immich_ml_desktop.models.base import ModelTask, clean_name
from immich_ml_desktop.model_store.catalog import MODEL_FOLDERS, REQUIRED_FILES, CatalogEntry

log = logging.getLogger(__name__)

MANIFEST = ".immich-ml-desktop.json"
INCOMPLETE = ".incomplete"
DEFAULT_ENDPOINT = "https://huggingface.co"
# Hub repos also hold exports for other accelerators (ARM NN, RKNN) that this app never runs.
_SKIPPED_SUFFIXES = (".armnn", ".rknn", ".md")
_CHUNK = 1 << 16
_HASH_BLOCK = 1 << 20


# manifest ------------------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def _file_record(path: Path, sha256: str | None = None) -> dict[str, Any]:
    st = path.stat()
    return {"size": st.st_size, "sha256": sha256 or file_sha256(path), "mtime_ns": st.st_mtime_ns}


def read_manifest(pack_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((pack_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def write_manifest(pack_dir: Path, source: str, files: dict[str, dict[str, Any]] | None = None, **extra: Any) -> None:
    """Record every file of a pack the app wrote (size, sha256, mtime); written atomically, last."""
    if files is None:
        files = {
            p.relative_to(pack_dir).as_posix(): _file_record(p)
            for p in sorted(pack_dir.rglob("*"))
            if p.is_file() and p.name != MANIFEST
        }
    data = {"source": source, "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra, "files": files}
    fd, tmp = tempfile.mkstemp(dir=pack_dir, prefix=".manifest-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, pack_dir / MANIFEST)


# what the store reports ------------------------------------------------------------------------------
@dataclass
class DownloadProgress:
    """One progress event: the file being fetched and the whole pack's bytes."""

    model: str
    status: str  # downloading, verifying, complete
    file: str | None = None
    file_done: int = 0
    file_total: int = 0
    done: int = 0
    total: int = 0

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


@dataclass
class PackReport:
    """What `verify` found in one pack folder."""

    name: str
    task: str
    path: Path
    status: str  # complete, missing, damaged
    problems: list[str] = field(default_factory=list)
    managed: bool = False  # the app wrote it (a manifest records its files' sizes and hashes)
    writable: bool = True

    @property
    def ok(self) -> bool:
        return self.status == "complete"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "path": str(self.path),
            "status": self.status,
            "problems": self.problems,
            "managed": self.managed,
            "writable": self.writable,
        }


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None  # LFS files: the content hash the hub publishes
    git_oid: str | None  # small files: the git blob id (sha1 of "blob <size>\0" + content)


ProgressCallback = Callable[[DownloadProgress], None]


class _ServerBusy(Exception):
    """The server answered 5xx or 429 while sending a file: worth another try."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _wanted(path: str, task: ModelTask) -> bool:
    """Files of a hub repo that a pack needs: the root config and the model folders' own files."""
    if path.endswith(_SKIPPED_SUFFIXES):
        return False
    parts = path.split("/")
    if len(parts) == 1:
        return task == ModelTask.SEARCH and path == "config.json"
    return len(parts) == 2 and parts[0] in MODEL_FOLDERS[task]


def _git_blob_oid(path: Path) -> str:
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())  # noqa: S324 - git's object id, not security
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
    return h.hexdigest()


def _is_writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


class ModelStore:
    """Model packs in a primary cache (where downloads and imports go) and read-only extra caches."""

    def __init__(
        self,
        cache_dir: Path | str,
        extra_dirs: Iterable[Path | str] = (),
        *,
        endpoint: str | None = None,
        retries: int = 3,
        timeout: float = 30.0,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.extra_dirs = [Path(p) for p in extra_dirs]
        self._endpoint = endpoint
        self.retries = retries
        self.timeout = timeout

    @property
    def caches(self) -> list[Path]:
        return [self.cache_dir, *self.extra_dirs]

    @property
    def endpoint(self) -> str:
        """The hub or mirror: `HF_ENDPOINT` is read on every call, as huggingface_hub users expect."""
        return (self._endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")

    # finding packs ---------------------------------------------------------------------------------
    def _entry(self, name: str) -> CatalogEntry:
        entry = catalog.lookup(name)
        if entry is None:
            raise ModelNotFoundError(
                f"{name!r} is not one of Immich's models, so it cannot be downloaded (see `immich-ml-desktop models list`). "
                "For a custom model, put its folder into the model cache or run `immich-ml-desktop models import FOLDER`."
            )
        return entry

    def find_pack(self, name: str) -> Path | None:
        """The first cache folder that holds a complete pack of this name (no network)."""
        entry = catalog.lookup(name)
        tasks = [entry.task] if entry else list(REQUIRED_FILES)
        for cache in self.caches:
            for task in tasks:
                pack = cache / task.value / clean_name(name)
                if pack.is_dir() and not self._quick_problems(pack, task):
                    return pack
        return None

    def _quick_problems(self, pack: Path, task: ModelTask) -> list[str]:
        """Files that are absent or changed since the manifest was written; sizes and mtimes first,
        hashes only for files whose mtime moved."""
        bad = [rel for rel in REQUIRED_FILES[task] if not (pack / rel).is_file() or (pack / rel).stat().st_size == 0]
        manifest = read_manifest(pack)
        if manifest:
            touched = False
            for rel, rec in manifest["files"].items():
                if rel in bad:
                    continue
                path = pack / rel
                try:
                    st = path.stat()
                except OSError:
                    bad.append(rel)
                    continue
                if st.st_size != rec.get("size"):
                    bad.append(rel)
                elif st.st_mtime_ns != rec.get("mtime_ns"):
                    if file_sha256(path) != rec.get("sha256"):
                        bad.append(rel)
                    else:
                        rec["mtime_ns"] = st.st_mtime_ns  # same content, new time: hash it once only
                        touched = True
            if touched and not bad:
                extra = {k: v for k, v in manifest.items() if k not in ("source", "files", "written_at")}
                try:
                    write_manifest(pack, manifest.get("source", ""), manifest["files"], **extra)
                except OSError:
                    pass  # a read-only cache: the hash is simply checked again next time
        return bad

    def packs(self) -> list[tuple[ModelTask, Path]]:
        """Every pack folder in every cache, primary first."""
        found = []
        for cache in self.caches:
            for task in REQUIRED_FILES:
                folder = cache / task.value
                if folder.is_dir():
                    found += [(task, p) for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")]
        return found

    # downloading -----------------------------------------------------------------------------------
    def download(self, name: str, progress: ProgressCallback | None = None) -> Path:
        """Make the pack complete in the primary cache (or find it complete anywhere); returns its folder.

        Without network when it is complete already. Missing or damaged files are fetched again;
        files of packs the app did not write are never replaced.
        """
        entry = self._entry(name)
        folder_name = clean_name(name)
        found = self.find_pack(folder_name)
        if found is not None:
            if progress:
                progress(DownloadProgress(folder_name, "complete"))
            return found
        if _offline():
            raise DownloadError(
                f"Model {folder_name!r} is not complete in the cache and downloads are off (HF_HUB_OFFLINE is set). "
                "Unset it, or import the model with `immich-ml-desktop models import FOLDER`."
            )
        pack = self.cache_dir / entry.task.value / folder_name
        staging = self.cache_dir / INCOMPLETE / entry.task.value / folder_name
        staging.parent.mkdir(parents=True, exist_ok=True)
        # One download of a pack at a time, also across processes (the window and a CLI command).
        total = 0
        with FileLock(str(staging) + ".lock"):
            if self.find_pack(folder_name) is None:
                total = self._download_locked(entry, pack, staging, folder_name, progress)
        problems = self._quick_problems(pack, entry.task)
        if problems:
            raise ModelDamagedError(
                f"{pack} is still not usable ({', '.join(problems)}): it holds files this app did not write and "
                "leaves alone. Remove that folder and download again."
            )
        if progress:
            progress(DownloadProgress(folder_name, "complete", done=total, total=total))
        return pack

    def _download_locked(
        self, entry: CatalogEntry, pack: Path, staging: Path, folder_name: str, progress: ProgressCallback | None
    ) -> int:
        """Fetch what the pack lacks; returns the pack's total size in bytes."""
        headers = {"User-Agent": "immich-ml-desktop"}
        token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        with httpx.Client(headers=headers, timeout=self.timeout, follow_redirects=True) as client:
            commit, remote = self._remote_files(client, entry)
            wanted = [f for f in remote if _wanted(f.path, entry.task)]
            absent = sorted(set(REQUIRED_FILES[entry.task]) - {f.path for f in wanted})
            if absent:
                raise DownloadError(f"{entry.repo_id} on {self.endpoint} lacks {', '.join(absent)}; it is not a model pack this app can use.")
            managed = read_manifest(pack)
            quick_bad = set(self._quick_problems(pack, entry.task)) if pack.is_dir() else set()
            todo = [f for f in wanted if self._needs_fetch(pack, f, managed, quick_bad)]
            total = sum(f.size for f in wanted)
            state = {"done": total - sum(f.size for f in todo)}
            log.info("Downloading %d of %d files of %s from %s", len(todo), len(wanted), entry.repo_id, self.endpoint)
            records = {}
            for f in todo:
                final = staging / f.path
                url = f"{self.endpoint}/{entry.repo_id}/resolve/{commit}/{quote(f.path)}"
                self._fetch(client, url, f, final, folder_name, state, total, progress)
                records[f.path] = _file_record(final, f.sha256)
        self._install(pack, staging, records, entry, commit, new=managed is None and not pack.is_dir())
        return total

    def _needs_fetch(self, pack: Path, f: RemoteFile, manifest: dict[str, Any] | None, quick_bad: set[str]) -> bool:
        local = pack / f.path
        if not local.is_file() or local.stat().st_size == 0:
            return True
        if manifest is None:
            return False  # a file the app did not write: never replaced
        rec = manifest["files"].get(f.path)
        if rec is None:
            return False
        return f.path in quick_bad or rec.get("size") != f.size or (f.sha256 is not None and rec.get("sha256") != f.sha256)

    def _remote_files(self, client: httpx.Client, entry: CatalogEntry) -> tuple[str, list[RemoteFile]]:
        """The repo's current commit and its files with sizes and hashes (one API call)."""
        url = f"{self.endpoint}/api/models/{entry.repo_id}/revision/main"
        try:
            r = client.get(url, params={"blobs": "true"})
        except httpx.HTTPError as e:
            raise DownloadError(f"Cannot reach {self.endpoint} to download {entry.name!r}: {e}. Check the network, a proxy (HTTPS_PROXY) or the mirror (HF_ENDPOINT).") from None
        self._raise_for_status(r, entry.repo_id)
        try:
            info = r.json()
            commit = info["sha"]
            files = [
                RemoteFile(
                    s["rfilename"],
                    int((s.get("lfs") or {}).get("size", s.get("size", -1))),
                    (s.get("lfs") or {}).get("sha256"),
                    None if s.get("lfs") else s.get("blobId"),
                )
                for s in info["siblings"]
            ]
        except (ValueError, KeyError, TypeError) as e:
            raise DownloadError(f"{self.endpoint} answered something that is not a Hugging Face model listing for {entry.repo_id} ({e}).") from None
        if any(f.size < 0 for f in files):
            raise DownloadError(f"{self.endpoint} lists the files of {entry.repo_id} without their sizes; it cannot be used as a mirror.")
        return commit, files

    def _raise_for_status(self, r: httpx.Response, what: str) -> None:
        if r.status_code < 400:
            return
        if r.status_code in (401, 403, 404):
            raise DownloadError(f"{what} was not found on {self.endpoint} (HTTP {r.status_code}). Check the model name and HF_ENDPOINT.")
        raise DownloadError(f"{self.endpoint} failed while sending {what} (HTTP {r.status_code}); try again later.")

    def _fetch(
        self,
        client: httpx.Client,
        url: str,
        f: RemoteFile,
        final: Path,
        model: str,
        state: dict[str, int],
        total: int,
        progress: ProgressCallback | None,
    ) -> None:
        """Fetch one file to `final`, resuming a `.part` left by an earlier attempt, and verify it."""
        final.parent.mkdir(parents=True, exist_ok=True)
        tag = (f.sha256 or f.git_oid or "unknown")[:16]
        part = final.with_name(f"{final.name}.{tag}.part")
        if final.is_file() and self._verify_download(final, f) is None:  # fetched by an earlier, interrupted run
            state["done"] += f.size
            return
        last_error = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(0.2 * 2 ** (attempt - 1), 2.0))
            have = part.stat().st_size if part.exists() else 0
            if have > f.size:
                part.unlink()
                have = 0
            base = state["done"]
            if have < f.size:
                try:
                    have = self._stream(client, url, f, part, have, model, base, total, progress)
                except httpx.TransportError as e:
                    last_error = f"connection lost ({e})"
                    log.warning("Download of %s interrupted (%s); resuming", f.path, e)
                    continue
                except _ServerBusy as e:
                    last_error = str(e)
                    continue
            if have < f.size:
                last_error = f"the server sent {have} of {f.size} bytes"
                continue
            if progress:
                progress(DownloadProgress(model, "verifying", f.path, have, f.size, base + have, total))
            problem = self._verify_download(part, f)
            if problem:
                last_error = problem
                log.warning("Downloaded %s is damaged (%s); fetching it again", f.path, problem)
                part.unlink()
                continue
            os.replace(part, final)
            state["done"] += f.size
            return
        raise DownloadError(f"Could not download {f.path} of {model!r} from {self.endpoint}: {last_error}. Run the download again to resume.")

    def _stream(
        self,
        client: httpx.Client,
        url: str,
        f: RemoteFile,
        part: Path,
        have: int,
        model: str,
        base: int,
        total: int,
        progress: ProgressCallback | None,
    ) -> int:
        headers = {"Range": f"bytes={have}-"} if have else {}
        with client.stream("GET", url, headers=headers) as r:
            if r.status_code == 416:  # the part is stale; start over
                part.unlink(missing_ok=True)
                return 0
            if r.status_code >= 500 or r.status_code == 429:
                raise _ServerBusy(f"the server answered HTTP {r.status_code}")
            self._raise_for_status(r, f.path)
            if have and r.status_code != 206:
                have = 0  # the server ignored the range: take the whole file again
            with open(part, "ab" if have else "wb") as out:
                for chunk in r.iter_bytes(_CHUNK):
                    out.write(chunk)
                    have += len(chunk)
                    if progress:
                        progress(DownloadProgress(model, "downloading", f.path, have, f.size, base + have, total))
        return have

    @staticmethod
    def _verify_download(path: Path, f: RemoteFile) -> str | None:
        size = path.stat().st_size
        if size != f.size:
            return f"size {size}, the hub says {f.size}"
        if f.sha256 and file_sha256(path) != f.sha256:
            return "sha256 does not match the hub's"
        if f.git_oid and _git_blob_oid(path) != f.git_oid:
            return "content does not match the hub's git id"
        return None

    def _install(self, pack: Path, staging: Path, records: dict[str, dict[str, Any]], entry: CatalogEntry, commit: str, new: bool) -> None:
        """Move verified files into place; the manifest is written last, so a pack is whole or not taken."""
        source = f"{self.endpoint}/{entry.repo_id}"
        if new:
            if staging.is_dir():
                for path in [p for p in staging.rglob("*") if p.is_file()]:
                    if path.relative_to(staging).as_posix() not in records:
                        path.unlink()  # parts of another revision
                write_manifest(staging, source, records, revision=commit)
                pack.parent.mkdir(parents=True, exist_ok=True)
                staging.rename(pack)
            return
        manifest = read_manifest(pack)
        files = dict(manifest["files"]) if manifest else {}
        for rel, rec in records.items():
            (pack / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, pack / rel)
            rec["mtime_ns"] = (pack / rel).stat().st_mtime_ns
            files[rel] = rec
        if records or manifest:
            write_manifest(pack, source, files, revision=commit)
        shutil.rmtree(staging, ignore_errors=True)

    # verifying -------------------------------------------------------------------------------------
    def verify(self, name: str) -> PackReport:
        """Check one pack in whichever cache holds it: files present, hashes, JSON and ONNX loadable."""
        entry = catalog.lookup(name)
        tasks = [entry.task] if entry else list(REQUIRED_FILES)
        for cache in self.caches:
            for task in tasks:
                pack = cache / task.value / clean_name(name)
                if pack.is_dir():
                    return check_pack(pack, task)
        folder = tasks[0].value if entry else "unknown"
        return PackReport(clean_name(name), folder, self.cache_dir / folder / clean_name(name), "missing", ["not in any model cache"])

    def verify_all(self) -> list[PackReport]:
        return [check_pack(pack, task) for task, pack in self.packs()]

    # importing -------------------------------------------------------------------------------------
    def import_folder(self, src: Path | str, name: str | None = None, replace: bool = False) -> list[PackReport]:
        """Copy a model pack (or every pack of a cache folder) into the primary cache, checked first."""
        src = Path(src).expanduser().resolve()
        if not src.is_dir():
            raise InvalidInputError(f"{src} is not a folder.")
        if any((src / t.value).is_dir() for t in REQUIRED_FILES):
            return [self._import_pack(pack, task, pack.name, replace) for task in REQUIRED_FILES
                    if (src / task.value).is_dir()
                    for pack in sorted((src / task.value).iterdir()) if pack.is_dir() and not pack.name.startswith(".")]
        task = pack_task(src)
        if task is None:
            raise InvalidInputError(
                f"{src} does not look like a model pack: expected config.json, visual/ and textual/ (CLIP) "
                "or detection/ and recognition/ (faces), or a cache folder with clip/ or facial-recognition/."
            )
        return [self._import_pack(src, task, name or _pack_name(src), replace)]

    def _import_pack(self, src: Path, task: ModelTask, name: str, replace: bool) -> PackReport:
        name = clean_name(name)
        report = check_pack(src, task)
        if not report.ok:
            raise ModelDamagedError(f"Not importing {src}: {report.status}: {'; '.join(report.problems)}")
        dest = self.cache_dir / task.value / name
        if dest.resolve() == src:
            return report
        if dest.exists() and not replace:
            raise InvalidInputError(f"{dest} already exists; pass --replace to overwrite it.")
        staging_root = self.cache_dir / INCOMPLETE / task.value
        staging_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"import-{name}-", dir=staging_root))
        try:
            for path in sorted(src.rglob("*")):
                rel = path.relative_to(src)
                if path.is_file() and path.name != MANIFEST and not path.name.endswith(_SKIPPED_SUFFIXES) and not rel.parts[0].startswith("."):
                    (staging / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, staging / rel)  # follows HF-snapshot symlinks to the blobs
            staging.chmod(0o755)
            write_manifest(staging, f"import {src}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                old = dest.with_name(f".{name}.replaced-{os.getpid()}")
                dest.rename(old)
                staging.rename(dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                staging.rename(dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return check_pack(dest, task)


def _pack_name(src: Path) -> str:
    """A pack's name from its folder; for a Hugging Face snapshot (`models--org--NAME/snapshots/<sha>`),
    the repo's name."""
    if src.parent.name == "snapshots" and src.parent.parent.name.startswith("models--"):
        return src.parent.parent.name.split("--")[-1]
    return src.name


def pack_task(pack: Path) -> ModelTask | None:
    """Which task a pack folder's layout belongs to."""
    for task, folders in MODEL_FOLDERS.items():
        if any((pack / f).is_dir() for f in folders):
            return task
    return None


def check_pack(pack: Path, task: ModelTask) -> PackReport:
    """Everything wrong with a pack folder, without changing it."""
    missing: list[str] = []
    damaged: list[str] = []
    for rel in REQUIRED_FILES[task]:
        path = pack / rel
        if not path.is_file():
            missing.append(f"{rel} is missing")
        elif path.stat().st_size == 0:
            damaged.append(f"{rel} is empty")
    manifest = read_manifest(pack)
    hashed_ok: set[str] = set()
    if manifest:
        for rel, rec in manifest["files"].items():
            path = pack / rel
            if not path.is_file():
                if f"{rel} is missing" not in missing:
                    missing.append(f"{rel} is missing")
                continue
            size = path.stat().st_size
            if size != rec.get("size"):
                damaged.append(f"{rel} has {size} bytes, {rec.get('size')} expected")
            elif rec.get("sha256") and file_sha256(path) != rec["sha256"]:
                damaged.append(f"{rel} does not match its recorded sha256")
            else:
                hashed_ok.add(rel)
    for path in sorted(pack.rglob("*.json")):
        rel = path.relative_to(pack).as_posix()
        if path.name == MANIFEST or rel in hashed_ok or any(p.startswith(".") for p in path.relative_to(pack).parts):
            continue
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            damaged.append(f"{rel} is not valid JSON ({e})")
    for folder in MODEL_FOLDERS[task]:
        path = pack / folder / "model.onnx"
        if path.is_file() and path.stat().st_size and folder + "/model.onnx" not in hashed_ok:
            problem = _onnx_problem(path)
            if problem:
                damaged.append(f"{folder}/model.onnx cannot be loaded ({problem})")
    if not missing and not damaged:
        expected = catalog.lookup(pack.name)
        if expected is not None:
            try:
                dim = catalog.pack_dimension(pack, task)
            except (OSError, ValueError, KeyError, TypeError) as e:
                damaged.append(f"its embedding size cannot be read ({e})")
            else:
                if dim != expected.dim:
                    damaged.append(f"it gives {dim}-d vectors but Immich's {expected.name} gives {expected.dim}-d")
    status = "damaged" if damaged else "missing" if missing else "complete"
    return PackReport(pack.name, task.value, pack, status, damaged + missing, manifest is not None, _is_writable(pack))


def _onnx_problem(path: Path) -> str | None:
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf, checker and OS errors all mean "unloadable"
        return str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    return None
