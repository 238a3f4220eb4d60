"""`MlServer`: Immich's machine-learning service (`/`, `/ping`, `/predict`) on the shared Engine.

A FastAPI app on uvicorn, as Immich's own service. Bodies are read on the event loop (a slow upload
never holds others up); inference runs in a small thread pool whose queue never drops a request. Work
this app cannot do (a task with no model class, a model we do not have) is handed on unchanged to
`forward_url` when one is set. Startable from the CLI (`serve_forever`) or from the GUI (`start`/`stop`).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Iterable

import h11
import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from immich_ml_desktop.errors import (
    DownloadError,
    EntriesFormatError,
    ForwardError,
    InvalidInputError,
    ModelNotFoundError,
    UserError,
)
from immich_ml_desktop.server.answer_cache import AnswerCache, answer_key, image_digest
from immich_ml_desktop.server.multipart_form import FormPart, parse_form
from immich_ml_desktop.models.engine import Engine, UnsupportedTaskError
from immich_ml_desktop.models.predict import Entry, parse_entries, run_entries, to_json
from immich_ml_desktop.models.registry import model_class, model_classes, plugin_problems, served_tasks
from immich_ml_desktop.models.runtime import default_parallel

log = logging.getLogger(__name__)

MAX_IMAGE_BYTES = 100 * 1024 * 1024  # Immich sends previews of a few hundred kB; originals rarely pass 100 MB
MAX_FIELD_BYTES = 64 * 1024  # `entries` and `text` are a few hundred bytes
BODY_IDLE_TIMEOUT = 60.0  # seconds without a byte of body before the request is refused
# Seconds the forward target may stay silent (no byte of its answer) before we answer 504. Long enough for
# Immich's ML container to download and load a model on first use; a target that accepts and never
# answers no longer holds Immich's request forever.
FORWARD_TIMEOUT = 300.0
FORWARD_CONNECT_TIMEOUT = 5.0
FORWARDED_HEADER = "x-immich-ml-desktop-forwarded"  # marks a handed-on request so two servers never loop
# A connection with no request in progress (none sent yet, or the last one answered) is closed after this
# many seconds; uvicorn's own keep-alive timer only starts after a first answer, so a client that connects
# and sends nothing (or half a request head) held its connection, and a file descriptor, for ever.
IDLE_TIMEOUT = 5.0
MAX_CONNECTIONS = 1000  # open connections at most (fewer when the open-file limit is lower, see connection_cap)
FD_RESERVE = 128  # open files kept free for everything else (model files, the forward client, logs, the GUI)
# The listen queue, and (asyncio uses it so) how many connections are accepted in one go before any of
# them is counted: the cap leaves room for two such batches. Immich sends a handful of requests at once.
BACKLOG = 64
LOG_EVERY = 60.0  # seconds between two log lines about the same connection trouble
IN_THREAD_PARSE_BYTES = 1024 * 1024  # larger bodies are parsed off the event loop
STATS_WINDOW = 10.0  # seconds over which `requests_per_second` is measured

# Every (task, type) Immich asks its ML service for, in the order the GUI lists them.
IMMICH_TASKS = [
    ("clip", "visual"),
    ("clip", "textual"),
    ("facial-recognition", "detection"),
    ("facial-recognition", "recognition"),
    ("ocr", "detection"),
    ("ocr", "recognition"),
]


class RequestTooLargeError(InvalidInputError):
    """A request body or field is over the server's size limits (HTTP 413)."""

    http_status = 413


class RequestTimeoutError(InvalidInputError):
    """The client stopped sending its request body (HTTP 408)."""

    http_status = 408


class ForwardTimeoutError(ForwardError):
    """The forward target took the request but did not answer in time (HTTP 504)."""

    http_status = 504


