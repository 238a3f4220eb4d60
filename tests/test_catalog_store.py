"""The model catalogue and store: downloads from a real test hub on 127.0.0.1 (progress, resume,
corruption, errors, no network when complete), verify, import, and existing caches used in place."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from immich_ml_desktop.cli import main
from immich_ml_desktop.errors import DownloadError, InvalidInputError, ModelDamagedError, ModelNotFoundError
from immich_ml_desktop.model_store import catalog
from immich_ml_desktop.models.base import ModelTask
from immich_ml_desktop.model_store.store import INCOMPLETE, MANIFEST, DownloadProgress, ModelStore
from tests._hub_server import LocalHub
from tests.conftest import CLIP_PACK, FACE_PACK, FACE_PACK_128

CLIP_NAME = "ViT-B-32__openai"  # served with the tiny pack's files
FACE_NAME = "buffalo_s"
CLIP_FILES = {
    "config.json",
    "visual/model.onnx",
    "visual/preprocess_cfg.json",
    "textual/model.onnx",
    "textual/tokenizer.json",
    "textual/tokenizer_config.json",
    "textual/special_tokens_map.json",
}
# What Immich's hub repos hold besides the pack: exports for other accelerators and a README.
EXTRAS = {
    "README.md": b"# test repo\n",
    ".gitattributes": b"*.onnx filter=lfs\n",
    "visual/fp16/model.armnn": b"\0" * 4096,
    "rknpu/rk3588/visual/model.rknn": b"\1" * 4096,
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def hub(models_dir: Path):
    with LocalHub() as server:
        server.add_repo(f"immich-app/{CLIP_NAME}", models_dir / "clip" / CLIP_PACK, files=EXTRAS)
        server.add_repo(f"immich-app/{FACE_NAME}", models_dir / "facial-recognition" / FACE_PACK_128)
        yield server


@pytest.fixture
def online(hub: LocalHub, monkeypatch: pytest.MonkeyPatch) -> LocalHub:
    """Downloads allowed, pointed at the test hub (conftest turns them off for every other test)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    hub.reset_log()
    hub.state.faults.clear()
    return hub


def file_gets(hub: LocalHub, rel: str) -> list:
    return [r for r in hub.requests if r.method == "GET" and r.path.endswith("/" + rel) and "/resolve/" in r.path]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# catalogue -------------------------------------------------------------------------------------------
def test_catalogue_has_immichs_models_with_their_dimensions() -> None:
    clip = catalog.entries(ModelTask.SEARCH)
    assert len(clip) >= 55
    dims = {e.name: e.dim for e in clip}
    assert dims["ViT-B-32__openai"] == 512
    assert dims["ViT-B-16__openai"] == 512
    assert dims["ViT-L-14__openai"] == 768
    assert dims["ViT-B-32__laion2b-s34b-b79k"] == 512
    assert dims["RN50__openai"] == 1024
    assert dims["ViT-B-16-SigLIP__webli"] == 768
    assert dims["ViT-SO400M-16-SigLIP2-384__webli"] == 1152
    assert dims["ViT-gopt-16-SigLIP2-384__webli"] == 1536
    assert dims["nllb-clip-base-siglip__v1"] == 768
    assert dims["XLM-Roberta-Large-Vit-B-32"] == 512
    assert dims["LABSE-Vit-L-14"] == 768
    assert min(dims.values()) == 512 and max(dims.values()) == 1536
    assert catalog.lookup("XLM-Roberta-Large-Vit-B-32").multilingual
    assert catalog.lookup("nllb-clip-large-siglip__v1").family == "nllb"
    assert not catalog.lookup("ViT-B-32__openai").multilingual
    faces = {e.name: e for e in catalog.entries(ModelTask.FACIAL_RECOGNITION)}
    assert set(faces) == {"buffalo_l", "buffalo_m", "buffalo_s", "antelopev2"}
    assert all(e.dim == 512 for e in faces.values())


