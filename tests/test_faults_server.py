"""Faults of the ML server found by trying it as a user would (issue 13): each test starts real servers
on 127.0.0.1 over the shared test packs, sends real requests and checks the answer a user gets."""

from __future__ import annotations

import json
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest

from immich_ml_desktop.errors import InvalidInputError
from immich_ml_desktop.models.engine import Engine
from immich_ml_desktop.server.ml_server import MlServer
from tests.conftest import CLIP_PACK, FACE_PACK

CLIP_TEXTUAL = {"clip": {"textual": {"modelName": CLIP_PACK, "options": {}}}}
NON_ASCII_TEXTS = ["café", "東京の猫", "Ærøskøbing 🐈 straße"]


def vector(value: str) -> np.ndarray:
    assert isinstance(value, str), "embeddings are JSON strings, as Immich stores them"
    return np.array(json.loads(value), dtype=np.float32)


# item 8: wrong option types and decompression bombs ------------------------------------------------
@pytest.mark.parametrize("min_score", ["high", True, [0.5], {"x": 1}])
def test_option_of_the_wrong_type_is_422_naming_the_field(client: httpx.Client, jpeg: bytes, min_score: object) -> None:
    entries = {
        "facial-recognition": {
            "detection": {"modelName": FACE_PACK, "options": {"minScore": min_score}},
            "recognition": {"modelName": FACE_PACK},
        }
    }
    r = client.post("/predict", data={"entries": json.dumps(entries)}, files={"image": ("blob", jpeg, "application/octet-stream")})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "minScore" in detail and "facial-recognition/detection" in detail and "number" in detail
    assert client.get("/ping").text == "pong"


def test_ocr_option_of_the_wrong_type_is_422_too(client: httpx.Client, jpeg: bytes) -> None:
    ocr = pytest.importorskip("immich_ml_desktop.models.ocr")
    if not ocr.shipped_models():
        pytest.skip("no OCR model ships in the installed RapidOCR wheel")
    name = ocr.shipped_models()[0]
    entries = {"ocr": {"detection": {"modelName": name, "options": {"maxResolution": "big"}},
                       "recognition": {"modelName": name}}}
    r = client.post("/predict", data={"entries": json.dumps(entries)}, files={"image": ("blob", jpeg, "application/octet-stream")})
    assert r.status_code == 422, r.text
    assert "maxResolution" in r.json()["detail"]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height 1-bit pixels, with a few bytes of image data: what a
    decompression bomb looks like to a decoder before it allocates the pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [20_000, 40_000])  # 400 Mpx (PIL's warning range) and 1.6 Gpx (its error)
def test_decompression_bomb_is_called_too_large(client: httpx.Client, side: int) -> None:
    bomb = png_header_only(side, side)
    assert len(bomb) < 200
    r = client.post("/predict", data={"entries": json.dumps({"clip": {"visual": {"modelName": CLIP_PACK}}})},
                    files={"image": ("blob", bomb, "application/octet-stream")})
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "too large" in detail and f"{side * side:,} pixels" in detail, detail
    assert "corrupt" not in detail


# item 9: text with non-ASCII characters, form-encoded and as Immich sends it ------------------------
@pytest.mark.parametrize("text", NON_ASCII_TEXTS)
def test_form_encoded_text_is_decoded_as_utf8(client: httpx.Client, cpu_engine: Engine, text: str) -> None:
    r = client.post("/predict", data={"entries": json.dumps(CLIP_TEXTUAL), "text": text})
    assert r.request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(vector(r.json()["clip"]), cpu_engine.clip_text(CLIP_PACK, text), atol=1e-6)


def test_form_encoded_raw_utf8_bytes_are_decoded_too(client: httpx.Client, cpu_engine: Engine) -> None:
    """Some clients put UTF-8 bytes in a form body without percent-escaping them."""
    body = b"entries=" + _quote(json.dumps(CLIP_TEXTUAL)) + b"&text=" + "café 猫".encode()
    r = client.post("/predict", content=body, headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(vector(r.json()["clip"]), cpu_engine.clip_text(CLIP_PACK, "café 猫"), atol=1e-6)


def test_form_with_too_many_fields_is_400(client: httpx.Client) -> None:
    r = client.post("/predict", data={f"f{i}": "x" for i in range(40)})
    assert r.status_code == 400, r.text
    assert "more than 16 fields" in r.json()["detail"]


def _quote(value: str) -> bytes:
    from urllib.parse import quote_plus

    return quote_plus(value).encode()


@pytest.mark.parametrize("text", ["a photo of a dog", *NON_ASCII_TEXTS])
def test_text_sent_as_immich_sends_it(client: httpx.Client, cpu_engine: Engine, text: str) -> None:
    """Immich's server sends search text as multipart/form-data: `entries` and `text` as plain form
    fields (no filename, no content type), the text in UTF-8."""
    boundary = "----formdata-undici-0123456789"
    fields = [("entries", json.dumps(CLIP_TEXTUAL, separators=(",", ":"))), ("text", text)]
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode("utf-8") + b"\r\n"
        for name, value in fields
    ) + f"--{boundary}--\r\n".encode()
    r = client.post("/predict", content=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"clip"}
    np.testing.assert_allclose(vector(r.json()["clip"]), cpu_engine.clip_text(CLIP_PACK, text), atol=1e-6)


