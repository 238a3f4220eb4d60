"""ImmichClient against the fake Immich server (real HTTP on loopback, spec-validated)."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fake_immich import FakeImmich
from immich_ml_desktop.errors import (
    ImmichAuthError,
    ImmichError,
    ImmichPermissionError,
    ImmichUnreachableError,
    ImmichVersionError,
)
from immich_ml_desktop.immich.client import ADMIN_OPERATIONS, FEATURES, PERMISSIONS, ImmichClient, api_base_url

PORTRAITS = ["face_recognition/examples/obama.jpg", "face_recognition/examples/biden.jpg",
             "skimage/astronaut.png", "skimage/coffee.png", "photoprism/assets/examples/cat_brown.jpg"]


@pytest.fixture
def spec_path(photos_dir: Path) -> Path:
    return photos_dir.parent / "immich" / "immich-openapi-specs.json"


@pytest.fixture
def fake(spec_path: Path, photos_dir: Path):
    server = FakeImmich(spec_path)
    for rel in PORTRAITS:
        if (photos_dir / rel).exists():
            server.add_asset(photos_dir / rel)
    server.start()
    yield server
    server.stop()
    assert server.spec_errors == []  # every request the client sent and every answer follow the spec


def client_for(fake: FakeImmich, key: str | None = None, **kw) -> ImmichClient:
    return ImmichClient(fake.url, key or fake.admin_key, backoff=0.01, **kw)


def test_server_url_is_accepted_with_or_without_api():
    assert api_base_url("http://photos.local:2283") == "http://photos.local:2283/api"
    assert api_base_url("http://photos.local:2283/api/") == "http://photos.local:2283/api"
    assert api_base_url("photos.local:2283") == "http://photos.local:2283/api"


def test_permission_table_matches_the_spec(spec_path: Path):
    spec = json.loads(spec_path.read_text())
    operations = {op["operationId"]: op for ops in spec["paths"].values() for op in ops.values()
                  if isinstance(op, dict) and "operationId" in op}
    for operation, permission in PERMISSIONS.items():
        assert operation in operations, operation
        assert operations[operation].get("x-immich-permission") == permission, operation
        assert bool(operations[operation].get("x-immich-admin-only")) == (operation in ADMIN_OPERATIONS), operation
    assert {op for ops in FEATURES.values() for op in ops} <= set(PERMISSIONS)


def test_version_check_accepts_2_and_3_and_refuses_1(fake: FakeImmich):
    with client_for(fake) as client:
        assert str(client.check_version()) == "3.1.0"
        fake.version = (2, 0, 1)
        assert client.check_version().major == 2
        fake.version = (1, 135, 3)
        with pytest.raises(ImmichVersionError, match=r"1\.135\.3.*too old.*2\.0"):
            client.check_version()


def test_wrong_key_is_a_clear_auth_error(fake: FakeImmich):
    with ImmichClient(fake.url + "/api/", "not-a-key", backoff=0.01) as client:
        with pytest.raises(ImmichAuthError, match="rejected the API key.*API Keys") as info:
            client.check_key()
    assert info.value.status == 401
    assert fake.log[-1][2] == 401 and len(fake.log) == 1  # a 401 is never retried


def test_key_probe_names_missing_permissions_per_feature(fake: FakeImmich):
    user = fake.add_user("Ann")
    key = fake.add_key(["asset.read", "asset.view", "face.read", "user.read"], user)
    with client_for(fake, key) as client:
        check = client.check_key()
        assert check.is_admin is False
        assert "index assets" not in check.missing
        assert "person.create" in check.missing["push people"] and "face.update" in check.missing["push people"]
        assert "face.read" not in check.missing["push people"]
        assert check.missing["register ML URL"] == ["systemConfig.read", "systemConfig.update", "admin account"]
        with pytest.raises(ImmichPermissionError, match="lacks the 'person.create' permission") as info:
            client.create_person("Ann")
        assert info.value.status == 403
    assert fake.people == {}


def test_admin_key_can_use_every_feature(fake: FakeImmich):
    with client_for(fake) as client:
        check = client.check_key()
    assert check.is_admin is True and check.missing == {} and check.permissions == ("all",)


def test_server_down_is_a_clear_unreachable_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    with ImmichClient(f"http://127.0.0.1:{port}", "key", backoff=0.01, retries=2) as client:
        with pytest.raises(ImmichUnreachableError, match=f"Cannot reach Immich at http://127.0.0.1:{port}/api.*running"):
            client.version()


@pytest.fixture
def silent_server():
    """A TCP server on loopback that accepts connections and never answers (a hung server or proxy)."""
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    stop.set()
    thread.join(5)
    for conn in accepted:
        conn.close()
    listener.close()


def test_a_server_that_accepts_and_never_answers_is_named_after_one_wait(silent_server):
    """The first call waits once for an answer (10 s by default), without the retries later calls get."""
    url, accepted = silent_server
    with ImmichClient(url, "key", backoff=0.01, probe_timeout=0.5) as client:
        with pytest.raises(ImmichUnreachableError, match=r"accepted the connection but sent no answer to "
                                                          r"getServerVersion within 0 s.*Nothing was changed") as info:
            client.check_version()
    assert len(accepted) == 1  # asked once, not 1 + retries
    assert "\n" not in str(info.value)


def test_something_that_is_not_immich_is_called_that_in_one_line(tmp_path: Path):
    import http.server
    import threading

    (tmp_path / "index.html").write_text("<html><body><h1>Welcome to nginx!</h1>" + "<p>x</p>" * 50 + "</body></html>")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path))  # noqa: E731
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        for url in (f"http://127.0.0.1:{web.server_port}", f"http://127.0.0.1:{web.server_port}/index.html#"):
            with ImmichClient(url, "key", backoff=0.01) as client:
                with pytest.raises(ImmichError, match=r"is not an Immich server: GET /api/server/version answered "
                                                      r"HTTP 404\. Check the URL") as info:
                    client.check_version()
                assert "\n" not in str(info.value) and "<p>" not in str(info.value)
    finally:
        web.shutdown()


def test_our_own_ml_server_is_not_taken_for_immich(cpu_engine):
    from immich_ml_desktop.server.ml_server import MlServer

    with MlServer(cpu_engine, port=0) as ml, ImmichClient(ml.url, "key", backoff=0.01) as client:
        with pytest.raises(ImmichError, match="is not an Immich server.*not its ML service's"):
            client.check_version()


@pytest.mark.parametrize("url, why", [
    ("http://:2283", "with a host name"), ("ftp://photos.local", "not an http"), ("http://photos.local:port", "not a valid"),
    ("http://[::1", "not a valid"),
])
def test_a_malformed_url_is_refused_before_any_network(url: str, why: str):
    from immich_ml_desktop.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=why):
        ImmichClient(url, "key")


def test_search_pages_through_every_asset(fake: FakeImmich):
    with client_for(fake) as client:
        ids = [a["id"] for a in client.search_assets(page_size=2)]
    assert sorted(ids) == sorted(fake.assets)
    assert fake.calls("searchAssets") == 3  # 5 assets in pages of 2


def test_idempotent_calls_are_retried_on_5xx_and_writes_are_not(fake: FakeImmich):
    asset = next(iter(fake.assets))
    fake.add_face(asset, (10, 10, 50, 50))
    fake.inject(operation="getFaces", status=503, times=2)
    with client_for(fake) as client:
        assert len(client.faces(asset)) == 1
        fake.inject(operation="createPerson", status=500)
        with pytest.raises(ImmichError, match="HTTP 500.*try again") as info:
            client.create_person("Bob")
        assert info.value.status == 500
        assert fake.people == {}
        assert client.create_person("Bob")["name"] == "Bob"  # the retry the user runs finishes the work
    assert [s for op, _, s in fake.log if op == "getFaces"] == [503, 503, 200]
    assert [s for op, _, s in fake.log if op == "createPerson"] == [500, 201]


def test_dropped_download_is_retried_and_complete(fake: FakeImmich):
    asset = next(iter(fake.assets))
    fake.inject(operation="viewAsset", drop=True, times=1)
    with client_for(fake) as client:
        assert client.download_preview(asset) == fake.previews[asset]
        fake.inject(operation="viewAsset", drop=True, times=4)  # first try + 3 retries
        with pytest.raises(ImmichUnreachableError, match="connection to Immich.*broke.*run the command again"):
            client.download_preview(asset)
        assert client.download_preview(asset) == fake.previews[asset]


def test_parallel_requests_are_capped(fake: FakeImmich):
    fake.latency = 0.05
    ids = list(fake.assets) * 4
    with client_for(fake, max_parallel=2) as client, ThreadPoolExecutor(8) as pool:
        previews = list(pool.map(client.download_preview, ids))
    assert [len(p) for p in previews] == [len(fake.previews[i]) for i in ids]
    assert fake.max_in_flight == 2


def test_queue_counts_fall_back_to_the_legacy_jobs_route(fake: FakeImmich):
    with client_for(fake) as client:
        client.run_queue_command("smartSearch", "start", force=True)
        fake.missing_operations.add("getQueues")  # an Immich older than 2.4
        queues = client.queues()
    assert queues["smartSearch"]["statistics"]["waiting"] == len(fake.assets)
    assert ("getQueues", "/api/queues", 404) in fake.log and fake.calls("getQueuesLegacy") == 1