def test_lookup_accepts_immichs_spellings() -> None:
    assert catalog.lookup("immich-app/ViT-B-32__openai").name == "ViT-B-32__openai"
    assert catalog.lookup("vit-b-32__openai").name == "ViT-B-32__openai"
    assert catalog.lookup("ViT-B-32::openai").name == "ViT-B-32__openai"  # the spelling older Immich versions used
    assert catalog.lookup("buffalo_l").repo_id == "immich-app/buffalo_l"
    assert catalog.lookup("not-a-model") is None


def test_custom_packs_get_their_dimension_from_their_files(models_dir: Path) -> None:
    custom = {e.name: e for e in catalog.custom_entries([models_dir])}
    assert custom[CLIP_PACK].dim == 512 and custom[CLIP_PACK].task == ModelTask.SEARCH
    assert custom[FACE_PACK].dim == 512
    assert custom[FACE_PACK_128].dim == 128  # read from the recogniser's output shape
    listed = {e.name for e in catalog.entries(cache_dirs=[models_dir])}
    assert {CLIP_PACK, FACE_PACK, FACE_PACK_128, "buffalo_l"} <= listed


# download ----------------------------------------------------------------------------------------------
def test_download_fetches_only_the_pack_files_with_progress(tmp_path: Path, online: LocalHub, models_dir: Path) -> None:
    events: list[DownloadProgress] = []
    pack = ModelStore(tmp_path).download(CLIP_NAME, progress=events.append)

    assert pack == tmp_path / "clip" / CLIP_NAME
    got = {p.relative_to(pack).as_posix() for p in pack.rglob("*") if p.is_file()}
    assert got == CLIP_FILES | {MANIFEST}
    source = models_dir / "clip" / CLIP_PACK
    for rel in CLIP_FILES:
        assert sha256(pack / rel) == sha256(source / rel), rel
    assert not any(x in r.path for r in online.requests for x in ("armnn", "rknn", "README"))
    assert not (tmp_path / INCOMPLETE / "clip" / CLIP_NAME).exists()

    total = sum((source / rel).stat().st_size for rel in CLIP_FILES)
    downloading = [e for e in events if e.status == "downloading"]
    assert {e.file for e in downloading} == CLIP_FILES
    assert [e.done for e in downloading] == sorted(e.done for e in downloading)
    assert all(e.total == total and 0 < e.file_done <= e.file_total for e in downloading)
    assert max(e.file_done for e in downloading if e.file == "textual/model.onnx") == (source / "textual/model.onnx").stat().st_size
    assert events[-1].status == "complete" and events[-1].done == total and events[-1].fraction == 1.0
    manifest = json.loads((pack / MANIFEST).read_text())
    assert manifest["files"]["visual/model.onnx"]["sha256"] == sha256(source / "visual/model.onnx")
    assert manifest["source"] == f"{online.url}/immich-app/{CLIP_NAME}"


