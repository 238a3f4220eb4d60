"""The Immich-compatible ML server, end to end: a real server on 127.0.0.1 (free port) over the shared
test packs, real HTTP requests (httpx and raw sockets), answers compared with the engine's own vectors."""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from immich_ml_desktop.errors import InvalidInputError
from immich_ml_desktop.server.ml_server import MlServer, parse_networks
from immich_ml_desktop.models.engine import Engine
from tests.conftest import CLIP_PACK, FACE_PACK, photo

CLIP_VISUAL = {"clip": {"visual": {"modelName": CLIP_PACK}}}
FACES = {
    "facial-recognition": {
        "detection": {"modelName": FACE_PACK, "options": {"minScore": 0.7}},
        "recognition": {"modelName": FACE_PACK},
    }
}


def vector(value: str) -> np.ndarray:
    assert isinstance(value, str), "embeddings are JSON strings, as Immich stores them"
    return np.array(json.loads(value), dtype=np.float32)


def predict(client: httpx.Client, entries: dict | str, image: bytes | None = None, text: str | None = None) -> httpx.Response:
    data = {"entries": entries if isinstance(entries, str) else json.dumps(entries)}
    if text is not None:
        data["text"] = text
    files = {"image": ("blob", image, "application/octet-stream")} if image is not None else None
    return client.post("/predict", data=data, files=files)


def multipart_body(entries: dict, image: bytes) -> tuple[bytes, str]:
    request = httpx.Request(
        "POST", "http://x/predict", data={"entries": json.dumps(entries)}, files={"image": ("blob", image, "application/octet-stream")}
    )
    return request.read(), request.headers["content-type"]


def read_answer(sock: socket.socket) -> bytes:
    """One whole HTTP answer (head and Content-Length body), or what came before the peer closed."""
    answer = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        answer += chunk
        head_end = answer.find(b"\r\n\r\n")
        if head_end >= 0:
            length = re.search(rb"content-length: (\d+)", answer[:head_end], re.I)
            if length and len(answer) >= head_end + 4 + int(length.group(1)):
                break
    return answer


def raw_exchange(port: int, head: bytes, body: bytes = b"", timeout: float = 10.0) -> bytes:
    """Send bytes as they are (what httpx would refuse to send) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body)
        return read_answer(sock)


# routes and request shapes ------------------------------------------------------------------------
def test_root_and_ping(client: httpx.Client) -> None:
    assert client.get("/").json() == {"message": "Immich ML"}
    pong = client.get("/ping")
    assert pong.status_code == 200 and pong.text == "pong"
    assert pong.headers["content-type"].startswith("text/plain")


def test_answers_do_not_wait_for_delayed_acks(server: MlServer) -> None:
    """Without TCP_NODELAY each answer (written in two parts) waits ~40 ms for the client's ACK."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        times = []
        for _ in range(9):
            start = time.perf_counter()
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b"pong"):
                answer += sock.recv(4096)
            times.append(time.perf_counter() - start)
    assert min(times[1:]) < 0.03  # with delayed ACKs every answer after the first takes >= 40 ms


def test_clip_visual_matches_engine(client: httpx.Client, cpu_engine: Engine, jpeg: bytes) -> None:
    r = predict(client, CLIP_VISUAL, image=jpeg)
    assert r.status_code == 200, r.text
    body = r.json()
    width, height = Image.open(io.BytesIO(jpeg)).size
    assert set(body) == {"clip", "imageHeight", "imageWidth"}
    assert (body["imageHeight"], body["imageWidth"]) == (height, width)
    expected = cpu_engine.clip_image(CLIP_PACK, jpeg)
    got = vector(body["clip"])
    assert got.shape == (512,)
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("options", [None, {}, {"language": "en"}])
def test_clip_textual_matches_engine(client: httpx.Client, cpu_engine: Engine, options: dict | None) -> None:
    spec: dict = {"modelName": CLIP_PACK}
    if options is not None:
        spec["options"] = options
    r = predict(client, {"clip": {"textual": spec}}, text="a photo of  a dog")
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"clip"}, "text answers carry no image size"
    np.testing.assert_allclose(vector(body["clip"]), cpu_engine.clip_text(CLIP_PACK, "a photo of a dog"), atol=1e-6)