# item 14: an address this machine does not have --------------------------------------------------
def test_an_address_not_of_this_machine_is_named_so(cpu_engine: Engine) -> None:
    with pytest.raises(InvalidInputError) as raised:
        MlServer(cpu_engine, "10.99.99.99", 0).start()
    message = str(raised.value)
    assert "10.99.99.99 is not an address of this machine" in message and "--host" in message
    assert "Another program" not in message, message
    with socket.socket() as taken:  # a port in use still says so
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(InvalidInputError, match="Another program .* uses that port: choose another with --port"):
            MlServer(cpu_engine, "127.0.0.1", taken.getsockname()[1]).start()


def test_serve_with_an_address_not_of_this_machine(models_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "immich_ml_desktop", "serve", "--host", "10.99.99.99", "--port", "3003",
         "--cache-dir", str(models_dir), "--device", "cpu", "--no-download", "--no-answer-cache"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 0
    assert "10.99.99.99 is not an address of this machine" in done.stderr, done.stderr
    assert "Another program" not in done.stderr and "Traceback" not in done.stderr


# item 4: a forward target that accepts and never answers -----------------------------------------
class _SilentService:
    """A real TCP server on 127.0.0.1 that accepts connections, reads what comes and never answers."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.listener.close()
        for conn in self.accepted:
            conn.close()


def test_forward_target_that_never_answers_is_a_504(cpu_engine: Engine, jpeg: bytes) -> None:
    silent = _SilentService()
    entries = {"image-classification": {"classification": {"modelName": "microsoft/resnet-50"}}}
    try:
        with MlServer(cpu_engine, "127.0.0.1", 0, forward_url=silent.url, forward_timeout=1.5) as srv, \
                httpx.Client(base_url=srv.url, timeout=120) as c:
            result: dict[str, httpx.Response] = {}
            waiting = threading.Thread(target=lambda: result.update(r=c.post(
                "/predict", data={"entries": json.dumps(entries)}, files={"image": ("blob", jpeg, "application/octet-stream")})))
            waiting.start()
            with httpx.Client(base_url=srv.url, timeout=60) as other:  # the server goes on meanwhile
                assert other.get("/ping").text == "pong"
            waiting.join(120)
            assert not waiting.is_alive(), "the forwarded request still waits"
            r = result["r"]
            assert r.status_code == 504, r.text
            detail = r.json()["detail"]
            assert silent.url in detail and "did not answer within 1.5 s" in detail
            assert srv.stats.forwarded == 1 and srv.stats.errors == 1
            assert silent.accepted, "the request did reach the silent service"
    finally:
        silent.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(models_dir: Path, port: int, *extra: str, preexec_fn=None) -> subprocess.Popen:
    """`serve` in a process of its own, once it answers /ping."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "immich_ml_desktop", "serve", "--port", str(port), "--cache-dir", str(models_dir),
         "--device", "cpu", "--no-download", "--no-answer-cache", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=5).text == "pong":
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"serve did not start: {proc.communicate()[1]}")
        time.sleep(0.1)


def test_serve_forward_timeout_option(models_dir: Path, jpeg: bytes) -> None:
    silent = _SilentService()
    port = free_port()
    proc = start_serve(models_dir, port, "--forward", silent.url, "--forward-timeout", "1")
    try:
        entries = {"image-classification": {"classification": {"modelName": "x"}}}
        r = httpx.post(f"http://127.0.0.1:{port}/predict", data={"entries": json.dumps(entries)},
                       files={"image": ("blob", jpeg, "application/octet-stream")}, timeout=120)
        assert r.status_code == 504 and "did not answer within 1 s" in r.json()["detail"], r.text
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        silent.close()
    assert "predict image-classification/classification x 504" in err, err


# item 3: idle connections never knock the server over --------------------------------------------
def open_idle(port: int, count: int, batch: int = 50) -> list[socket.socket]:
    """`count` established TCP connections that never send a byte, opened `batch` at a time (the kernel
    completes a connection when it is queued for the server, accepted or not)."""
    idle: list[socket.socket] = []
    while len(idle) < count:
        poll = select.poll()
        pending = {}
        for _ in range(min(batch, count - len(idle))):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            poll.register(s, select.POLLOUT)
            pending[s.fileno()] = s
            idle.append(s)
        deadline = time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            for fd, _ in poll.poll(1000):
                poll.unregister(fd)
                pending.pop(fd)
    return idle


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset, or never connected
        return True