@dataclass(frozen=True)
class ServerStats:
    """What the server has done since it started (for the GUI's Server page)."""

    requests: int = 0  # /predict requests answered, successful or not
    errors: int = 0  # answered with a status >= 400
    forwarded: int = 0  # handed on to the forward URL
    from_cache: int = 0  # answered from the answer cache (what `immich index` or an earlier request computed)
    per_task: dict[str, int] = field(default_factory=dict)  # "clip/visual" -> count
    requests_per_second: float = 0.0  # over the last STATS_WINDOW seconds
    mean_ms: float = 0.0  # mean time to answer a /predict request


class _StatsRecorder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests = self._errors = self._forwarded = self._from_cache = 0
        self._total_ms = 0.0
        self._per_task: Counter[str] = Counter()
        self._recent: deque[float] = deque()
        self._since = time.monotonic()

    def record(self, tasks: list[str], status: int, ms: float, forwarded: bool, from_cache: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            self._requests += 1
            self._from_cache += from_cache
            self._errors += status >= 400
            self._forwarded += forwarded
            self._total_ms += ms
            self._per_task.update(tasks)
            self._recent.append(now)
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._recent and now - self._recent[0] > STATS_WINDOW:
            self._recent.popleft()

    def snapshot(self) -> ServerStats:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            window = min(STATS_WINDOW, max(now - self._since, 1e-3))
            return ServerStats(
                requests=self._requests,
                errors=self._errors,
                forwarded=self._forwarded,
                from_cache=self._from_cache,
                per_task=dict(self._per_task),
                requests_per_second=round(len(self._recent) / window, 2),
                mean_ms=round(self._total_ms / self._requests, 1) if self._requests else 0.0,
            )


def parse_networks(addresses: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """`192.168.1.20`, `192.168.1.0/24`, `fd00::/8` -> networks; a clear error for anything else."""
    networks = []
    for address in addresses:
        try:
            networks.append(ipaddress.ip_network(address.strip(), strict=False))
        except ValueError:
            raise InvalidInputError(
                f"{address!r} is not an IP address or network: use e.g. 192.168.1.20 or 192.168.1.0/24."
            ) from None
    return networks


class _ClientFilter:
    """Answers 403 to clients outside the allow-list before anything else happens (the protocol has
    no authentication, so the address is the only thing to go by)."""

    def __init__(self, app: ASGIApp, networks: list, allow_loopback: bool) -> None:
        self.app = app
        self.networks = networks
        self.allow_loopback = allow_loopback

    def allowed(self, host: str | None) -> bool:
        if not self.networks:
            return True
        if host is None:
            return False
        try:
            address = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if self.allow_loopback and address.is_loopback:
            return True
        return any(address in network for network in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            host = client[0] if client else None
            if not self.allowed(host):
                log.warning("%s %s from %s refused: not in the allow-list", scope["method"], scope["path"], host)
                response = JSONResponse(
                    {"detail": f"Client {host} is not allowed. Add it with `serve --allow {host}` (or in Settings)."},
                    status_code=403,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def open_file_limit() -> int | None:
    """This process's soft limit on open files (None where there is no such limit to read)."""
    try:
        import resource
    except ImportError:  # Windows: sockets are not bounded by a C-runtime file table
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def open_files() -> int:
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder))
        except OSError:
            continue
    return 0


def connection_cap(wanted: int) -> int:
    """How many connections may be open at once: `wanted`, or fewer so that accepting one more never
    meets the open-file limit (which made asyncio log an error on every accept attempt, and answer nobody)."""
    limit = open_file_limit()
    if limit is None:
        return wanted
    return max(8, min(wanted, limit - open_files() - FD_RESERVE - 2 * BACKLOG))


class _Throttled:
    """Logs one line per LOG_EVERY seconds for a repeated event, with how many times it happened since."""

    def __init__(self) -> None:
        self._last = -LOG_EVERY
        self._since = 0

    def due(self) -> int:
        """0 if this event should stay silent, else how many happened since the last line (this one included)."""
        self._since += 1
        now = time.monotonic()
        if now - self._last < LOG_EVERY:
            return 0
        count, self._since, self._last = self._since, 0, now
        return count


class _AcceptErrorFilter(logging.Filter):
    """asyncio logs `socket.accept() out of system resource` with a traceback on every failed accept
    (several a second when the open-file limit is met): one short line a minute instead."""

    def __init__(self) -> None:
        super().__init__()
        self._throttle = _Throttled()

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("socket.accept() out of system resource"):
            return True
        count = self._throttle.due()
        if not count:
            return False
        record.msg = ("Cannot accept connections: %s (%d failed accepts since the last such line). Too many connections are open "
                      "for this process's open-file limit; raise it (ulimit -n) or find the client holding them.")
        exc = record.exc_info[1] if record.exc_info else None
        record.args = (getattr(exc, "strerror", None) or "out of system resources", count)
        record.exc_info = record.exc_text = None
        return True


_ACCEPT_ERROR_FILTER = _AcceptErrorFilter()


class _GuardedH11(H11Protocol):
    """uvicorn's h11 protocol, with every connection that has no request in progress closed after
    `idle_timeout` seconds (from its opening or its last answer, whatever the client trickles), and at
    most `max_connections` open: a new one past the cap closes the longest-idle one, so clients that
    hold connections without using them never lock out Immich's requests or /ping."""

    idle_timeout = IDLE_TIMEOUT
    max_connections = MAX_CONNECTIONS
    evictions = _Throttled()  # replaced per server, with the two settings above (see MlServer._protocol)
    refusals = _Throttled()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.idle_since = self.loop.time()
        self._arm_idle_timer()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # cancels the timer first, and may start a request
        if self._idle() and not self.transport.is_closing():
            self._arm_idle_timer()  # still no whole request head: the deadline stays where it was

    def on_response_complete(self) -> None:
        self.idle_since = self.loop.time()
        super().on_response_complete()  # arms uvicorn's keep-alive timer, in whole seconds
        if self._idle() and not self.transport.is_closing():
            self._arm_idle_timer()

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm_idle_timer(self) -> None:
        self._unset_keepalive_if_required()
        delay = max(0.0, self.idle_since + self.idle_timeout - self.loop.time())
        self.timeout_keep_alive_task = self.loop.call_later(delay, self.timeout_keep_alive_handler)

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            try:
                self.conn.send(h11.ConnectionClosed())
            except h11.LocalProtocolError:
                pass  # half a request head: nothing to say in HTTP, the connection just closes
            self.transport.close()

    def _make_room(self) -> None:
        idle = [c for c in self.connections if c is not self and isinstance(c, _GuardedH11) and c._idle()
                and not c.transport.is_closing()]
        if idle:
            oldest = min(idle, key=lambda c: c.idle_since)
            oldest._unset_keepalive_if_required()
            oldest.timeout_keep_alive_handler()
            if count := self.evictions.due():
                log.warning("%d connections open, the most allowed: closed %d idle ones (no request in progress) "
                            "to answer new ones.", self.max_connections, count)
            return
        body = b'{"detail":"Too many requests in progress; try again shortly."}'
        self.transport.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                             b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        self.transport.close()
        if count := self.refusals.due():
            log.warning("%d requests in progress, the most allowed: refused %d new connections with 503.",
                        self.max_connections, count)


def _runs_locally(entry: Entry, cache_dirs: list) -> bool:
    return model_class(entry.task, entry.type, entry.name, cache_dirs) is not None


def _describe(entries: list[Entry]) -> tuple[list[str], str]:
    tasks = [f"{e.task}/{e.type}" for e in entries]
    models = ",".join(sorted({e.name for e in entries}))
    return tasks, models


_HAND_ON = (UnsupportedTaskError, ModelNotFoundError, DownloadError)
_NO_FORWARD_HINT = (
    " To hand such requests on to another ML service (e.g. your Immich ML container), "
    "start the server with --forward URL (or set it on the Server page)."
)


class MlServer:
    """Immich's ML service on an Engine. `start()`/`stop()` run it on a background thread;
    `serve_forever()` runs it on the calling thread until Ctrl+C."""

    def __init__(
        self,
        engine: Engine,
        host: str = "127.0.0.1",
        port: int = 3003,
        *,
        allow: Iterable[str] = (),
        allow_loopback: bool = True,
        forward_url: str = "",
        workers: int | None = None,
        max_image_bytes: int = MAX_IMAGE_BYTES,
        max_field_bytes: int = MAX_FIELD_BYTES,
        body_timeout: float = BODY_IDLE_TIMEOUT,
        forward_timeout: float = FORWARD_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        answers: AnswerCache | None = None,
    ) -> None:
        self.engine = engine
        self.answers = answers  # answers kept by image and entries: a hit runs no model
        self.host = host
        self.port = port
        self.networks = parse_networks(allow)
        self.allow_loopback = allow_loopback
        self.forward_url = forward_url
        self.workers = workers or default_parallel()
        self.max_image_bytes = max_image_bytes
        self.max_field_bytes = max_field_bytes
        self.body_timeout = body_timeout
        self.forward_timeout = forward_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._stats = _StatsRecorder()
        self._pool: ThreadPoolExecutor | None = None
        self._text_pool: ThreadPoolExecutor | None = None
        self._forward_client: httpx.AsyncClient | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.app = self._build_app()

    # what the GUI reads (and may change while running) -----------------------------------------------
    @property
    def forward_url(self) -> str:
        """Where requests this app cannot serve are handed on; "" answers them with an error instead."""
        return self._forward_url

    @forward_url.setter
    def forward_url(self, url: str) -> None:
        self._forward_url = (url or "").strip().rstrip("/")

    @property
    def url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def stats(self) -> ServerStats:
        return self._stats.snapshot()

    @property
    def running(self) -> bool:
        return self._uvicorn is not None and self._uvicorn.started and not self._uvicorn.should_exit

    def served_tasks(self) -> list[dict[str, Any]]:
        """Each task Immich may ask for, then those model classes added, and where it goes: `local`,
        `forward` (to `forward_url`) or `unavailable` (answered with an error that names it). `classes`
        says which model class serves which names there (`ModelClassInfo.as_dict()`: class, names, source)."""
        local = set(served_tasks())
        known = list(IMMICH_TASKS) + sorted(local - set(IMMICH_TASKS))
        routes = []
        for task, model_type in known:
            route = "local" if (task, model_type) in local else ("forward" if self.forward_url else "unavailable")
            classes = [c.as_dict() for c in model_classes(task, model_type)]
            routes.append({"task": task, "type": model_type, "route": route, "classes": classes})
        return routes

    def plugin_problems(self) -> list[str]:
        """Model plugins (entry points) that could not be loaded or registered, each in a sentence."""
        return plugin_problems()

    def preload(self, names: Iterable[str]) -> list[str]:
        """Load every model type found in the cache under each name (e.g. both CLIP encoders), or, for a
        catalogued model not yet downloaded, download and load it when downloads are allowed; returns
        "task/type/name" of each loaded model. Raises ModelNotFoundError for a name found nowhere."""
        loaded = []
        for name in names:
            served = [(t, m) for t, m in served_tasks() if model_class(t, m, name, self.engine.cache_dirs) is not None]
            types = [(t, m) for t, m in served if self.engine.get_model(t, m, name, load=False).model_dir.is_dir()]
            if not types and self.engine.allow_downloads:
                from immich_ml_desktop.model_store import catalog

                entry = catalog.lookup(name)
                types = [(t, m) for t, m in served if entry is not None and t == entry.task.value]
            if not types:
                caches = ", ".join(str(c) for c in self.engine.cache_dirs)
                raise ModelNotFoundError(
                    f"Cannot preload {name!r}: no model of that name in {caches}. "
                    f"Run `immich-ml-desktop models download {name}` or check the name."
                )
            for task, model_type in types:
                model = self.engine.get_model(task, model_type, name)
                loaded.append(f"{task}/{model_type}/{model.model_name}")
        return loaded

    # running ------------------------------------------------------------------------------------
    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            raise InvalidInputError(self._bind_problem(e)) from None
        # Accepted connections inherit this; without it uvicorn's two writes per response (head, body)
        # meet the client's delayed ACK and every answer waits ~40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.listen(BACKLOG)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        return sock

    def _bind_problem(self, e: OSError) -> str:
        """Why the address cannot be listened on, in words that point at the right setting."""
        where = f"Cannot listen on {self.host}:{self.port}"
        if isinstance(e, socket.gaierror):
            return f"{where}: {self.host!r} is not an IP address or a host name this machine can resolve ({e.strerror or e}). Use e.g. 127.0.0.1 or 0.0.0.0 with --host."
        if e.errno == errno.EADDRNOTAVAIL:
            return (f"{where}: {self.host} is not an address of this machine. Use one of its own addresses, "
                    "127.0.0.1 (this machine only) or 0.0.0.0 (every interface) with --host.")
        if e.errno == errno.EACCES:
            return f"{where}: ports below 1024 need administrator rights; choose another with --port (Immich's default is 3003)."
        if e.errno == errno.EADDRINUSE:
            return (f"{where}: {e.strerror}. Another program (maybe Immich's own ML service) uses that port: "
                    "choose another with --port.")
        return f"{where}: {e.strerror or e}."

    def _protocol(self) -> type[_GuardedH11]:
        """The HTTP protocol class of this server, with its idle timeout and connection cap."""
        cap = connection_cap(self.max_connections)
        if cap < self.max_connections:
            log.info("At most %d connections at once (open-file limit %s)", cap, open_file_limit())
        attributes = {"idle_timeout": self.idle_timeout, "max_connections": cap,
                      "evictions": _Throttled(), "refusals": _Throttled()}
        return type("GuardedH11", (_GuardedH11,), attributes)

    def _uvicorn_server(self) -> uvicorn.Server:
        logging.getLogger("asyncio").addFilter(_ACCEPT_ERROR_FILTER)  # once: filters are a set
        config = uvicorn.Config(
            self.app,
            loop="asyncio",
            http=self._protocol(),
            # limit_concurrency is left unset: it counts open connections, so idle ones would make it
            # answer 503 to Immich's requests; the protocol's cap closes idle connections instead.
            timeout_keep_alive=max(1, round(self.idle_timeout)),
            backlog=BACKLOG,
            lifespan="on",
            log_config=None,
            access_log=False,  # one line per request of our own, with tasks and models
            timeout_graceful_shutdown=5,
        )
        return uvicorn.Server(config)

    def _open(self) -> socket.socket:
        if self._uvicorn is not None:
            raise RuntimeError("MlServer is already running")
        sock = self._bind()
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ml-infer")
        # Search text is someone waiting at Immich's search box: a lane of its own, so it never queues
        # behind seconds of face or OCR work from an indexing job (as wide as the main pool: one thread
        # answered 5.1 text req/s at 4 clients against 6.8 for two).
        self._text_pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ml-text")
        self._uvicorn = self._uvicorn_server()
        self._error = None
        if self.host not in ("127.0.0.1", "::1", "localhost") and not self.networks:
            log.warning(
                "Listening on %s with no allow-list: anyone who can reach this machine can use its models "
                "(the protocol has no authentication). Limit it with --allow ADDRESS.", self.host
            )
        return sock

    def _close(self) -> None:
        for pool in (self._pool, self._text_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._text_pool = None
        self._uvicorn = None

    def start(self, timeout: float = 10.0) -> None:
        """Listen and serve on a background thread; returns once requests are accepted."""
        sock = self._open()
        server = self._uvicorn
        assert server is not None

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as e:  # noqa: BLE001 - reported to start()'s caller
                self._error = e
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name=f"ml-server-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise InvalidInputError(f"The ML server did not start on {self.url}: {self._error or 'timed out'}.")
            time.sleep(0.01)
        log.info("Immich ML service on %s (%d inference threads)", self.url, self.workers)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting requests, finish those in flight (up to a few seconds) and release the port."""
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._close()

    def serve_forever(self) -> None:
        """Serve on the calling thread until interrupted (Ctrl+C / SIGTERM)."""
        sock = self._open()
        assert self._uvicorn is not None
        log.info("Immich ML service on %s (%d inference threads)", self.url, self.workers)
        try:
            self._uvicorn.run(sockets=[sock])
        finally:
            sock.close()
            self._close()

    def __enter__(self) -> MlServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # the app ------------------------------------------------------------------------------------
    def _build_app(self) -> ASGIApp:
        async def lifespan(app: FastAPI):
            # Always there, so the GUI can set a forward URL while the server runs.
            self._forward_client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=FORWARD_CONNECT_TIMEOUT))
            try:
                yield
            finally:
                if self._forward_client is not None:
                    await self._forward_client.aclose()
                    self._forward_client = None

        app = FastAPI(title="Immich ML (immich-ml-desktop)", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

        @app.get("/")
        async def root() -> dict[str, str]:
            return {"message": "Immich ML"}

        @app.get("/ping", response_class=PlainTextResponse)
        async def ping() -> str:
            return "pong"

        @app.post("/predict")
        async def predict(request: Request) -> Response:
            return await self._predict(request)

        return _ClientFilter(app, self.networks, self.allow_loopback)

    async def _predict(self, request: Request) -> Response:
        start = time.perf_counter()
        tasks: list[str] = []
        models = "-"
        forwarded = False
        from_cache = False
        status = 200
        try:
            body = await self._read_body(request)
            content_type = request.headers.get("content-type", "")
            if len(body) > IN_THREAD_PARSE_BYTES:
                form = await asyncio.to_thread(parse_form, body, content_type)
            else:
                form = parse_form(body, content_type)
            entries = self._entries(form)
            tasks, models = _describe(entries)
            image, text = self._payload(form)
            can_forward = bool(self.forward_url) and FORWARDED_HEADER not in request.headers
            if can_forward and not all(_runs_locally(e, self.engine.cache_dirs) for e in entries):
                forwarded = True
                response = await self._forward(body, content_type)
            else:
                try:
                    key = None
                    if image is not None and self.answers is not None:
                        key, answer = await asyncio.to_thread(self._cached, entries, image)
                        from_cache = answer is not None
                    if not from_cache:
                        pool = self._text_pool if image is None else self._pool
                        answer = await asyncio.get_running_loop().run_in_executor(pool, self._run, entries, image, text)
                        if key is not None:
                            asyncio.get_running_loop().run_in_executor(None, self._remember, key, answer)
                    response = Response(answer, media_type="application/json")
                except _HAND_ON as e:
                    if not can_forward:
                        raise type(e)(f"{e}{_NO_FORWARD_HINT}") from None
                    log.info("Handing on to %s: %s", self.forward_url, e)
                    forwarded = True
                    response = await self._forward(body, content_type)
            status = response.status_code
            return response
        except UserError as e:
            status = e.http_status
            return JSONResponse({"detail": str(e)}, status_code=status)
        except ClientDisconnect:
            status = 499  # nobody to answer; logged as nginx does
            return Response(status_code=400)
        except Exception as e:  # a hostile request must never take the server down
            status = 500
            log.exception("Unexpected error answering /predict")
            return JSONResponse({"detail": f"Internal error: {type(e).__name__}: {e}"}, status_code=500)
        finally:
            ms = (time.perf_counter() - start) * 1000
            self._stats.record(tasks, status, ms, forwarded, from_cache)
            log.info(
                "predict %s %s %d %.1f ms%s",
                "+".join(tasks) or "-", models, status, ms,
                f" (forwarded to {self.forward_url})" if forwarded else " (answer cache)" if from_cache else "",
            )

    async def _read_body(self, request: Request) -> bytes:
        limit = self.max_image_bytes + 2 * self.max_field_bytes + 64 * 1024  # multipart framing
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise InvalidInputError(f"Content-Length {declared!r} is not a number.") from None
            if size > limit:
                raise self._too_large(size)
        body = bytearray()
        chunks = request.stream().__aiter__()
        while True:
            try:
                chunk = await asyncio.wait_for(chunks.__anext__(), self.body_timeout)
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                raise RequestTimeoutError(
                    f"No part of the request body arrived for {self.body_timeout:.0f} s; the request was dropped."
                ) from None
            body += chunk
            if len(body) > limit:
                raise self._too_large(len(body))
        return bytes(body)

    def _too_large(self, size: int) -> RequestTooLargeError:
        return RequestTooLargeError(
            f"The request ({size / 1e6:.1f} MB) is over the {self.max_image_bytes / 2**20:.0f} MiB image limit."
        )

    def _entries(self, form: dict[str, FormPart]) -> list[Entry]:
        for name in ("entries", "text"):
            part = form.get(name)
            if part is not None and len(part.data) > self.max_field_bytes:
                raise RequestTooLargeError(f"The {name} field is over {self.max_field_bytes // 1024} KiB.")
        if "entries" not in form:
            raise EntriesFormatError('The request has no "entries" field: send the tasks as JSON in a form field named entries.')
        return parse_entries(bytes(form["entries"].data))

    def _payload(self, form: dict[str, FormPart]) -> tuple[bytes | None, str | None]:
        image = bytes(form["image"].data) if "image" in form else None
        if image is not None and len(image) > self.max_image_bytes:
            raise self._too_large(len(image))
        text = form["text"].text if "text" in form else None
        if image is None and text is None:
            raise InvalidInputError("Either image or text must be provided.")
        return image, text

    def _run(self, entries: list[Entry], image: bytes | None, text: str | None) -> bytes:
        return to_json(run_entries(self.engine, entries, image=image, text=text))

    def _cached(self, entries: list[Entry], image: bytes) -> tuple[tuple[str, str] | None, bytes | None]:
        """((image digest, answer key), the kept answer or None); no key where the models are not here."""
        assert self.answers is not None
        key = answer_key(self.engine, entries)
        if key is None:
            return None, None
        digest = image_digest(image)
        return (digest, key), self.answers.get(digest, key)

    def _remember(self, key: tuple[str, str], answer: bytes) -> None:
        assert self.answers is not None
        self.answers.put(key[0], key[1], answer, origin="server")

    async def _forward(self, body: bytes, content_type: str) -> Response:
        """Send the request on byte for byte and answer exactly what came back."""
        assert self._forward_client is not None
        target = f"{self.forward_url}/predict"
        try:
            headers = {"content-type": content_type, FORWARDED_HEADER: "1"}
            wait = self.forward_timeout
            timeout = httpx.Timeout(wait, connect=FORWARD_CONNECT_TIMEOUT)
            answer = await self._forward_client.post(target, content=body, headers=headers, timeout=timeout)
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout) as e:
            said = {
                httpx.ReadTimeout: "accepted the request but did not answer",
                httpx.WriteTimeout: "accepted the connection but did not take the request",
                httpx.PoolTimeout: "already holds every connection we may open to it, unanswered, and none came free",
            }[type(e)]
            raise ForwardTimeoutError(
                f"This request needs a task or model served by {self.forward_url}, which {said} within {wait:g} s. "
                "Check that service (is it stuck or overloaded?); tasks served here keep working."
            ) from None
        except httpx.HTTPError as e:
            raise ForwardError(
                f"This request needs a task or model served by {self.forward_url}, which could not be reached "
                f"({type(e).__name__}: {e or 'no answer'}). Check that it is running and the forward URL is right; "
                "tasks served here keep working."
            ) from None
        headers = {"content-type": answer.headers.get("content-type", "application/json")}
        return Response(answer.content, status_code=answer.status_code, headers=headers)