def test_faces_match_engine(client: httpx.Client, cpu_engine: Engine, jpeg: bytes) -> None:
    r = predict(client, FACES, image=jpeg)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"facial-recognition", "imageHeight", "imageWidth"}
    faces = body["facial-recognition"]
    expected = cpu_engine.faces(FACE_PACK, jpeg, min_score=0.7)
    assert len(faces) == len(expected) == 6
    for face, ref in zip(faces, expected):
        assert set(face) == {"boundingBox", "embedding", "score"}
        box = face["boundingBox"]
        assert [box["x1"], box["y1"], box["x2"], box["y2"]] == ref.box.tolist()
        assert face["score"] == pytest.approx(ref.score, abs=1e-6)
        got = vector(face["embedding"])
        assert got.shape == (512,)
        np.testing.assert_allclose(got, ref.embedding, rtol=1e-4, atol=1e-4)


def test_face_detection_only(client: httpx.Client, jpeg: bytes) -> None:
    entries = {"facial-recognition": {"detection": {"modelName": FACE_PACK, "options": {"minScore": 0.7}}}}
    r = predict(client, entries, image=jpeg)
    assert r.status_code == 200, r.text
    found = r.json()["facial-recognition"]
    assert set(found) == {"boxes", "scores", "landmarks"}
    assert np.array(found["boxes"]).shape == (6, 4)
    assert np.array(found["scores"]).shape == (6,)
    assert np.array(found["landmarks"]).shape == (6, 5, 2)


def test_higher_min_score_finds_fewer_faces(client: httpx.Client, jpeg: bytes) -> None:
    entries = json.loads(json.dumps(FACES))
    entries["facial-recognition"]["detection"]["options"]["minScore"] = 0.99
    r = predict(client, entries, image=jpeg)
    assert r.status_code == 200
    assert len(r.json()["facial-recognition"]) < 6


def test_several_tasks_in_one_request(client: httpx.Client, jpeg: bytes) -> None:
    r = predict(client, {**CLIP_VISUAL, **FACES}, image=jpeg)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"clip", "facial-recognition", "imageHeight", "imageWidth"}
    assert len(body["facial-recognition"]) == 6


# errors as Immich answers them -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("entries", "image", "text", "status", "words"),
    [
        (CLIP_VISUAL, None, None, 400, "image or text"),
        (CLIP_VISUAL, b"", None, 400, "empty"),
        ({"facial-recognition": {"recognition": {"modelName": FACE_PACK}}}, "jpeg", None, 400, "depends on"),
        ("{not json", "jpeg", None, 422, "not valid JSON"),
        ("[]", "jpeg", None, 422, "JSON object"),
        ({"clip": {"visual": {}}}, "jpeg", None, 422, "modelName"),
        ({"clip": {"textual": {"modelName": CLIP_PACK}}}, "jpeg", None, 400, "needs text"),
        ({"clip": {"visual": {"modelName": "ViT-Nope-1__x"}}}, "jpeg", None, 500, "ViT-Nope-1__x"),
        ({"clip": {"audio": {"modelName": CLIP_PACK}}}, "jpeg", None, 422, "--forward"),
    ],
)
def test_errors(client: httpx.Client, jpeg: bytes, entries, image, text, status: int, words: str) -> None:
    r = predict(client, entries, image=jpeg if image == "jpeg" else image, text=text)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_missing_entries_is_422(client: httpx.Client, jpeg: bytes) -> None:
    r = client.post("/predict", files={"image": ("blob", jpeg, "application/octet-stream")})
    assert r.status_code == 422
    assert "entries" in r.json()["detail"]


