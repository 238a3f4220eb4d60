"""`immich send` as a user runs it (real subprocesses) against the fake Immich, whose ML workers post the
previews to the first ML URL that answers, as Immich's do: the answers come from the library, Immich's ML
URLs are put back when done, on Ctrl-C and after a SIGKILL (`--restore`), and nothing is forced that
would delete Immich's faces. The same flow against a real Immich is in test_real_immich.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CLIP_PACK, FACE_PACK, ROOT
from fake_immich import FakeImmich

PHOTOS = ["face_recognition/examples/obama.jpg", "face_recognition/examples/biden.jpg", "skimage/coffee.png"]
IMMICH_OWN = ["http://immich-machine-learning:3003"]


@pytest.fixture
def fake(photos_dir: Path):
    server = FakeImmich(photos_dir.parent / "immich" / "immich-openapi-specs.json")
    for rel in PHOTOS:
        server.add_asset(photos_dir / rel)
    ml = server.config["machineLearning"]
    ml["urls"] = list(IMMICH_OWN)
    ml["clip"]["modelName"], ml["facialRecognition"]["modelName"] = CLIP_PACK, FACE_PACK
    server.start()
    yield server
    server.stop()
    assert server.spec_errors == []


@pytest.fixture
def env(tmp_path: Path, fake: FakeImmich) -> dict[str, str]:
    return {**os.environ, "IMMICH_ML_DESKTOP_CONFIG_DIR": str(tmp_path / "config"),
            "IMMICH_ML_DESKTOP_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT),
            "IMMICH_URL": fake.url, "IMMICH_API_KEY": fake.admin_key}


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "immich_ml_desktop", *args], capture_output=True, text=True, env=env,
                          timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def library_args(tmp_path: Path, models_dir: Path) -> list[str]:
    return ["--library", str(tmp_path / "library.sqlite3"), "--cache-dir", str(models_dir),
            "--clip-model", CLIP_PACK, "--face-model", FACE_PACK, "--device", "cpu"]


def test_send_answers_immichs_jobs_from_the_library_and_puts_the_urls_back(fake, env, tmp_path, models_dir):
    cli(env, "immich", "index", *library_args(tmp_path, models_dir))
    stop = fake.start_ml_workers()
    try:
        out = cli(env, "immich", "send", *library_args(tmp_path, models_dir), "--poll", "0.2", "--json")
    finally:
        stop()
    summary = json.loads(out.stdout)
    assert summary["from_library"] == 2 * len(PHOTOS) and summary["computed"] == 0 and summary["errors"] == 0
    assert summary["jobs"] == ["smartSearch", "faceDetection"] and not summary["cancelled"]
    assert fake.config["machineLearning"]["urls"] == IMMICH_OWN == summary["urls_restored"]
    assert set(fake.ml_answers["smartSearch"]) == set(fake.ml_answers["faceDetection"]) == set(fake.assets)
    assert not (tmp_path / "config" / "send-state.json").exists()
    # Progress is shown while Immich takes the answers, and what was sent is said in words.
    stop = fake.start_ml_workers()
    try:
        again = cli(env, "immich", "send", *library_args(tmp_path, models_dir), "--poll", "0.2", "--force")
    finally:
        stop()
    assert "smartSearch" in again.stderr and "from library" in again.stderr
    assert f"{len(PHOTOS)} answers from the library, 0 computed, 0 errors" in again.stdout  # --force: CLIP only
    assert "Immich's ML URLs are back as they were: " + IMMICH_OWN[0] in again.stdout


def test_other_options_in_immich_are_computed_and_said(fake, env, tmp_path, models_dir):
    cli(env, "immich", "index", *library_args(tmp_path, models_dir), "--no-clip")
    held = cli(env, "stats", "--library", str(tmp_path / "library.sqlite3")).stdout
    assert f"answer cache {len(PHOTOS)} answers for Immich's requests ({len(PHOTOS)} from indexing)" in held
    fake.config["machineLearning"]["facialRecognition"]["minScore"] = 0.6
    stop = fake.start_ml_workers()
    try:
        out = cli(env, "immich", "send", *library_args(tmp_path, models_dir), "--poll", "0.2")
    finally:
        stop()
    assert f"0 answers from the library, {len(PHOTOS)} computed" in out.stdout
    assert "keeps faces scoring 0.6, the library 0.7" in out.stdout


def _wait_for(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _start_send(env, tmp_path, models_dir) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "immich_ml_desktop", "immich", "send",
                             *library_args(tmp_path, models_dir), "--poll", "0.2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_half_way_then_restore_puts_the_urls_back(fake, env, tmp_path, models_dir):
    cli(env, "immich", "index", *library_args(tmp_path, models_dir), "--no-faces")
    proc = _start_send(env, tmp_path, models_dir)  # no ML workers: Immich's queue never empties
    try:
        _wait_for(lambda: fake.config["machineLearning"]["urls"] != IMMICH_OWN)
        assert fake.config["machineLearning"]["urls"][1:] == IMMICH_OWN  # ours first, Immich's own kept behind
        proc.kill()
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert fake.config["machineLearning"]["urls"] != IMMICH_OWN  # a killed process puts nothing back itself
    out = cli(env, "immich", "send", "--restore")
    assert fake.config["machineLearning"]["urls"] == IMMICH_OWN
    assert "back as they were" in out.stdout
    assert "nothing to restore" in cli(env, "immich", "send", "--restore").stdout


def test_ctrl_c_stops_and_puts_the_urls_back_and_the_next_send_mends_a_killed_one(fake, env, tmp_path, models_dir):
    cli(env, "immich", "index", *library_args(tmp_path, models_dir), "--no-faces")
    proc = _start_send(env, tmp_path, models_dir)
    try:
        _wait_for(lambda: fake.config["machineLearning"]["urls"] != IMMICH_OWN)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, out + err
    assert fake.config["machineLearning"]["urls"] == IMMICH_OWN
    assert "cancelled" in out and "Jobs still queued in Immich" in out

    killed = _start_send(env, tmp_path, models_dir)
    try:
        _wait_for(lambda: fake.config["machineLearning"]["urls"] != IMMICH_OWN)
        killed.kill()
        killed.wait(timeout=30)
    finally:
        killed.kill()
    stop = fake.start_ml_workers()
    try:
        out = cli(env, "immich", "send", *library_args(tmp_path, models_dir), "--poll", "0.2")
    finally:
        stop()
    assert "An earlier send did not finish; Immich's ML URLs were put back first" in out.stdout
    assert fake.config["machineLearning"]["urls"] == IMMICH_OWN


def test_faces_are_never_forced(fake, env, tmp_path, models_dir):
    """Immich's forced face detection deletes its faces and the people left without any: --force re-sends
    CLIP, and faceDetection only for the assets that lack faces."""
    cli(env, "immich", "index", *library_args(tmp_path, models_dir))
    fake.processed["faceDetection"] = set(fake.assets)  # Immich has every asset's faces already
    stop = fake.start_ml_workers()
    try:
        out = json.loads(cli(env, "immich", "send", *library_args(tmp_path, models_dir), "--poll", "0.2", "--force",
                             "--json").stdout)
    finally:
        stop()
    assert out["from_library"] == len(PHOTOS)  # the CLIP answers only
    assert fake.ml_answers["faceDetection"] == {}  # a forced start would have queued every asset again
    assert set(fake.ml_answers["smartSearch"]) == set(fake.assets)


def test_a_key_that_is_not_an_admins_or_ml_switched_off_changes_nothing(fake, env, tmp_path, models_dir):
    cli(env, "immich", "index", *library_args(tmp_path, models_dir), "--no-faces")
    user = fake.add_user("Kim")
    user_key = fake.add_key(["all"], user)
    out = cli({**env, "IMMICH_API_KEY": user_key}, "immich", "send", *library_args(tmp_path, models_dir), check=False)
    assert out.returncode != 0 and "admin account" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    fake.config["machineLearning"]["enabled"] = False
    out = cli(env, "immich", "send", *library_args(tmp_path, models_dir), check=False)
    assert out.returncode != 0 and "Machine learning is switched off in Immich" in out.stderr
    assert fake.config["machineLearning"]["urls"] == IMMICH_OWN
    assert not (tmp_path / "config" / "send-state.json").exists()
    assert "nothing to restore" in cli(env, "immich", "send", "--restore").stdout


def test_a_paused_queue_is_said_and_a_send_that_cannot_move_stops_and_puts_the_urls_back(fake, env, tmp_path, models_dir):
    """Never hang: a queue that holds jobs but does not move (here paused in Immich, no worker takes them)
    ends the send after --stall-after seconds, says why, and leaves Immich's ML URLs as they were."""
    cli(env, "immich", "index", *library_args(tmp_path, models_dir), "--no-faces")
    fake.queues["smartSearch"]["isPaused"] = True
    out = cli(env, "immich", "send", *library_args(tmp_path, models_dir), "--poll", "0.2", "--stall-after", "2",
              check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "smartSearch queue is paused" in out.stdout and "have not moved for 2 s" in out.stdout
    assert "smartSearch 3 left" in out.stdout
    assert fake.config["machineLearning"]["urls"] == IMMICH_OWN
    assert not (tmp_path / "config" / "send-state.json").exists()
