"""A small Hugging-Face-like hub on 127.0.0.1 for the model store's tests.

Serves model repos built from folders the way the hub does for the endpoints downloaders use: model
info with blobs (sizes, git blob ids, LFS sha256), the tree API, and `resolve/<rev>/<path>` with ETag,
X-Repo-Commit, X-Linked-Etag/X-Linked-Size and Range requests. It counts every request and can inject
faults (a connection dropped mid-file, 404, 500, corrupted bytes).
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_THRESHOLD = 1024  # bigger files are stored in LFS, as the hub's default .gitattributes does for *.onnx


@dataclass
class RepoFile:
    path: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def git_oid(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @property
    def lfs(self) -> bool:
        return len(self.data) > LFS_THRESHOLD


@dataclass
class Fault:
    kind: str  # drop, 404, 500, corrupt
    path: str  # a substring of the request path
    times: int = 1
    at: float = 0.5  # for drop: the fraction of the body sent before the connection is cut


@dataclass
class Request:
    method: str
    path: str
    range: str | None


@dataclass
class HubState:
    repos: dict[str, dict[str, RepoFile]] = field(default_factory=dict)
    commits: dict[str, str] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class LocalHub:
    """`with LocalHub() as hub: hub.add_repo("immich-app/X", folder); hub.url`"""

    def __init__(self) -> None:
        self.state = HubState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="test-hub", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> LocalHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_repo(self, repo_id: str, folder: Path | None = None, files: dict[str, bytes] | None = None) -> None:
        content = dict(files or {})
        if folder is not None:
            for p in sorted(Path(folder).rglob("*")):
                if p.is_file():
                    content.setdefault(p.relative_to(folder).as_posix(), p.read_bytes())
        with self.state.lock:
            self.state.repos[repo_id] = {k: RepoFile(k, v) for k, v in content.items()}
            self.state.commits[repo_id] = hashlib.sha1(repo_id.encode() + str(len(content)).encode()).hexdigest()

    def fail(self, kind: str, path: str, times: int = 1, at: float = 0.5) -> None:
        with self.state.lock:
            self.state.faults.append(Fault(kind, path, times, at))

    @property
    def requests(self) -> list[Request]:
        with self.state.lock:
            return list(self.state.requests)

    def reset_log(self) -> None:
        with self.state.lock:
            self.state.requests.clear()


_INFO = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?/?$")
_TREE = re.compile(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


class _Handler(BaseHTTPRequestHandler):
    state: HubState
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    # --------------------------------------------------------------------------------------------
    def _fault(self, path: str) -> Fault | None:
        with self.state.lock:
            self.state.requests.append(Request(self.command, path, self.headers.get("Range")))
            for fault in self.state.faults:
                if fault.times > 0 and fault.path in path:
                    fault.times -= 1
                    return fault
        return None

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None, head: bool = False) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, data: object, head: bool) -> None:
        self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"}, head)

    def _serve(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        fault = self._fault(path)
        if fault and fault.kind == "404":
            return self._send(404, b'{"error":"Entry not found"}', {"X-Error-Code": "EntryNotFound"}, head)
        if fault and fault.kind == "500":
            return self._send(500, b'{"error":"Internal Error"}', {}, head)
        if m := _INFO.match(path):
            return self._info(m.group(1), head)
        if m := _TREE.match(path):
            return self._tree(m.group(1), m.group(3) or "", head)
        if m := _RESOLVE.match(path):
            return self._resolve(m.group(1), m.group(3), head, fault)
        self._send(404, b'{"error":"Not found"}', {}, head)

    def _repo(self, repo_id: str) -> dict[str, RepoFile] | None:
        with self.state.lock:
            return self.state.repos.get(repo_id)

    def _info(self, repo_id: str, head: bool) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return self._send(401, b'{"error":"Repository Not Found"}', {"X-Error-Code": "RepoNotFound"}, head)
        siblings = []
        for f in repo.values():
            item: dict[str, object] = {"rfilename": f.path, "size": len(f.data), "blobId": f.git_oid}
            if f.lfs:
                item["lfs"] = {"sha256": f.sha256, "size": len(f.data), "pointerSize": 134}
            siblings.append(item)
        self._json({"id": repo_id, "modelId": repo_id, "sha": self.state.commits[repo_id], "siblings": siblings}, head)

    def _tree(self, repo_id: str, prefix: str, head: bool) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return self._send(404, b'{"error":"Repository Not Found"}', {}, head)
        entries = []
        for f in repo.values():
            if prefix and not f.path.startswith(prefix.rstrip("/") + "/"):
                continue
            item: dict[str, object] = {"type": "file", "path": f.path, "size": len(f.data), "oid": f.git_oid}
            if f.lfs:
                item["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": 134}
            entries.append(item)
        self._json(entries, head)

    def _resolve(self, repo_id: str, rel: str, head: bool, fault: Fault | None) -> None:
        repo = self._repo(repo_id)
        f = repo.get(rel) if repo else None
        if f is None:
            return self._send(404, b'{"error":"Entry not found"}', {"X-Error-Code": "EntryNotFound"}, head)
        etag = f'"{f.sha256 if f.lfs else f.git_oid}"'
        headers = {
            "ETag": etag,
            "X-Repo-Commit": self.state.commits[repo_id],
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if f.lfs:
            headers["X-Linked-Etag"] = etag
            headers["X-Linked-Size"] = str(len(f.data))
        data = f.data
        start = 0
        status = 200
        if (rng := self.headers.get("Range")) and (m := re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())):
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else len(data) - 1
            if start >= len(data):
                return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, head)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            data = data[start : end + 1]
            status = 206
        if fault and fault.kind == "corrupt":
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        if fault and fault.kind == "drop" and not head:
            # Promise the whole body, send part of it, then cut the connection.
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: int(len(data) * fault.at)])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(status, data, headers, head)