def test_corrupt_jpeg(client: httpx.Client, jpeg: bytes) -> None:
    truncated = jpeg[: len(jpeg) // 3]
    r = predict(client, CLIP_VISUAL, image=truncated)
    assert r.status_code == 400
    assert "corrupt or truncated" in r.json()["detail"]
    scrambled = jpeg[:600] + bytes(b ^ 0x5A for b in jpeg[600:])
    r = predict(client, CLIP_VISUAL, image=scrambled)
    assert r.status_code == 400, r.text


def test_50mb_junk_upload(client: httpx.Client, server: MlServer) -> None:
    junk = np.random.default_rng(1).integers(0, 256, 50 * 1024 * 1024, dtype=np.uint8).tobytes()
    r = predict(client, CLIP_VISUAL, image=junk)
    assert r.status_code == 400
    assert "not an image format" in r.json()["detail"]
    assert client.get("/ping").text == "pong"


def test_truncated_multipart(server: MlServer, jpeg: bytes) -> None:
    body, content_type = multipart_body(CLIP_VISUAL, jpeg)
    cut = body[: len(body) - 200]
    with httpx.Client(base_url=server.url) as c:
        r = c.post("/predict", content=cut, headers={"content-type": content_type})
        assert r.status_code == 400
        assert "truncated" in r.json()["detail"]
        r = c.post("/predict", content=b"--nonsense\r\n\r\n", headers={"content-type": content_type})
        assert r.status_code == 400
        r = c.post("/predict", content=b"{}", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "multipart/form-data" in r.json()["detail"]


def test_body_over_the_limit_is_413(server: MlServer) -> None:
    declared = server.max_image_bytes * 2
    head = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    ).encode()
    answer = raw_exchange(server.port, head, b"--b\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"MiB image limit" in answer


def test_streamed_body_over_the_limit_is_413(cpu_engine: Engine, jpeg: bytes) -> None:
    body, content_type = multipart_body(CLIP_VISUAL, jpeg * 20)
    with MlServer(cpu_engine, "127.0.0.1", 0, max_image_bytes=len(jpeg) // 2) as small:
        head = (
            f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
        chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
        answer = raw_exchange(small.port, head, chunked)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        with httpx.Client(base_url=small.url) as c:
            assert predict(c, {"clip": {"textual": {"modelName": CLIP_PACK}}}, text="x" * 70_000).status_code == 413
            assert predict(c, {"clip": {"textual": {"modelName": CLIP_PACK}}}, text="fine").status_code == 200
            r = predict(c, CLIP_VISUAL, image=jpeg)
            assert r.status_code == 413 and "image limit" in r.json()["detail"]


def test_slow_upload_does_not_stall_others(cpu_engine: Engine, jpeg: bytes) -> None:
    with MlServer(cpu_engine, "127.0.0.1", 0, body_timeout=3.0) as srv:
        slow = socket.create_connection(("127.0.0.1", srv.port), timeout=15)
        try:
            slow.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 5000\r\n\r\n--b\r\n")
            started = time.monotonic()
            with httpx.Client(base_url=srv.url, timeout=10) as c:
                assert predict(c, CLIP_VISUAL, image=jpeg).status_code == 200
            assert time.monotonic() - started < 3.0, "answered only after the stalled upload was dropped"
            answer = read_answer(slow)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b"No part of the request body arrived" in answer
        finally:
            slow.close()


def test_32_concurrent_requests_all_answered(server: MlServer, cpu_engine: Engine, jpeg: bytes) -> None:
    expected_image = cpu_engine.clip_image(CLIP_PACK, jpeg)
    texts = [f"photo number {i}" for i in range(32)]

    def one(i: int) -> tuple[int, httpx.Response]:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            if i % 4 == 0:
                return i, predict(c, FACES, image=jpeg)
            if i % 2 == 0:
                return i, predict(c, {"clip": {"textual": {"modelName": CLIP_PACK}}}, text=texts[i])
            return i, predict(c, CLIP_VISUAL, image=jpeg)

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(32)))
    for i, r in results:
        assert r.status_code == 200, r.text
        body = r.json()
        if i % 4 == 0:
            assert len(body["facial-recognition"]) == 6
        elif i % 2 == 0:
            np.testing.assert_allclose(vector(body["clip"]), cpu_engine.clip_text(CLIP_PACK, texts[i]), atol=1e-6)
        else:
            np.testing.assert_allclose(vector(body["clip"]), expected_image, atol=1e-6)


def test_search_text_does_not_queue_behind_image_work(cpu_engine: Engine, jpeg: bytes) -> None:
    with MlServer(cpu_engine, "127.0.0.1", 0, workers=1) as srv:
        finished: dict[str, float] = {}

        def send(key: str, entries: dict, **kw: object) -> None:
            with httpx.Client(base_url=srv.url, timeout=120) as c:
                assert predict(c, entries, **kw).status_code == 200
            finished[key] = time.monotonic()

        with ThreadPoolExecutor(5) as pool:
            faces = [pool.submit(send, f"faces{i}", FACES, image=jpeg) for i in range(4)]
            time.sleep(0.3)  # the four face requests now hold the only image thread and its queue
            text = pool.submit(send, "text", {"clip": {"textual": {"modelName": CLIP_PACK}}}, text="a cat")
            for f in [*faces, text]:
                f.result()
        assert finished["text"] < max(finished[f"faces{i}"] for i in range(4))


def test_hostile_requests_never_crash(server: MlServer) -> None:
    for raw in (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data\r\nContent-Length: 4\r\n\r\nabcd",
        b"GARBAGE\r\n\r\n",
    ):
        answer = raw_exchange(server.port, raw)
        assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
    with httpx.Client(base_url=server.url) as c:
        assert c.get("/ping").text == "pong"


# safety, lifecycle, stats ------------------------------------------------------------------------
def test_allow_list(cpu_engine: Engine) -> None:
    with MlServer(cpu_engine, "127.0.0.1", 0, allow=["127.0.0.2/32"], allow_loopback=False) as srv:
        with httpx.Client(base_url=srv.url) as c:
            r = c.get("/ping")
            assert r.status_code == 403
            assert "127.0.0.1 is not allowed" in r.json()["detail"]
        with httpx.Client(base_url=srv.url, transport=httpx.HTTPTransport(local_address="127.0.0.2")) as c:
            assert c.get("/ping").text == "pong"
    with MlServer(cpu_engine, "127.0.0.1", 0, allow=["192.0.2.0/24"]) as srv:  # loopback allowed by default
        with httpx.Client(base_url=srv.url) as c:
            assert c.get("/ping").status_code == 200
    with pytest.raises(InvalidInputError, match="not an IP address"):
        parse_networks(["immich.local"])


def test_idle_models_unload_after_ttl(models_dir: Path, work_dir: Path, jpeg: bytes) -> None:
    with Engine(models_dir, "cpu", work_dir=work_dir, model_ttl=0.3) as engine, MlServer(engine, "127.0.0.1", 0) as srv:
        with httpx.Client(base_url=srv.url) as c:
            assert predict(c, CLIP_VISUAL, image=jpeg).status_code == 200
            assert [m["type"] for m in engine.loaded_models()] == ["visual"]
            deadline = time.monotonic() + 5
            while engine.loaded_models() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert engine.loaded_models() == []
            assert predict(c, CLIP_VISUAL, image=jpeg).status_code == 200, "reloads on demand"


def test_start_stop_stats_and_port_in_use(cpu_engine: Engine) -> None:
    srv = MlServer(cpu_engine, "127.0.0.1", 0)
    srv.start()
    try:
        assert srv.running and srv.url == f"http://127.0.0.1:{srv.port}"
        with pytest.raises(InvalidInputError, match="--port"):
            MlServer(cpu_engine, "127.0.0.1", srv.port).start()
        with httpx.Client(base_url=srv.url) as c:
            for i in range(3):
                assert predict(c, {"clip": {"textual": {"modelName": CLIP_PACK}}}, text=f"t{i}").status_code == 200
            assert predict(c, CLIP_VISUAL).status_code == 400
        stats = srv.stats
        assert stats.requests == 4 and stats.errors == 1
        assert stats.per_task == {"clip/textual": 3, "clip/visual": 1}
        assert stats.mean_ms > 0 and stats.requests_per_second > 0
    finally:
        srv.stop()
    assert not srv.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{srv.url}/ping")
    srv.start()  # a stopped server starts again (the GUI's Start/Stop button)
    try:
        assert httpx.get(f"{srv.url}/ping").text == "pong"
    finally:
        srv.stop()


def test_preload_and_served_tasks(cpu_engine: Engine) -> None:
    srv = MlServer(cpu_engine, "127.0.0.1", 0)
    loaded = srv.preload([CLIP_PACK])
    assert loaded == [f"clip/textual/{CLIP_PACK}", f"clip/visual/{CLIP_PACK}"]
    with pytest.raises(Exception, match="no-such-model"):
        srv.preload(["no-such-model"])
    routes = {(r["task"], r["type"]): r["route"] for r in srv.served_tasks()}
    assert routes[("clip", "visual")] == routes[("facial-recognition", "recognition")] == "local"
    assert set(routes.values()) <= {"local", "unavailable"}
    forwarding = MlServer(cpu_engine, forward_url="http://127.0.0.1:9/")
    assert set(r["route"] for r in forwarding.served_tasks()) <= {"local", "forward"}


def test_preload_downloads_a_catalogued_model(models_dir: Path, work_dir: Path, tmp_path: Path) -> None:
    """A catalogued model missing from the cache is fetched first (here the hub is off, so the attempt
    ends in a DownloadError that says why, and nothing is written to the shared packs)."""
    from immich_ml_desktop.errors import DownloadError
    from immich_ml_desktop.model_store.fetcher import ModelFetcher

    with Engine([tmp_path, models_dir], "cpu", work_dir=work_dir, allow_downloads=True, downloader=ModelFetcher(tmp_path)) as engine:
        with pytest.raises(DownloadError, match="ViT-B-32__openai"):
            MlServer(engine).preload(["ViT-B-32__openai"])
        with pytest.raises(Exception, match="no model of that name"):
            MlServer(engine).preload(["not-in-any-catalogue"])


def test_serve_command(models_dir: Path, jpeg: bytes, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "immich_ml_desktop", "serve", "--port", str(port), "--cache-dir", str(models_dir),
         "--device", "cpu", "--no-download", "--preload", CLIP_PACK],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/ping").text == "pong":
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        with httpx.Client(base_url=url) as c:
            assert predict(c, CLIP_VISUAL, image=jpeg).status_code == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert f"Preloaded clip/visual/{CLIP_PACK}" in err
    assert f"predict clip/visual {CLIP_PACK} 200" in err


# handing on what we cannot serve (issue 9) --------------------------------------------------------
class _RecordingMlService:
    """A second real HTTP server standing in for the user's Immich ML container: it records every
    request it receives and answers a fixed status and body."""

    def __init__(self, status: int = 200, body: bytes = b'{"image-classification":["dog"],"imageHeight":1,"imageWidth":1}') -> None:
        import http.server

        self.received: list[tuple[str, dict[str, str], bytes]] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                data = self.rfile.read(int(self.headers["Content-Length"]))
                recorder.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, data))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def other_service():
    service = _RecordingMlService()
    yield service
    service.close()


