"""The index, stats and search commands as a user runs them (real subprocesses, real packs and photos),
including SIGKILL halfway through `index` and the run after it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from immich_ml_desktop.library.folders import FolderSource, load_preview
from immich_ml_desktop.library.store import LibraryStore
from immich_ml_desktop.services.index import IndexJob

from conftest import CLIP_PACK, FACE_PACK, PHOTOS

KILL_PHOTOS = sorted((PHOTOS / "face_recognition/examples").glob("*.jpg")) + sorted(
    (PHOTOS / "photoprism/internal/ai/face/testdata").glob("*.jpg")
)[:4]


def cli(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "immich_ml_desktop", *args], capture_output=True, text=True,
                          env=env or os.environ.copy(), timeout=300, **kwargs)


def model_args(models_dir: Path) -> list[str]:
    return ["--cache-dir", str(models_dir), "--device", "cpu", "--no-download",
            "--clip-model", CLIP_PACK, "--face-model", FACE_PACK]


def _photos(folder: Path, n: int | None = None) -> Path:
    """Copies at preview size (the originals are read-only, and smaller files index faster)."""
    folder.mkdir(parents=True)
    for i, src in enumerate(KILL_PHOTOS[:n]):
        load_preview(src, 360).save(folder / f"{i:02d}_{src.name}", quality=92)
    return folder


def _done(library: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{library}?mode=ro", uri=True, timeout=1)
        try:
            return conn.execute("SELECT count(*) FROM asset_status WHERE task = 'faces' AND state = 'done'").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0  # not created yet


def test_sigkill_halfway_then_next_run_completes_with_same_vectors(models_dir, tmp_path) -> None:
    folder = _photos(tmp_path / "photos")
    total = len(list(folder.iterdir()))
    library = tmp_path / "killed.sqlite3"
    args = ["index", str(folder), "--library", str(library), "--workers", "1", *model_args(models_dir)]
    proc = subprocess.Popen([sys.executable, "-m", "immich_ml_desktop", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _done(library) < total // 3:
            assert proc.poll() is None, "index finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    killed_at = _done(library)
    assert 0 < killed_at < total

    second = cli(*args, "--json")
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["new"] == 0 and summary["failed"] == 0
    assert summary["indexed"] <= total - killed_at + 1  # only what the kill left (plus at most one in flight)
    assert summary["library_stats"]["indexed"] == total

    conn = sqlite3.connect(library)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*), count(DISTINCT key) FROM assets").fetchone() == (total, total)
    assert conn.execute("SELECT count(*) FROM clip_vectors").fetchone()[0] == total
    assert conn.execute("SELECT count(*) FROM asset_status").fetchone()[0] == 2 * total
    conn.close()

    # the same library an uninterrupted run makes (the job the command runs, in-process)
    from immich_ml_desktop.models.engine import Engine

    with Engine(models_dir, "cpu", work_dir=tmp_path / "work") as engine, \
            LibraryStore(tmp_path / "clean.sqlite3") as clean, LibraryStore(library) as killed:
        IndexJob(clean, engine, FolderSource([folder]), clip_model=CLIP_PACK, face_model=FACE_PACK).run()
        assert killed.stats() == clean.stats()
        pairs: list[tuple[int, int]] = []
        for asset in clean.assets():
            other = killed.asset_by_key("folder", asset.key)
            assert other is not None and (other.width, other.height) == (asset.width, asset.height)
            np.testing.assert_allclose(killed.clip_vector(other.id, CLIP_PACK), clean.clip_vector(asset.id, CLIP_PACK),
                                       atol=1e-5)
            a_faces, b_faces = clean.faces(asset_id=asset.id), killed.faces(asset_id=other.id)
            assert [f.box for f in a_faces] == [f.box for f in b_faces]
            pairs.extend(zip((f.id for f in a_faces), (f.id for f in b_faces)))
        # photos finish in any order when several are worked on at once: compare each face with its twin
        a_ids, a_vecs = clean.face_vectors(FACE_PACK)
        b_ids, b_vecs = killed.face_vectors(FACE_PACK)
        a_row, b_row = {int(i): r for r, i in enumerate(a_ids)}, {int(i): r for r, i in enumerate(b_ids)}
        assert len(pairs) == len(a_ids) == len(b_ids)
        for a_id, b_id in pairs:
            np.testing.assert_allclose(a_vecs[a_row[a_id]], b_vecs[b_row[b_id]], atol=1e-4)


def test_index_stats_search_commands(models_dir, tmp_path) -> None:
    folder = _photos(tmp_path / "photos", 3)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    library = tmp_path / "lib.sqlite3"
    first = cli("index", str(folder), "--library", str(library), *model_args(models_dir), "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert (summary["total"], summary["indexed"], summary["failed"]) == (4, 3, 1)

    stats = cli("stats", "--library", str(library), "--json")
    assert stats.returncode == 0, stats.stderr
    data = json.loads(stats.stdout)
    assert {k: data[k] for k in ("assets", "indexed", "failed", "clip")} == {"assets": 4, "indexed": 3, "failed": 1, "clip": 3}
    assert data["faces"] > 0 and data["models"] == {"clip": [CLIP_PACK], "faces": [FACE_PACK]}
    assert {f["path"] for f in data["failures"]} == {str(folder / "broken.jpg")}
    assert all("broken.jpg" in f["reason"] for f in data["failures"])

    human = cli("stats", "--library", str(library))
    assert "failed   " + str(folder / "broken.jpg") in human.stdout

    found = cli("search", "a person", "--library", str(library), "--limit", "3", *model_args(models_dir)[:-2], "--json")
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout)["results"]
    assert len(results) == 3 and [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert all(Path(r["path"]).parent == folder for r in results)

    again = cli("index", str(folder), "--library", str(library), *model_args(models_dir), "--json")
    assert json.loads(again.stdout)["total"] == 0  # nothing to do the second time


@pytest.mark.parametrize("content", [b"just some text " * 50, b"SQLite format 3\x00" + bytes(range(256)) * 8])
def test_commands_refuse_a_file_that_is_not_a_library(tmp_path, content: bytes) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_bytes(content)
    result = cli("stats", "--library", str(bad), "--json")
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "not a library" in lines[0]
    assert bad.read_bytes() == content


def test_index_of_a_missing_folder_fails_clearly(tmp_path) -> None:
    result = cli("index", str(tmp_path / "nope"), "--library", str(tmp_path / "l.sqlite3"), "--no-download")
    assert result.returncode != 0 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_face_passes_option_chooses_the_librarys_own_passes(models_dir, tmp_path) -> None:
    """A tight crop of a face (which only the padded pass finds): `--face-passes none` finds no face in it,
    `--face-passes padded` finds it; the settings' list is what a run without the option uses."""
    from PIL import Image

    from immich_ml_desktop.models.engine import Engine
    from immich_ml_desktop.models.images import DecodedImage, decode_image, to_bgr

    folder = tmp_path / "photos"
    folder.mkdir()
    source = PHOTOS / "face_recognition/examples/obama.jpg"
    image = decode_image(source.read_bytes())
    with Engine(models_dir, "cpu", work_dir=tmp_path / "work") as engine:
        face = engine.faces(FACE_PACK, DecodedImage.from_bgr(to_bgr(image)))[0]
    x1, y1, x2, y2 = (int(v) for v in face.box)
    image.crop((x1, y1, x2, y2)).resize((150, 150), Image.Resampling.BICUBIC).save(folder / "tight.jpg", quality=95)

    def faces_found(passes: str | None, settings: dict | None = None) -> int:
        library = tmp_path / f"lib-{passes}-{'-'.join((settings or {}).get('face_passes', []))}.sqlite3"
        env = os.environ.copy()
        if settings is not None:
            env["IMMICH_ML_DESKTOP_CONFIG_DIR"] = str(tmp_path / "config")
            (tmp_path / "config").mkdir(exist_ok=True)
            (tmp_path / "config" / "settings.json").write_text(json.dumps(settings))
        extra = [] if passes is None else ["--face-passes", passes]
        run = cli("index", str(folder), "--library", str(library), *model_args(models_dir), "--no-clip", *extra,
                  "--json", env=env)
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout)["library_stats"]["faces"]

    assert faces_found("none") == 0
    assert faces_found("padded") == 1
    assert faces_found(None, {"face_passes": ["bright"]}) == 0  # the settings leave padded out
    assert faces_found(None, {"face_passes": ["padded"]}) == 1