def stop(proc: subprocess.Popen, idle: list[socket.socket]) -> str:
    """Close the idle connections, stop the server process and return what it logged."""
    for s in idle:
        s.close()
    proc.terminate()
    return proc.communicate(timeout=30)[1]


def low_fd_limit() -> None:  # in the child: the common default of 1,024 open files, soft and hard
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def test_1100_idle_connections_do_not_knock_serve_over(models_dir: Path) -> None:
    port = free_port()
    proc = start_serve(models_dir, port, "--preload", CLIP_PACK, preexec_fn=low_fd_limit)
    idle: list[socket.socket] = []
    try:
        idle = open_idle(port, 1100)
        time.sleep(2)  # let the server meet all of them
        url = f"http://127.0.0.1:{port}"
        for _ in range(3):  # each on a new connection, while the idle ones are (or were) open
            assert httpx.get(f"{url}/ping", timeout=30).text == "pong"
            r = httpx.post(f"{url}/predict", data={"entries": json.dumps(CLIP_TEXTUAL), "text": "a cat"}, timeout=60)
            assert r.status_code == 200, r.text
        deadline = time.monotonic() + 90
        while not all(closed_by_server(s) for s in idle) and time.monotonic() < deadline:
            time.sleep(0.5)
        still_open = sum(not closed_by_server(s) for s in idle)
        assert still_open == 0, f"{still_open} idle connections were never closed by the server"
        assert httpx.get(f"{url}/ping", timeout=30).text == "pong"
    finally:
        err = stop(proc, idle)
    assert "Traceback" not in err, err[-3000:]
    assert err.count("out of system resource") + err.count("Cannot accept connections") <= 1, err[-3000:]
    assert len(err) < 20_000, f"the log grew by {len(err)} characters: {err[-2000:]}"


def test_idle_and_trickling_connections_are_closed_and_capped(cpu_engine: Engine) -> None:
    with MlServer(cpu_engine, "127.0.0.1", 0, idle_timeout=1.0, max_connections=20) as srv:
        idle = open_idle(srv.port, 60)
        trickle = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        try:
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                assert c.get("/ping").text == "pong"  # past the cap: idle connections make room
                r = c.post("/predict", data={"entries": json.dumps(CLIP_TEXTUAL), "text": "a dog"})
                assert r.status_code == 200, r.text
            # half a request head, a byte every 0.2 s: the deadline counts from the opening, not the last byte
            sent = 0
            started = time.monotonic()
            with pytest.raises(OSError):
                for byte in b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 200:
                    trickle.sendall(bytes([byte]))
                    sent += 1
                    time.sleep(0.2)
            assert sent < 150, "a trickling client kept its connection"
            assert time.monotonic() - started < 30
            deadline = time.monotonic() + 60
            while not all(closed_by_server(s) for s in idle) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert all(closed_by_server(s) for s in idle)
            with httpx.Client(base_url=srv.url, timeout=30) as c:  # a kept-alive connection is closed too
                assert c.get("/ping").text == "pong"
                time.sleep(3)
                assert c.get("/ping").text == "pong", "the client reconnects"
        finally:
            trickle.close()
            for s in idle:
                s.close()


SERVE_WITHOUT_CAP = """
import logging, resource, sys
from immich_ml_desktop.models.engine import Engine
from immich_ml_desktop.server import ml_server

resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
ml_server.connection_cap = lambda wanted: wanted  # as if the cap were wrong: accepts meet the limit
logging.basicConfig(level=logging.INFO)
with Engine(sys.argv[1], "cpu") as engine:
    ml_server.MlServer(engine, "127.0.0.1", int(sys.argv[2]), max_connections=5000).serve_forever()
"""


def test_accepts_failing_at_the_open_file_limit_log_one_line(models_dir: Path, tmp_path: Path) -> None:
    """The safety net under the cap: when accepts do fail for want of files, the log says so once a
    minute in a line, not with a traceback on every attempt, and the server answers again as idle
    connections are closed."""
    port = free_port()
    script = tmp_path / "serve_without_cap.py"
    script.write_text(SERVE_WITHOUT_CAP)
    proc = subprocess.Popen([sys.executable, str(script), str(models_dir), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    idle: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=5).text == "pong":
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        idle = open_idle(port, 400)
        time.sleep(3)  # accepts fail for a while, then idle connections are closed and accepts resume
        assert httpx.get(f"http://127.0.0.1:{port}/ping", timeout=60).text == "pong"
    finally:
        err = stop(proc, idle)
    assert err.count("Cannot accept connections: Too many open files") == 1, err[-3000:]
    assert "out of system resource" not in err and "Traceback" not in err, err[-3000:]