@pytest.mark.parametrize(
    "entries",
    [
        {"image-classification": {"classification": {"modelName": "microsoft/resnet-50"}}},  # a task we lack
        {"clip": {"visual": {"modelName": "ViT-Nope-1__x"}}},  # a model we lack and cannot download
        {**CLIP_VISUAL, "image-classification": {"classification": {"modelName": "resnet"}}},  # mixed: all handed on
    ],
)
def test_forwards_unchanged_and_passes_answer_back(cpu_engine: Engine, other_service: _RecordingMlService, jpeg: bytes, entries: dict) -> None:
    body, content_type = multipart_body(entries, jpeg)
    with MlServer(cpu_engine, "127.0.0.1", 0, forward_url=other_service.url + "/") as srv, httpx.Client(base_url=srv.url) as c:
        r = c.post("/predict", content=body, headers={"content-type": content_type})
        assert r.status_code == 200
        assert r.content == b'{"image-classification":["dog"],"imageHeight":1,"imageWidth":1}'
        assert srv.stats.forwarded == 1
    [(path, headers, received)] = other_service.received
    assert path == "/predict"
    assert received == body, "the request is handed on byte for byte"
    assert headers["content-type"] == content_type


def test_forward_target_errors_come_back_verbatim(cpu_engine: Engine, jpeg: bytes) -> None:
    service = _RecordingMlService(status=422, body=b'{"detail":"their words"}')
    try:
        with MlServer(cpu_engine, "127.0.0.1", 0, forward_url=service.url) as srv, httpx.Client(base_url=srv.url) as c:
            r = predict(c, {"image-classification": {"classification": {"modelName": "x"}}}, image=jpeg)
            assert (r.status_code, r.content) == (422, b'{"detail":"their words"}')
    finally:
        service.close()


