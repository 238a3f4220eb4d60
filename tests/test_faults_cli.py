"""Issue 13's faults of the command line and the Immich client, each as a user meets it: real
subprocesses, real sockets and HTTP servers on 127.0.0.1, the fake Immich, real SQLite libraries."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "IMMICH_ML_DESKTOP_CONFIG_DIR": str(tmp_path / "config"),
            "IMMICH_ML_DESKTOP_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}


def cli(tmp_path: Path, *args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "immich_ml_desktop", *args], capture_output=True, text=True,
                          env=_env(tmp_path), timeout=timeout, **kwargs)


def _library(path: Path) -> Path:
    from immich_ml_desktop.library.store import LibraryStore

    LibraryStore(path).close()  # a real, empty library file
    return path


# -- item 6: a settings value of the wrong type ----------------------------------------------------------------

BAD_SETTINGS = {"threads": "4", "device": [1, 2], "extra_model_dirs": [1, 2], "server_port": True,
                "face_min_score": 5, "face_model": "antelopev2", "model_ttl": 12, "face_passes": ["padded", "sideways"]}


def test_a_settings_value_of_the_wrong_type_is_ignored_with_a_warning_and_the_rest_kept(tmp_path, monkeypatch, caplog):
    from immich_ml_desktop.settings import Settings

    monkeypatch.setenv("IMMICH_ML_DESKTOP_CONFIG_DIR", str(tmp_path / "config"))
    Settings.path().parent.mkdir(parents=True)
    Settings.path().write_text(json.dumps(BAD_SETTINGS))
    with caplog.at_level(logging.WARNING, logger="immich_ml_desktop.settings"):
        settings = Settings.load()
    default = Settings()
    assert (settings.threads, settings.device, settings.extra_model_dirs, settings.server_port, settings.face_min_score,
            settings.face_passes) \
        == (default.threads, default.device, default.extra_model_dirs, default.server_port, default.face_min_score,
            default.face_passes)
    assert settings.face_model == "antelopev2" and settings.model_ttl == 12  # the good fields stay
    warned = [r.getMessage() for r in caplog.records]
    for name in ("threads", "device", "extra_model_dirs", "server_port", "face_min_score", "face_passes"):
        line = next(m for m in warned if m.startswith(f"Ignoring the setting {name} in "))
        assert str(Settings.path()) in line and "\n" not in line
    assert "not sideways" in next(m for m in warned if "face_passes" in m)
    assert len(warned) == 6


@pytest.mark.parametrize("content", ['{"threads": "4"}', '{"device": [1, 2]}', "[1, 2]", '{"precision": 3}'])
def test_the_cli_runs_with_a_bad_settings_file_and_names_the_field(tmp_path, content: str):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "settings.json").write_text(content)
    result = cli(tmp_path, "stats", "--library", str(_library(tmp_path / "lib.sqlite3")))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "assets" in result.stdout
    warning = [line for line in result.stderr.splitlines() if "settings" in line]
    assert len(warning) == 1 and str(tmp_path / "config" / "settings.json") in warning[0]
    if content.startswith("{"):
        assert f"setting {next(iter(json.loads(content)))} " in warning[0]


# -- item 7: out-of-range index options ------------------------------------------------------------------------

@pytest.mark.parametrize("option, value, says", [
    ("--min-score", "5", "--min-score must be between 0 and 1"), ("--min-score", "-0.1", "--min-score must be between"),
    ("--min-score", "nan", "--min-score must be between"), ("--workers", "0", "--workers must be at least 1, not 0"),
    ("--workers", "-3", "--workers must be at least 1, not -3"),
    ("--face-passes", "padded,sideways", "--face-passes: unknown pass sideways"),
])
def test_index_refuses_out_of_range_options_before_it_stores_anything(tmp_path, option: str, value: str, says: str):
    photos = tmp_path / "photos"
    photos.mkdir()
    library = tmp_path / "lib" / "library.sqlite3"
    result = cli(tmp_path, "index", str(photos), "--library", str(library), "--device", "cpu", "--no-download",
                 "--cache-dir", str(tmp_path / "models"), option, value)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and says in result.stderr
    assert not library.parent.exists()  # refused before the library was opened


@pytest.mark.parametrize("kwargs, says", [({"face_min_score": 5.0}, "between 0 and 1"),
                                          ({"face_min_score": 0.7, "workers": 0}, "at least 1, not 0")])
def test_an_index_job_refuses_options_it_cannot_index_with(tmp_path, cpu_engine, kwargs, says: str):
    from immich_ml_desktop.errors import InvalidInputError
    from immich_ml_desktop.library.folders import FolderSource
    from immich_ml_desktop.library.store import LibraryStore
    from immich_ml_desktop.services.index import IndexJob

    from conftest import FACE_PACK

    with LibraryStore(tmp_path / "lib.sqlite3") as store, pytest.raises(InvalidInputError, match=says):
        IndexJob(store, cpu_engine, FolderSource([tmp_path]), clip_model=None, face_model=FACE_PACK, **kwargs)


# -- item 11: a closed pipe; a mistyped --library ----------------------------------------------------------------

@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_output_into_a_closed_pipe_ends_quietly(tmp_path, json_flag: list[str]):
    """`stats | head -3`: the reader is gone before the command writes (closed here before it starts)."""
    library = _library(tmp_path / "lib.sqlite3")
    proc = subprocess.Popen([sys.executable, "-m", "immich_ml_desktop", "stats", "--library", str(library), *json_flag],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(tmp_path))
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141  # as a shell reports a tool ended by SIGPIPE
    assert err == ""  # no traceback, no "Exception ignored"


def test_stats_into_head_prints_its_first_lines_and_no_traceback(tmp_path):
    library = _library(tmp_path / "lib.sqlite3")
    script = f"{sys.executable} -m immich_ml_desktop stats --library {library} | head -1"
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=_env(tmp_path), timeout=120)
    assert result.stdout == f"library  {library}\n" and "Traceback" not in result.stderr


@pytest.fixture
def fake(photos_dir: Path):
    from fake_immich import FakeImmich

    server = FakeImmich(photos_dir.parent / "immich" / "immich-openapi-specs.json")
    server.start()
    yield server
    server.stop()
    assert server.spec_errors == []


@pytest.mark.parametrize("command", [["stats"], ["stats", "--json"], ["search", "a dog"], ["results", "ocr"],
                                     ["cluster"], ["immich", "send"], ["immich", "push"], ["immich", "push", "--dry-run"]])
def test_a_mistyped_library_is_named_and_nothing_is_created(tmp_path, fake, command: list[str]):
    missing = tmp_path / "typo" / "libary.sqlite3"
    server = ["--server", fake.url, "--api-key", fake.admin_key] if command[0] == "immich" else []
    result = cli(tmp_path, *command, "--library", str(missing), *server)
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: There is no library at {missing}") and "index" in line
    assert not missing.parent.exists()  # neither the file nor its folder
    assert fake.log == []  # refused before Immich was asked anything


# -- items 5 and 10: a server that never answers, something that is not Immich, a malformed URL ------------------

@pytest.fixture
def silent_port():
    """A real socket on 127.0.0.1 that accepts connections (the kernel's backlog does) and never answers."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_immich_check_at_a_server_that_never_answers_says_so_within_seconds(tmp_path, silent_port: int):
    import time

    start = time.monotonic()
    result = cli(tmp_path, "immich", "check", "--server", f"http://127.0.0.1:{silent_port}", "--api-key", "k")
    took = time.monotonic() - start
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "accepted the connection but sent no answer" in line and "run the command again" not in line
    assert took < 30  # one 10 s wait, not 4 x 30 s and backoff (128 s); generous for a busy machine


@pytest.mark.parametrize("url, says", [
    ("http//photos.local", "mistyped http://"), ("https:/photos.local", "mistyped https://"),
    ("http:photos.local", "mistyped http://"), ("htp://photos.local", "not an http(s) URL"),
    ("http://", "has no host name"), ("https://", "has no host name"), ("http://:2283", "with a host name"),
])
def test_a_malformed_server_url_is_refused_at_once(tmp_path, url: str, says: str):
    result = cli(tmp_path, "-vv", "immich", "check", "--server", url, "--api-key", "k")
    assert result.returncode == 2 and result.stdout == ""
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert says in line and "Cannot reach" not in line
    assert "retry" not in result.stderr and "HTTP Request" not in result.stderr  # no network at all


@pytest.mark.parametrize("url", ["photos.local:2283", "http.local", "photos.local/immich", "http://photos.local:2283/"])
def test_urls_that_only_look_odd_are_still_accepted(url: str):
    from immich_ml_desktop.immich.client import api_base_url

    import httpx

    base = api_base_url(url)
    assert base.endswith("/api") and httpx.URL(base).host in ("photos.local", "http.local")


def test_immich_check_at_a_plain_web_server_says_in_one_line_that_it_is_not_immich(tmp_path):
    import http.server
    import threading

    (tmp_path / "index.html").write_text("<html><body><h1>It works!</h1>" + "<p>x</p>\n" * 50 + "</body></html>")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        result = cli(tmp_path, "immich", "check", "--server", f"http://127.0.0.1:{web.server_port}", "--api-key", "k")
    finally:
        web.shutdown()
        web.server_close()
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert f"http://127.0.0.1:{web.server_port} is not an Immich server" in line and "<" not in line


def test_immich_check_at_our_own_ml_server_says_it_is_not_immich(tmp_path, cpu_engine):
    from immich_ml_desktop.server.ml_server import MlServer

    with MlServer(cpu_engine, port=0) as ml:
        result = cli(tmp_path, "immich", "check", "--server", ml.url, "--api-key", "k")
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "is not an Immich server" in line and "Not Found" not in line and "detail" not in line
