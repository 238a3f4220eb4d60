"""An Immich API server for the test suite: real HTTP on 127.0.0.1, state kept in memory.

Every request and every successful response is validated against Immich's OpenAPI spec (v3.1, through
openapi-core); violations are answered 400 and collected in `spec_errors`, which tests assert empty.
Keys, permissions and admin-only routes behave as Immich's guards do. Faults can be injected: an HTTP
status on the n-th matching request (before or after the change is applied) or a connection dropped
halfway through a download.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import io
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import uvicorn
from jsonschema_path import SchemaPath
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from PIL import Image, ImageOps
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

PREVIEW_SIZE = 1440  # Immich's default preview: shorter side 1440 px, never enlarged
QUEUE_NAMES_FOR_ML = ("smartSearch", "faceDetection", "facialRecognition")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def load_spec(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def sample(spec: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A minimal valid value for a schema: required properties only, defaults, first enum values."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return sample(spec, spec["components"]["schemas"][name])
    if "allOf" in schema:
        return sample(spec, schema["allOf"][0])
    if "default" in schema:
        return copy.deepcopy(schema["default"])
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: (None if props[k].get("nullable") else sample(spec, props[k])) for k in schema.get("required", [])}
    if kind == "array":
        return [sample(spec, schema["items"])] * schema.get("minItems", 0)
    if kind == "boolean":
        return False
    if kind in ("integer", "number"):
        return max(0, schema.get("minimum", 0)) if schema.get("minimum", 0) <= 1 else schema["minimum"]
    fmt = schema.get("format")
    if fmt == "date-time":
        return "2024-01-01T00:00:00.000Z"
    if fmt == "date":
        return "2024-01-01"
    if fmt == "uuid":
        return str(uuid.uuid4())
    if fmt == "email":
        return "admin@example.com"
    return "x" * schema.get("minLength", 0)


def nullable_refs_inlined(spec: dict[str, Any]) -> dict[str, Any]:
    """`{"allOf": [{"$ref": X}], "nullable": true}` -> X's schema with `nullable: true`.

    Same meaning in OpenAPI 3.0, but openapi-core only honours `nullable` beside a `type`: without this
    a face with no person (`"person": null`, as Immich sends) would fail validation.
    """
    spec = copy.deepcopy(spec)
    schemas = spec["components"]["schemas"]

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("nullable") and len(node.get("allOf", ())) == 1 and "$ref" in node["allOf"][0]:
                target = schemas[node["allOf"][0]["$ref"].rsplit("/", 1)[1]]
                return {**copy.deepcopy(target), "nullable": True}
            return {k: fix(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    return fix(spec)


def preview_jpeg(photo: Path) -> tuple[bytes, int, int]:
    """What Immich makes of an upload: rotated upright, shorter side <= 1440, JPEG."""
    with Image.open(photo) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
        scale = PREVIEW_SIZE / min(im.size)
        if scale < 1:
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        im.save(out, "JPEG", quality=90)
        return out.getvalue(), im.width, im.height


@dataclass
class Fault:
    """Fail matching requests: `skip` pass first, then `times` fail (status or a dropped connection)."""

    operation: str | None = None          # operationId, None = any
    methods: frozenset[str] = frozenset()  # empty = any
    skip: int = 0
    times: int = 1
    status: int = 500
    drop: bool = False                    # cut a download halfway instead of answering
    after: bool = False                   # apply the change, then fail (a crash after the commit)
    seen: int = 0
    fired: int = 0

    def matches(self, operation: str, method: str) -> bool:
        if self.operation not in (None, operation) or (self.methods and method not in self.methods):
            return False
        self.seen += 1
        if self.seen <= self.skip or self.fired >= self.times:
            return False
        self.fired += 1
        return True


@dataclass
class Key:
    secret: str
    permissions: list[str]
    user_id: str
    name: str = "test key"
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


class FakeImmich:
    """State + HTTP server. `start()` returns the base URL (without `/api`)."""

    def __init__(self, spec_path: Path, version: tuple[int, int, int] = (3, 1, 0)) -> None:
        self.spec = load_spec(spec_path)
        self.openapi = OpenAPI(SchemaPath.from_dict(nullable_refs_inlined(self.spec)), config=Config(spec_validator_cls=None))
        self.version = version
        self.lock = threading.RLock()
        self.users: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, Key] = {}
        self.assets: dict[str, dict[str, Any]] = {}
        self.previews: dict[str, bytes] = {}
        self.faces: dict[str, dict[str, Any]] = {}
        self.people: dict[str, dict[str, Any]] = {}
        self.config = self._default_config()
        self.queues = {name: {"isPaused": False, "statistics": sample(self.spec, {"$ref": "#/components/schemas/QueueStatisticsDto"})}
                       for name in self._schema("QueueName")["enum"]}
        self.faults: list[Fault] = []
        self.missing_operations: set[str] = set()  # answer 404, as an older server would
        self.log: list[tuple[str, str, int]] = []  # (operationId, path, status) of every request
        self.spec_errors: list[str] = []
        self.latency = 0.0  # seconds each request takes, to observe concurrency
        self.in_flight = 0
        self.max_in_flight = 0
        self.admin_id = self.add_user("Admin", admin=True)
        self.admin_key = self.add_key(["all"], self.admin_id, secret="admin-key")
        self._routes = self._route_table()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- state set-up ----------------------------------------------------------------------------

    def _schema(self, name: str) -> dict[str, Any]:
        return self.spec["components"]["schemas"][name]

    def _default_config(self) -> dict[str, Any]:
        config = sample(self.spec, {"$ref": "#/components/schemas/SystemConfigDto"})
        config["nightlyTasks"]["startTime"] = "00:00"  # the one field whose pattern `sample` cannot meet
        ml = config["machineLearning"]
        ml.update(enabled=True, urls=["http://immich-machine-learning:3003"])
        ml["clip"].update(enabled=True, modelName="ViT-B-32__openai")
        ml["facialRecognition"].update(enabled=True, modelName="buffalo_l", minScore=0.7, maxDistance=0.5, minFaces=3)
        return config

    def add_user(self, name: str, admin: bool = False) -> str:
        user = sample(self.spec, {"$ref": "#/components/schemas/UserAdminResponseDto"})
        user.update(id=str(uuid.uuid4()), name=name, email=f"{name.lower()}@example.com", isAdmin=admin,
)
        self.users[user["id"]] = user
        return user["id"]

    def add_key(self, permissions: list[str], user_id: str | None = None, secret: str | None = None) -> str:
        secret = secret or uuid.uuid4().hex
        self.keys[secret] = Key(secret, list(permissions), user_id or self.admin_id)
        return secret

    def add_asset(self, photo: Path, kind: str = "IMAGE", name: str | None = None) -> str:
        data, width, height = preview_jpeg(photo)
        asset = sample(self.spec, {"$ref": "#/components/schemas/AssetResponseDto"})
        asset_id = str(uuid.uuid4())
        stamp = now_iso()
        asset.update(
            id=asset_id, type=kind, ownerId=self.admin_id, visibility="timeline",
            originalFileName=name or photo.name, originalPath=f"/data/upload/{photo.name}",
            checksum=base64.b64encode(hashlib.sha1(photo.read_bytes()).digest()).decode(),
            createdAt=stamp, updatedAt=stamp, fileCreatedAt=stamp, fileModifiedAt=stamp, localDateTime=stamp,
            width=width, height=height, thumbhash=None, duration=4000 if kind == "VIDEO" else None,
        )
        self.assets[asset_id] = asset
        self.previews[asset_id] = data
        return asset_id

    def replace_asset_photo(self, asset_id: str, photo: Path) -> None:
        """The asset's file changed (an edit): new preview, checksum and `updatedAt`."""
        data, width, height = preview_jpeg(photo)
        time.sleep(0.002)  # distinct millisecond timestamps
        self.assets[asset_id].update(
            checksum=base64.b64encode(hashlib.sha1(photo.read_bytes()).digest()).decode(),
            updatedAt=now_iso(), width=width, height=height,
        )
        self.previews[asset_id] = data

    def add_person(self, name: str = "", hidden: bool = False) -> str:
        person = sample(self.spec, {"$ref": "#/components/schemas/PersonResponseDto"})
        person.update(id=str(uuid.uuid4()), name=name, isHidden=hidden, thumbnailPath="", updatedAt=now_iso())
        self.people[person["id"]] = person
        return person["id"]

    def add_face(self, asset_id: str, box: tuple[float, float, float, float], person_id: str | None = None) -> str:
        """A face as Immich's face detection stores it: integer box in preview pixels."""
        with Image.open(io.BytesIO(self.previews[asset_id])) as im:
            width, height = im.size
        face_id = str(uuid.uuid4())
        x1, y1, x2, y2 = (round(v) for v in box)
        self.faces[face_id] = {
            "id": face_id, "assetId": asset_id, "personId": person_id, "sourceType": "machine-learning",
            "boundingBoxX1": x1, "boundingBoxY1": y1, "boundingBoxX2": x2, "boundingBoxY2": y2,
            "imageWidth": width, "imageHeight": height,
        }
        return face_id

    def inject(self, **kwargs: Any) -> Fault:
        if "methods" in kwargs:
            kwargs["methods"] = frozenset(kwargs["methods"])
        fault = Fault(**kwargs)
        self.faults.append(fault)
        return fault

    def faces_of(self, person_id: str | None) -> set[str]:
        return {f["id"] for f in self.faces.values() if f["personId"] == person_id}

    def calls(self, operation: str) -> int:
        return sum(1 for op, _, status in self.log if op == operation and status < 400)

    def snapshot(self) -> dict[str, Any]:
        """What a push can change: who each face belongs to (by name) and the people's names/hidden."""
        people = {pid: (p["name"], p["isHidden"]) for pid, p in self.people.items()}
        faces = {fid: (self.people[f["personId"]]["name"] if f["personId"] else None) for fid, f in self.faces.items()}
        by_people = sorted((name, hidden, tuple(sorted(fid for fid, f in self.faces.items() if f["personId"] == pid)))
                           for pid, (name, hidden) in people.items())
        return {"faces": faces, "people": by_people}

    # -- HTTP ------------------------------------------------------------------------------------

    def start(self, port: int = 0) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        port = sock.getsockname()[1]
        app = Starlette(routes=[Route("/{path:path}", self._endpoint, methods=["GET", "POST", "PUT", "DELETE"])])
        config = uvicorn.Config(app, log_level="critical", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake Immich did not start")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = None

    def _route_table(self) -> list[tuple[str, re.Pattern[str], str, Callable[..., Any]]]:
        handlers = {
            "getServerVersion": self._version, "getMyApiKey": self._my_key, "getMyUser": self._my_user,
            "searchAssets": self._search, "viewAsset": self._thumbnail, "getFaces": self._get_faces,
            "reassignFacesById": self._reassign, "getAllPeople": self._get_people, "getPerson": self._get_person,
            "createPerson": self._create_person, "updatePeople": self._update_people,
            "deletePerson": self._delete_person, "mergePerson": self._merge, "getConfig": self._get_config,
            "updateConfig": self._put_config, "getQueues": self._get_queues, "getQueuesLegacy": self._get_jobs,
            "runQueueCommandLegacy": self._run_job,
        }
        routes = []
        for path, ops in self.spec["paths"].items():
            for method, op in ops.items():
                if isinstance(op, dict) and op.get("operationId") in handlers:
                    pattern = re.compile("^/api" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")
                    routes.append((method.upper(), pattern, op["operationId"], handlers[op["operationId"]]))
        assert len(routes) == len(handlers), "every fake handler must be an operation of the spec"
        return routes

    def _operation(self, operation_id: str) -> dict[str, Any]:
        for ops in self.spec["paths"].values():
            for op in ops.values():
                if isinstance(op, dict) and op.get("operationId") == operation_id:
                    return op
        raise KeyError(operation_id)

    async def _endpoint(self, request: Request) -> Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            return await self._handle(request)
        finally:
            self.in_flight -= 1

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        path = request.url.path
        for method, pattern, operation, handler in self._routes:
            match = pattern.match(path)
            if match and method == request.method:
                break
        else:
            return self._answer("unknown", path, 404, {"message": f"Cannot {request.method} {path}", "statusCode": 404})
        if operation in self.missing_operations:
            return self._answer(operation, path, 404, {"message": f"Cannot {request.method} {path}", "statusCode": 404})
        op = self._operation(operation)
        if "security" in op:
            key = self.keys.get(request.headers.get("x-api-key", ""))
            if key is None:
                return self._answer(operation, path, 401, {"message": "Invalid API key", "statusCode": 401, "error": "Unauthorized"})
            user = self.users[key.user_id]
            if op.get("x-immich-admin-only") and not user["isAdmin"]:
                return self._answer(operation, path, 403, {"message": "Forbidden resource", "statusCode": 403, "error": "Forbidden"})
            needed = op.get("x-immich-permission")
            if needed and "all" not in key.permissions and needed not in key.permissions:
                return self._answer(operation, path, 403, {"message": f"Missing required permission: {needed}",
                                                           "statusCode": 403, "error": "Forbidden"})
        else:
            key = None
        mock = MockRequest(f"{request.url.scheme}://{request.url.netloc}", request.method.lower(), path,
                           args=dict(request.query_params), headers=dict(request.headers), data=body or None,
                           content_type=request.headers.get("content-type", "application/json"))
        try:
            self.openapi.validate_request(mock)
        except Exception as e:  # noqa: BLE001 - every validation failure is a client bug to report
            message = f"request {request.method} {path}: {e}"
            self.spec_errors.append(message)
            return self._answer(operation, path, 400, {"message": message, "statusCode": 400, "error": "Bad Request"})
        fault = next((f for f in self.faults if f.matches(operation, request.method)), None)
        if fault is not None and not fault.after and not fault.drop:
            return self._answer(operation, path, fault.status, {"message": "Internal server error", "statusCode": fault.status})
        with self.lock:
            try:
                status, payload = handler(key=key, query=dict(request.query_params),
                                          body=json.loads(body) if body else None, **match.groupdict())
            except LookupError as e:
                return self._answer(operation, path, 400, {"message": f"Not found or no access: {e}", "statusCode": 400})
        if fault is not None and fault.after:
            return self._answer(operation, path, fault.status, {"message": "Internal server error", "statusCode": fault.status})
        if isinstance(payload, bytes):
            self._validate_response(mock, operation, path, status, payload, "application/octet-stream")
            return self._stream(operation, path, payload, drop=fault is not None and fault.drop)
        data = b"" if payload is None else json.dumps(payload).encode()
        self._validate_response(mock, operation, path, status, data, "application/json")
        return self._answer(operation, path, status, payload)

    def _validate_response(self, mock: MockRequest, operation: str, path: str, status: int, data: bytes, kind: str) -> None:
        try:
            self.openapi.validate_response(mock, MockResponse(data, status_code=status, content_type=kind))
        except Exception as e:  # noqa: BLE001
            self.spec_errors.append(f"response {operation} {path}: {e}")

    def _answer(self, operation: str, path: str, status: int, payload: Any) -> Response:
        self.log.append((operation, path, status))
        if payload is None:
            return Response(status_code=status)
        return JSONResponse(payload, status_code=status)

    def _stream(self, operation: str, path: str, data: bytes, drop: bool) -> Response:
        self.log.append((operation, path, 599 if drop else 200))

        async def chunks():
            half = len(data) // 2
            yield data[:half]
            if drop:
                raise ConnectionResetError("fake Immich dropped the connection")  # uvicorn closes the socket
            yield data[half:]

        return StreamingResponse(chunks(), media_type="application/octet-stream",
                                 headers={"content-length": str(len(data))})

    # -- handlers: (status, JSON-able payload | bytes | None) -------------------------------------

    def _version(self, **_: Any) -> tuple[int, Any]:
        major, minor, patch = self.version
        return 200, {"major": major, "minor": minor, "patch": patch, "prerelease": None}

    def _my_key(self, key: Key, **_: Any) -> tuple[int, Any]:
        return 200, {"id": key.id, "name": key.name, "permissions": key.permissions,
                     "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2024-01-01T00:00:00.000Z"}

    def _my_user(self, key: Key, **_: Any) -> tuple[int, Any]:
        return 200, self.users[key.user_id]

    def _search(self, body: dict[str, Any], **_: Any) -> tuple[int, Any]:
        assets = sorted(self.assets.values(), key=lambda a: (a["fileCreatedAt"], a["id"]), reverse=body.get("order", "desc") == "desc")
        if "type" in body:
            assets = [a for a in assets if a["type"] == body["type"]]
        if "updatedAfter" in body:
            assets = [a for a in assets if a["updatedAt"] > body["updatedAfter"]]
        if "personIds" in body:
            wanted = set(body["personIds"])
            with_people = {f["assetId"] for f in self.faces.values() if f["personId"] in wanted}
            assets = [a for a in assets if a["id"] in with_people]
        page, size = body.get("page", 1), body.get("size", 250)
        items = assets[(page - 1) * size: page * size]
        more = page * size < len(assets)
        return 200, {"albums": {"count": 0, "facets": [], "items": [], "total": 0},
                     "assets": {"count": len(items), "facets": [], "items": items, "total": len(items),
                                "nextPage": str(page + 1) if more else None}}

    def _thumbnail(self, id: str, **_: Any) -> tuple[int, Any]:
        if id not in self.previews:
            raise LookupError(id)
        return 200, self.previews[id]

    def _person_dto(self, person_id: str | None) -> dict[str, Any] | None:
        return copy.deepcopy(self.people[person_id]) if person_id else None

    def _get_faces(self, query: dict[str, str], **_: Any) -> tuple[int, Any]:
        if query["id"] not in self.assets:
            raise LookupError(query["id"])
        faces = [f for f in self.faces.values() if f["assetId"] == query["id"]]
        return 200, [{**{k: v for k, v in f.items() if k not in ("assetId", "personId")},
                      "person": self._person_dto(f["personId"])} for f in faces]

    def _reassign(self, id: str, body: dict[str, Any], **_: Any) -> tuple[int, Any]:
        if id not in self.people or body["id"] not in self.faces:
            raise LookupError(id)
        self.faces[body["id"]]["personId"] = id
        return 200, self._person_dto(id)

    def _get_people(self, query: dict[str, str], **_: Any) -> tuple[int, Any]:
        with_hidden = query.get("withHidden") == "true"
        people = [p for p in self.people.values() if with_hidden or not p["isHidden"]]
        page, size = int(query.get("page", 1)), int(query.get("size", 500))
        chunk = people[(page - 1) * size: page * size]
        return 200, {"people": copy.deepcopy(chunk), "total": len(people), "hasNextPage": page * size < len(people),
                     "hidden": sum(1 for p in self.people.values() if p["isHidden"])}

    def _get_person(self, id: str, **_: Any) -> tuple[int, Any]:
        if id not in self.people:
            raise LookupError(id)
        return 200, self._person_dto(id)

    def _create_person(self, body: dict[str, Any], **_: Any) -> tuple[int, Any]:
        person_id = self.add_person(body.get("name", ""), body.get("isHidden", False))
        return 201, self._person_dto(person_id)

    def _update_people(self, body: dict[str, Any], **_: Any) -> tuple[int, Any]:
        results = []
        for item in body["people"]:
            person = self.people.get(item["id"])
            if person is None:
                results.append({"id": item["id"], "success": False, "error": "not_found"})
                continue
            person.update({k: v for k, v in item.items() if k in ("name", "isHidden", "isFavorite", "birthDate")},
                          updatedAt=now_iso())
            results.append({"id": item["id"], "success": True})
        return 200, results

    def _delete_person(self, id: str, **_: Any) -> tuple[int, Any]:
        if id not in self.people:
            raise LookupError(id)
        del self.people[id]
        for face in self.faces.values():
            if face["personId"] == id:
                face["personId"] = None  # asset_face.personId is ON DELETE SET NULL
        return 204, None

    def _merge(self, id: str, body: dict[str, Any], **_: Any) -> tuple[int, Any]:
        if id not in self.people:
            raise LookupError(id)
        results = []
        for other in body["ids"]:
            if other not in self.people or other == id:
                results.append({"id": other, "success": False, "error": "not_found"})
                continue
            for face in self.faces.values():
                if face["personId"] == other:
                    face["personId"] = id
            del self.people[other]
            results.append({"id": other, "success": True})
        return 200, results

    def _get_config(self, **_: Any) -> tuple[int, Any]:
        return 200, copy.deepcopy(self.config)

    def _put_config(self, body: dict[str, Any], **_: Any) -> tuple[int, Any]:
        self.config = copy.deepcopy(body)
        return 200, copy.deepcopy(self.config)

    def _get_queues(self, **_: Any) -> tuple[int, Any]:
        return 200, [{"name": name, **copy.deepcopy(q)} for name, q in self.queues.items()]

    def _get_jobs(self, **_: Any) -> tuple[int, Any]:
        return 200, {name: {"jobCounts": copy.deepcopy(q["statistics"]),
                            "queueStatus": {"isActive": q["statistics"]["active"] > 0, "isPaused": q["isPaused"]}}
                     for name, q in self.queues.items()}

    def _run_job(self, name: str, body: dict[str, Any], **_: Any) -> tuple[int, Any]:
        stats = self.queues[name]["statistics"]
        if body["command"] == "start":
            stats["waiting"] += len(self.assets) if body.get("force") else max(0, len(self.assets) - stats["completed"])
        elif body["command"] == "empty":
            stats["waiting"] = 0
        self.queues[name]["isPaused"] = body["command"] == "pause" or (self.queues[name]["isPaused"] and body["command"] != "resume")
        return 200, {"jobCounts": copy.deepcopy(stats),
                     "queueStatus": {"isActive": stats["waiting"] > 0, "isPaused": self.queues[name]["isPaused"]}}

    def process_jobs(self, name: str, count: int) -> None:
        """Immich's workers finish `count` waiting jobs of a queue."""
        stats = self.queues[name]["statistics"]
        done = min(count, stats["waiting"])
        stats["waiting"] -= done
        stats["completed"] += done


def main() -> None:
    """Run by hand (for the docs): `python tests/fake_immich.py PHOTO...` serves until Ctrl-C.

    With `--face-pack NAME --models DIR`, faces are detected on each preview with that pack and stored
    unassigned, as Immich's face detection job would have stored them. Each `--person A.jpg,B.jpg` then
    puts the faces of those photos on one unnamed person, as Immich's own clustering would have.
    """
    import argparse

    shared = Path(__file__).resolve().parents[2] / "shared"
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--spec", type=Path, default=shared / "immich/immich-openapi-specs.json")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--models", type=Path, default=shared / "models")
    parser.add_argument("--face-pack", help="detect faces with this pack of --models")
    parser.add_argument("--person", action="append", default=[], metavar="PHOTO,PHOTO",
                        help="an unnamed person holding the faces of these photos (file names; repeatable)")
    parser.add_argument("photos", nargs="*", type=Path)
    args = parser.parse_args()
    fake = FakeImmich(args.spec)
    ids = {photo.name: fake.add_asset(photo) for photo in args.photos}
    person_of: dict[str, str] = {}
    for group in args.person:
        person = fake.add_person()
        for name in group.split(","):
            if name not in ids:
                parser.error(f"--person names {name!r}, which is not one of the photos")
            person_of[ids[name]] = person
    if args.face_pack:
        from immich_ml_desktop.models.engine import Engine

        with Engine(args.models, "cpu") as engine:
            for asset_id, data in fake.previews.items():
                for face in engine.faces(args.face_pack, data):
                    fake.add_face(asset_id, tuple(float(v) for v in face.box), person_of.get(asset_id))
    url = fake.start(args.port)
    print(f"fake Immich at {url} with {len(fake.assets)} assets and {len(fake.faces)} faces; "
          f"API key: {fake.admin_key}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