def test_forward_target_down_is_a_clear_502_and_local_work_goes_on(cpu_engine: Engine, jpeg: bytes) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{s.getsockname()[1]}"
    with MlServer(cpu_engine, "127.0.0.1", 0, forward_url=dead_url) as srv, httpx.Client(base_url=srv.url) as c:
        r = predict(c, {"clip": {"visual": {"modelName": "ViT-Nope-1__x"}}}, image=jpeg)
        assert r.status_code == 502
        assert dead_url in r.json()["detail"] and "could not be reached" in r.json()["detail"]
        assert predict(c, CLIP_VISUAL, image=jpeg).status_code == 200
        assert c.get("/ping").text == "pong"


def test_two_servers_forwarding_to_each_other_do_not_loop(cpu_engine: Engine, jpeg: bytes) -> None:
    with MlServer(cpu_engine, "127.0.0.1", 0) as a, MlServer(cpu_engine, "127.0.0.1", 0, forward_url=a.url) as b:
        a.forward_url = b.url
        with httpx.Client(base_url=a.url, timeout=20) as c:
            r = predict(c, {"image-classification": {"classification": {"modelName": "x"}}}, image=jpeg)
        assert r.status_code == 422
        assert "image-classification" in r.json()["detail"]
        assert (a.stats.forwarded, b.stats.forwarded) == (1, 0)  # b saw the mark and answered itself