def test_complete_pack_makes_no_network_call(tmp_path: Path, online: LocalHub, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ModelStore(tmp_path)
    store.download(FACE_NAME)
    assert len(online.requests) == 3  # model info + two files
    online.reset_log()
    events: list[DownloadProgress] = []
    assert store.download(FACE_NAME, progress=events.append) == tmp_path / "facial-recognition" / FACE_NAME
    assert online.requests == []
    assert [e.status for e in events] == ["complete"]
    # Even with the hub unreachable, a complete pack is found at once.
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    assert store.download(FACE_NAME) == tmp_path / "facial-recognition" / FACE_NAME


def test_engine_downloads_missing_models_through_the_store(tmp_path: Path, online: LocalHub, cpu_engine) -> None:
    from immich_ml_desktop.model_store.fetcher import ModelFetcher
    from immich_ml_desktop.models.engine import Engine

    fetcher = ModelFetcher(tmp_path / "cache")
    with Engine(tmp_path / "cache", "cpu", work_dir=tmp_path / "work", allow_downloads=True, downloader=fetcher) as engine:
        vector = engine.clip_text(CLIP_NAME, "a photo of a dog")
    assert np.allclose(vector, cpu_engine.clip_text(CLIP_PACK, "a photo of a dog"), atol=1e-6)
    assert (tmp_path / "cache" / "clip" / CLIP_NAME / MANIFEST).is_file()


def test_interrupted_file_is_resumed_with_a_range_request(tmp_path: Path, online: LocalHub, models_dir: Path) -> None:
    rel = "textual/model.onnx"
    online.fail("drop", rel, at=0.4)
    pack = ModelStore(tmp_path).download(CLIP_NAME)
    size = (models_dir / "clip" / CLIP_PACK / rel).stat().st_size
    gets = file_gets(online, rel)
    assert len(gets) == 2
    assert gets[0].range is None
    start = int(gets[1].range.removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= int(size * 0.4)  # only the rest was asked for
    assert sha256(pack / rel) == sha256(models_dir / "clip" / CLIP_PACK / rel)


def test_failed_download_leaves_no_pack_and_the_next_run_resumes(tmp_path: Path, online: LocalHub, models_dir: Path) -> None:
    rel = "visual/model.onnx"
    online.fail("drop", rel, at=0.5)
    store = ModelStore(tmp_path, retries=0)
    with pytest.raises(DownloadError, match="resume"):
        store.download(CLIP_NAME)
    assert not (tmp_path / "clip" / CLIP_NAME).exists()  # never a half-written pack in place
    assert store.find_pack(CLIP_NAME) is None
    parts = list((tmp_path / INCOMPLETE).rglob("*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size > 0

    had = parts[0].stat().st_size
    online.reset_log()
    pack = store.download(CLIP_NAME)
    assert [r.range for r in file_gets(online, rel)] == [f"bytes={had}-"]
    assert len(file_gets(online, "config.json")) == 0  # already verified in the first run: not fetched again
    assert sha256(pack / rel) == sha256(models_dir / "clip" / CLIP_PACK / rel)
    assert store.verify(CLIP_NAME).status == "complete"


def test_corrupted_download_is_detected_and_fetched_again(tmp_path: Path, online: LocalHub, models_dir: Path) -> None:
    rel = "visual/model.onnx"
    online.fail("corrupt", rel)
    pack = ModelStore(tmp_path).download(CLIP_NAME)
    assert len(file_gets(online, rel)) == 2
    assert sha256(pack / rel) == sha256(models_dir / "clip" / CLIP_PACK / rel)


def test_damaged_file_in_the_cache_is_reported_and_refetched(tmp_path: Path, online: LocalHub, models_dir: Path) -> None:
    store = ModelStore(tmp_path)
    pack = store.download(CLIP_NAME)
    target = pack / "visual/model.onnx"
    data = bytearray(target.read_bytes())
    data[1000:1010] = b"\xff" * 10  # same size, different bytes
    target.write_bytes(bytes(data))
    report = store.verify(CLIP_NAME)
    assert report.status == "damaged" and any("visual/model.onnx" in p and "sha256" in p for p in report.problems)

    online.reset_log()
    store.download(CLIP_NAME)
    fetched = [r.path for r in online.requests if "/resolve/" in r.path]
    assert fetched and all(p.endswith("visual/model.onnx") for p in fetched)
    assert sha256(target) == sha256(models_dir / "clip" / CLIP_PACK / "visual/model.onnx")
    assert store.verify(CLIP_NAME).status == "complete"

    (pack / "textual/tokenizer.json").write_bytes(b"{")  # truncated
    assert store.verify(CLIP_NAME).status == "damaged"
    store.download(CLIP_NAME)
    assert store.verify(CLIP_NAME).status == "complete"


def test_unknown_repo_gives_a_clear_error(tmp_path: Path, online: LocalHub) -> None:
    with pytest.raises(DownloadError, match=r"immich-app/ViT-B-16__openai was not found on http://127\.0\.0\.1"):
        ModelStore(tmp_path).download("ViT-B-16__openai")
    assert not (tmp_path / "clip" / "ViT-B-16__openai").exists()


def test_missing_file_gives_a_clear_error(tmp_path: Path, online: LocalHub) -> None:
    online.fail("404", "textual/tokenizer.json")
    with pytest.raises(DownloadError, match="textual/tokenizer.json was not found"):
        ModelStore(tmp_path).download(CLIP_NAME)
    assert not (tmp_path / "clip" / CLIP_NAME).exists()


def test_server_errors_give_a_clear_error(tmp_path: Path, online: LocalHub) -> None:
    online.fail("500", f"/api/models/immich-app/{FACE_NAME}")
    with pytest.raises(DownloadError, match="HTTP 500"):
        ModelStore(tmp_path).download(FACE_NAME)
    online.fail("500", "recognition/model.onnx", times=5)
    with pytest.raises(DownloadError, match=r"recognition/model.onnx.*HTTP 500"):
        ModelStore(tmp_path, retries=1).download(FACE_NAME)
    assert len(file_gets(online, "recognition/model.onnx")) == 2
    assert not (tmp_path / "facial-recognition" / FACE_NAME).exists()


def test_unreachable_hub_gives_a_clear_error(tmp_path: Path, online: LocalHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    start = time.monotonic()
    with pytest.raises(DownloadError, match="Cannot reach http://127.0.0.1"):
        ModelStore(tmp_path).download(FACE_NAME)
    assert time.monotonic() - start < 10


def test_unknown_name_fails_at_once_without_network(tmp_path: Path, online: LocalHub) -> None:
    with pytest.raises(ModelNotFoundError, match="not one of Immich's models"):
        ModelStore(tmp_path).download("my-own-model")
    assert online.requests == []


def test_offline_mode_is_respected(tmp_path: Path, online: LocalHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE"):
        ModelStore(tmp_path).download(FACE_NAME)
    assert online.requests == []


def test_cli_download_prints_the_pack(tmp_path: Path, online: LocalHub, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "download", FACE_NAME, "--cache-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert str(tmp_path / "facial-recognition" / FACE_NAME) in out
    assert "detection/model.onnx" in err and "recognition/model.onnx" in err
    assert main(["models", "download", "nope", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


# verify ------------------------------------------------------------------------------------------------
def test_verify_reports_the_shared_packs_complete(models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "verify", "--cache-dir", str(models_dir), "--json"]) == 0
    reports = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(reports) == {CLIP_PACK, FACE_PACK, FACE_PACK_128}
    assert all(r["status"] == "complete" and r["problems"] == [] for r in reports.values())
    assert main(["models", "verify", "--cache-dir", str(models_dir)]) == 0
    assert capsys.readouterr().out.count("complete") == 3


def test_verify_finds_truncated_onnx_and_bad_json(tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(models_dir / "facial-recognition" / FACE_PACK, cache / "facial-recognition" / FACE_PACK)
    shutil.copytree(models_dir / "clip" / CLIP_PACK, cache / "clip" / CLIP_PACK)
    onnx_path = cache / "facial-recognition" / FACE_PACK / "recognition" / "model.onnx"
    os.chmod(onnx_path, 0o644)
    with open(onnx_path, "r+b") as f:
        f.truncate(onnx_path.stat().st_size // 2)
    cfg = cache / "clip" / CLIP_PACK / "visual" / "preprocess_cfg.json"
    os.chmod(cfg, 0o644)
    cfg.write_text('{"size": [224, ')

    assert main(["models", "verify", "--cache-dir", str(cache), "--json"]) == 1
    reports = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert reports[FACE_PACK]["status"] == "damaged"
    assert any("recognition/model.onnx cannot be loaded" in p for p in reports[FACE_PACK]["problems"])
    assert reports[CLIP_PACK]["status"] == "damaged"
    assert any("preprocess_cfg.json is not valid JSON" in p for p in reports[CLIP_PACK]["problems"])

    (cache / "clip" / CLIP_PACK / "textual" / "tokenizer.json").unlink()
    cfg.write_text(json.dumps({"size": [224, 224], "mean": [0.5] * 3, "std": [0.5] * 3}))
    report = ModelStore(cache).verify(CLIP_PACK)
    assert report.status == "missing" and report.problems == ["textual/tokenizer.json is missing"]
    assert ModelStore(cache).verify("buffalo_l").status == "missing"


def test_verify_flags_a_pack_with_the_wrong_dimension(tmp_path: Path, models_dir: Path) -> None:
    """A pack named like Immich's ViT-L-14 but giving 512-d vectors would poison Immich's index."""
    pack = tmp_path / "clip" / "ViT-L-14__openai"
    shutil.copytree(models_dir / "clip" / CLIP_PACK, pack)
    report = ModelStore(tmp_path).verify("ViT-L-14__openai")
    assert report.status == "damaged" and "512-d" in report.problems[0] and "768-d" in report.problems[0]


# import and caches used in place -------------------------------------------------------------------------
def test_import_folder_copies_and_records_a_pack(tmp_path: Path, models_dir: Path) -> None:
    store = ModelStore(tmp_path / "cache")
    source = models_dir / "facial-recognition" / FACE_PACK
    before = {p: p.stat().st_mtime_ns for p in source.rglob("*")}
    [report] = store.import_folder(source, name="my_faces")
    assert report.status == "complete" and report.managed
    assert report.path == tmp_path / "cache" / "facial-recognition" / "my_faces"
    assert sha256(report.path / "recognition/model.onnx") == sha256(source / "recognition/model.onnx")
    assert {p: p.stat().st_mtime_ns for p in source.rglob("*")} == before  # the source is left alone
    assert catalog.custom_entries([tmp_path / "cache"])[0].dim == 512
    with pytest.raises(InvalidInputError, match="already exists"):
        store.import_folder(source, name="my_faces")
    assert store.import_folder(source, name="my_faces", replace=True)[0].ok

    damaged = tmp_path / "damaged" / "bad_faces"
    shutil.copytree(source, damaged)
    (damaged / "detection" / "model.onnx").chmod(0o644)
    (damaged / "detection" / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelDamagedError, match="detection/model.onnx"):
        store.import_folder(damaged)
    assert not (tmp_path / "cache" / "facial-recognition" / "bad_faces").exists()
    with pytest.raises(InvalidInputError, match="does not look like a model pack"):
        store.import_folder(tmp_path / "damaged")


def test_import_a_whole_cache_and_a_hub_snapshot(tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    assert main(["models", "import", str(models_dir), "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out.count("imported") == 3
    assert {r.name for r in ModelStore(cache).verify_all() if r.ok and r.managed} == {CLIP_PACK, FACE_PACK, FACE_PACK_128}

    snapshot = tmp_path / "hf" / "models--immich-app--buffalo_m" / "snapshots" / ("0" * 40)
    shutil.copytree(models_dir / "facial-recognition" / FACE_PACK, snapshot)
    [report] = ModelStore(cache).import_folder(snapshot)
    assert report.name == "buffalo_m" and report.ok


def test_existing_immich_cache_is_used_in_place_read_only(
    tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMMICH_ML_DESKTOP_CONFIG_DIR", str(tmp_path / "config"))  # this test saves settings
    listing = sorted((p.relative_to(models_dir), p.stat().st_mtime_ns) for p in models_dir.rglob("*"))
    store = ModelStore(tmp_path / "empty", [models_dir])
    assert store.find_pack(CLIP_PACK) == models_dir / "clip" / CLIP_PACK
    assert len([r for r in store.verify_all() if r.ok]) == 3

    assert main(["models", "import", "--in-place", str(models_dir)]) == 0
    assert "in place" in capsys.readouterr().out
    from immich_ml_desktop.settings import Settings

    assert str(models_dir.resolve()) in Settings.load().extra_model_dirs
    assert main(["models", "list", "--installed", "--json", "--cache-dir", str(tmp_path / "empty")]) == 0
    installed = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert installed[FACE_PACK_128]["dim"] == 128 and installed[FACE_PACK_128]["custom"]
    assert sorted((p.relative_to(models_dir), p.stat().st_mtime_ns) for p in models_dir.rglob("*")) == listing


def test_cli_list_shows_the_catalogue(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["models", "list", "--json", "--task", "facial-recognition", "--cache-dir", str(tmp_path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["buffalo_l", "buffalo_m", "buffalo_s", "antelopev2"]
    assert all(not r["installed"] for r in rows)
    assert main(["models", "list", "--cache-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("ViT-SO400M-16-SigLIP2-384__webli") and "1152-d" in line for line in lines)


def test_concurrent_downloads_of_one_pack_fetch_it_once(tmp_path: Path, online: LocalHub) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        packs = list(pool.map(lambda _: ModelStore(tmp_path).download(FACE_NAME), range(3)))
    assert packs == [tmp_path / "facial-recognition" / FACE_NAME] * 3
    assert len(file_gets(online, "recognition/model.onnx")) == 1


def test_missing_files_of_a_foreign_pack_are_added_without_touching_the_rest(tmp_path: Path, online: LocalHub, models_dir: Path) -> None:
    """A pack copied by hand (no manifest) keeps its own files; only what it lacks is fetched."""
    pack = tmp_path / "clip" / CLIP_NAME
    shutil.copytree(models_dir / "clip" / CLIP_PACK, pack)
    for p in pack.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    (pack / "textual" / "tokenizer.json").unlink()
    config_mtime = (pack / "config.json").stat().st_mtime_ns
    ModelStore(tmp_path).download(CLIP_NAME)
    fetched = [r.path for r in online.requests if "/resolve/" in r.path]
    assert len(fetched) == 1 and fetched[0].endswith("textual/tokenizer.json")
    assert (pack / "config.json").stat().st_mtime_ns == config_mtime
    assert ModelStore(tmp_path).verify(CLIP_NAME).status == "complete"


def test_the_test_hub_speaks_the_hub_protocol_huggingface_hub_expects(tmp_path: Path, online: LocalHub, models_dir: Path) -> None:
    """huggingface_hub itself (in a fresh process: it reads HF_ENDPOINT once, at import) downloads
    from the test hub, so what the store is tested against is what the real hub serves."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from huggingface_hub import HfApi, snapshot_download\n"
        f"info = HfApi().model_info('immich-app/{CLIP_NAME}', files_metadata=True)\n"
        "lfs = {s.rfilename: s.lfs.sha256 for s in info.siblings if s.lfs}\n"
        f"snapshot_download('immich-app/{CLIP_NAME}', local_dir=sys.argv[1], allow_patterns=['visual/*'])\n"
        "print(lfs['visual/model.onnx'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT=online.url, HF_HUB_DISABLE_TELEMETRY="1", HF_HOME=str(tmp_path / "hf-home"))
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "snap")], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    expected = sha256(models_dir / "clip" / CLIP_PACK / "visual/model.onnx")
    assert out.stdout.split()[-1] == expected
    assert sha256(tmp_path / "snap" / "visual" / "model.onnx") == expected


def test_a_touched_but_intact_file_is_hashed_once_and_not_refetched(tmp_path: Path, online: LocalHub) -> None:
    store = ModelStore(tmp_path)
    pack = store.download(FACE_NAME)
    target = pack / "recognition" / "model.onnx"
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    online.reset_log()
    assert store.download(FACE_NAME) == pack
    assert online.requests == []
    manifest = json.loads((pack / MANIFEST).read_text())
    assert manifest["files"]["recognition/model.onnx"]["mtime_ns"] == target.stat().st_mtime_ns
    assert manifest["revision"]