def test_clip_faces_and_ocr_in_one_request(client: httpx.Client, cpu_engine: Engine) -> None:
    """OCR reaches the server through the model registry alone; its answer equals the engine's."""
    ocr = pytest.importorskip("immich_ml_desktop.models.ocr")
    shipped = ocr.shipped_models()
    if not shipped:
        pytest.skip("no OCR model ships in the installed RapidOCR wheel")
    original = Image.open(photo("immich_test_assets/albums/text/craft-beer.jpg"))
    original.thumbnail((2160, 1440))  # the preview Immich would send
    buffer = io.BytesIO()
    original.convert("RGB").save(buffer, "JPEG", quality=90)
    image = buffer.getvalue()
    ocr_entries = {
        "ocr": {
            "detection": {"modelName": shipped[0], "options": {"minScore": 0.5, "maxResolution": 736}},
            "recognition": {"modelName": shipped[0], "options": {"minScore": 0.8}},
        }
    }
    r = predict(client, {**CLIP_VISUAL, **FACES, **ocr_entries}, image=image)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"clip", "facial-recognition", "ocr", "imageHeight", "imageWidth"}
    expected = json.loads(json.dumps(cpu_engine.predict_entries(ocr_entries, image=image), default=lambda a: a.tolist()))
    assert set(body["ocr"]) == {"box", "boxScore", "text", "textScore"}
    assert body["ocr"]["text"] == expected["ocr"]["text"] and body["ocr"]["text"], "finds the same text"
    np.testing.assert_allclose(body["ocr"]["box"], expected["ocr"]["box"], atol=1e-6)
