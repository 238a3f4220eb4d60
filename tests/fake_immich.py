"""An Immich API server for the test suite: real HTTP on 127.0.0.1, state kept in memory.

Every request and every successful response is validated against Immich's OpenAPI spec (v3.1, through
openapi-core); violations are answered 400 and collected in `spec_errors`, which tests assert empty.
Keys, permissions and admin-only routes behave as Immich's guards do, and it answers as the real 3.1
server was seen to (tests/test_real_immich.py runs the same flows against one): `GET /people` lists only
people with a visible face on a timeline asset that have a name or at least 3 faces; another user's asset
is 400 "Not found or no asset.read access"; validation errors carry `errors: [{path, message}]`; queue
statistics never count completed jobs; a search without a visibility filter also returns hidden assets
(the video of a motion photo); an asset without a preview yet has no thumbhash and its preview is 404;
any edit of an asset bumps its `updatedAt`. Faults can be injected: an HTTP
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
from typing import Any
from collections.abc import Callable

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
QUEUE_NAMES_FOR_ML = ("smartSearch", "faceDetection", "facialRecognition", "ocr")
MINIMUM_FACES = 3  # Immich's default `people.minimumFaces` preference: fewer faces and no name -> not listed


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


def _validation_errors(error: Exception) -> list[dict[str, Any]]:
    """Immich 3.1's `errors` of a 400 "Validation failed" ({path: [...], message}), from openapi-core's."""
    found = []
    seen: set[int] = set()
    pending: list[Any] = [error]
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        for schema_error in getattr(e, "schema_errors", None) or ():
            found.append({"path": [p if isinstance(p, int) else str(p) for p in getattr(schema_error, "absolute_path", ())],
                          "message": getattr(schema_error, "message", str(schema_error))})
        pending += [e.__cause__, e.__context__]
    return found or [{"path": [], "message": str(error)}]


class NoAccess(LookupError):
    """Immich's answer for what is gone or another user's: 400 "Not found or no <permission> access"."""


def _thumbhash(preview: bytes) -> str:
    """Stands for Immich's thumbhash of the preview: it changes exactly when the preview does."""
    return base64.b64encode(hashlib.sha1(preview).digest()[:16]).decode()


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
        self.person_owner: dict[str, str] = {}  # person id -> user id (not part of Immich's DTO)
        self.processed: dict[str, set[str]] = {}  # queue -> assets its jobs finished (Immich keeps no count)
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

    def add_asset(self, photo: Path, kind: str = "IMAGE", name: str | None = None, *, owner: str | None = None,
                  visibility: str = "timeline", preview: bool = True) -> str:
        """An uploaded asset; `preview=False`: one Immich has not made (or cannot make) a preview of."""
        data, width, height = preview_jpeg(photo)
        asset = sample(self.spec, {"$ref": "#/components/schemas/AssetResponseDto"})
        asset_id = str(uuid.uuid4())
        stamp = now_iso()
        asset.update(
            id=asset_id, type=kind, ownerId=owner or self.admin_id, visibility=visibility,
            originalFileName=name or photo.name, originalPath=f"/data/upload/{photo.name}",
            checksum=base64.b64encode(hashlib.sha1(photo.read_bytes()).digest()).decode(),
            createdAt=stamp, updatedAt=stamp, fileCreatedAt=stamp, fileModifiedAt=stamp, localDateTime=stamp,
            width=width, height=height, thumbhash=_thumbhash(data) if preview else None,
            duration=4000 if kind == "VIDEO" else None,
        )
        self.assets[asset_id] = asset
        if preview:
            self.previews[asset_id] = data
        return asset_id

    def replace_asset_photo(self, asset_id: str, photo: Path) -> None:
        """The asset's file changed (a new original): new preview, checksum, thumbhash and `updatedAt`."""
        data, width, height = preview_jpeg(photo)
        self._touch(asset_id, checksum=base64.b64encode(hashlib.sha1(photo.read_bytes()).digest()).decode(),
                    width=width, height=height, thumbhash=_thumbhash(data))
        self.previews[asset_id] = data

    def edit_asset_photo(self, asset_id: str, photo: Path) -> None:
        """An edit in Immich's editor (crop, rotate): a new preview and thumbhash, the same original checksum."""
        data, width, height = preview_jpeg(photo)
        self._touch(asset_id, width=width, height=height, thumbhash=_thumbhash(data), isEdited=True)
        self.previews[asset_id] = data

    def _touch(self, asset_id: str, **changes: Any) -> None:
        """Any change of an asset bumps its `updatedAt`, as Immich does (favourite, description, trash, edit)."""
        time.sleep(0.002)  # distinct millisecond timestamps
        self.assets[asset_id].update(changes, updatedAt=now_iso())

    def add_person(self, name: str = "", hidden: bool = False, owner: str | None = None) -> str:
        person = sample(self.spec, {"$ref": "#/components/schemas/PersonResponseDto"})
        person.update(id=str(uuid.uuid4()), name=name, isHidden=hidden, thumbnailPath="", updatedAt=now_iso())
        self.people[person["id"]] = person
        self.person_owner[person["id"]] = owner or self.admin_id
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
            "runQueueCommandLegacy": self._run_job, "searchPerson": self._search_person,
            "updateAsset": self._update_asset, "createFace": self._create_face, "deleteFace": self._delete_face,
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
        for method, pattern, operation, handler in self._routes:  # noqa: B007 - the match is used after the loop
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
            self.spec_errors.append(f"request {request.method} {path}: {e}")
            return self._answer(operation, path, 400, {"message": "Validation failed", "errors": _validation_errors(e),
                                                       "statusCode": 400, "error": "Bad Request"})
        fault = next((f for f in self.faults if f.matches(operation, request.method)), None)
        if fault is not None and not fault.after and not fault.drop:
            return self._answer(operation, path, fault.status, {"message": "Internal server error", "statusCode": fault.status})
        with self.lock:
            try:
                status, payload = handler(key=key, query=dict(request.query_params),
                                          body=json.loads(body) if body else None, **match.groupdict())
            except NoAccess as e:
                return self._answer(operation, path, 400, {"message": f"Not found or no {e} access", "statusCode": 400,
                                                           "error": "Bad Request"})
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

    def _owned_asset(self, key: Key, asset_id: str, permission: str = "asset.read") -> dict[str, Any]:
        asset = self.assets.get(asset_id)
        if asset is None or asset["ownerId"] != key.user_id:
            raise NoAccess(permission)
        return asset

    def _search(self, key: Key, body: dict[str, Any], **_: Any) -> tuple[int, Any]:
        assets = sorted((a for a in self.assets.values() if a["ownerId"] == key.user_id),
                        key=lambda a: (a["fileCreatedAt"], a["id"]), reverse=body.get("order", "desc") == "desc")
        if "visibility" in body:  # without it Immich returns every visibility, hidden ones too
            assets = [a for a in assets if a["visibility"] == body["visibility"]]
        if not body.get("withDeleted"):
            assets = [a for a in assets if not a["isTrashed"]]
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

    def _thumbnail(self, key: Key, id: str, **_: Any) -> tuple[int, Any]:
        self._owned_asset(key, id, "asset.view")
        if id not in self.previews:
            return 404, {"message": "Asset media not found", "statusCode": 404, "error": "Not Found"}
        return 200, self.previews[id]

    def _update_asset(self, key: Key, id: str, body: dict[str, Any], **_: Any) -> tuple[int, Any]:
        asset = self._owned_asset(key, id, "asset.update")
        changes = {k: body[k] for k in ("isFavorite", "visibility") if k in body}
        if "description" in body:
            asset.setdefault("exifInfo", {})["description"] = body["description"]
        self._touch(id, **changes)
        return 200, copy.deepcopy(asset)

    def _person_dto(self, person_id: str | None) -> dict[str, Any] | None:
        return copy.deepcopy(self.people[person_id]) if person_id else None

    def _get_faces(self, key: Key, query: dict[str, str], **_: Any) -> tuple[int, Any]:
        self._owned_asset(key, query["id"])
        faces = [f for f in self.faces.values() if f["assetId"] == query["id"]]
        return 200, [{**{k: v for k, v in f.items() if k not in ("assetId", "personId")},
                      "person": self._person_dto(f["personId"])} for f in faces]

    def _create_face(self, key: Key, body: dict[str, Any], **_: Any) -> tuple[int, Any]:
        """As Immich: a "manual" face, its box rounded from x/y/width/height; answers nothing."""
        self._owned_asset(key, body["assetId"])
        if body["personId"] not in self.people:
            raise LookupError(body["personId"])
        face_id = str(uuid.uuid4())
        self.faces[face_id] = {
            "id": face_id, "assetId": body["assetId"], "personId": body["personId"], "sourceType": "manual",
            "boundingBoxX1": body["x"], "boundingBoxY1": body["y"], "boundingBoxX2": body["x"] + body["width"],
            "boundingBoxY2": body["y"] + body["height"], "imageWidth": body["imageWidth"], "imageHeight": body["imageHeight"],
        }
        return 201, None

    def _delete_face(self, id: str, body: dict[str, Any], **_: Any) -> tuple[int, Any]:
        if id not in self.faces:
            raise LookupError(id)
        del self.faces[id]
        return 204, None

    def _reassign(self, id: str, body: dict[str, Any], **_: Any) -> tuple[int, Any]:
        if id not in self.people or body["id"] not in self.faces:
            raise LookupError(id)
        self.faces[body["id"]]["personId"] = id
        return 200, self._person_dto(id)

    def _listed(self, person_id: str, user_id: str) -> bool:
        """Immich's `getAllForUser`: the user's person with a face on a timeline asset (not trashed) and a
        name or at least MINIMUM_FACES such faces."""
        if self.person_owner.get(person_id) != user_id:
            return False
        faces = sum(1 for f in self.faces.values() if f["personId"] == person_id
                    and self.assets[f["assetId"]]["visibility"] == "timeline" and not self.assets[f["assetId"]]["isTrashed"])
        return faces > 0 and (bool(self.people[person_id]["name"]) or faces >= MINIMUM_FACES)

    def _get_people(self, key: Key, query: dict[str, str], **_: Any) -> tuple[int, Any]:
        with_hidden = query.get("withHidden") == "true"
        people = [p for p in self.people.values()
                  if (with_hidden or not p["isHidden"]) and self._listed(p["id"], key.user_id)]
        page, size = int(query.get("page", 1)), int(query.get("size", 500))
        chunk = people[(page - 1) * size: page * size]
        return 200, {"people": copy.deepcopy(chunk), "total": len(people), "hasNextPage": page * size < len(people),
                     "hidden": sum(1 for p in self.people.values() if p["isHidden"])}

    def _get_person(self, key: Key, id: str, **_: Any) -> tuple[int, Any]:
        if id not in self.people or self.person_owner.get(id) != key.user_id:
            raise NoAccess("person.read")
        return 200, self._person_dto(id)

    def _search_person(self, key: Key, query: dict[str, str], **_: Any) -> tuple[int, Any]:
        """Immich matches names by trigram word similarity; a case-insensitive substring match stands for it
        (it finds every person of that name, with faces or not, as Immich does)."""
        wanted = query["name"].casefold()
        with_hidden = query.get("withHidden") == "true"
        found = [copy.deepcopy(p) for pid, p in self.people.items()
                 if self.person_owner.get(pid) == key.user_id and wanted in p["name"].casefold()
                 and (with_hidden or not p["isHidden"])]
        return 200, found

    def _create_person(self, key: Key, body: dict[str, Any], **_: Any) -> tuple[int, Any]:
        person_id = self.add_person(body.get("name", ""), body.get("isHidden", False), owner=key.user_id)
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
        done = self.processed.setdefault(name, set())
        if body["command"] == "start":
            if body.get("force"):
                done.clear()
            stats["waiting"] += sum(1 for a in self.assets if a not in done)
        elif body["command"] == "empty":
            stats["waiting"] = 0
        self.queues[name]["isPaused"] = body["command"] == "pause" or (self.queues[name]["isPaused"] and body["command"] != "resume")
        return 200, {"jobCounts": copy.deepcopy(stats),
                     "queueStatus": {"isActive": stats["waiting"] > 0, "isPaused": self.queues[name]["isPaused"]}}

    def start_ml_workers(self, poll: float = 0.05) -> Callable[[], None]:
        """Immich's smartSearch and faceDetection workers: each waiting job posts its asset's preview, as
        Immich does (multipart, `entries` as its config says), to the first ML URL that answers `/ping`,
        and keeps the answer in `ml_answers[queue][asset id]`; a failed request leaves the job done
        uncounted and the asset still lacking the result (a later queueing of missing assets takes it
        again), as Immich's does. Returns a function that stops them."""
        import httpx

        self.ml_answers: dict[str, dict[str, Any]] = {"smartSearch": {}, "faceDetection": {}}
        stop = threading.Event()

        def entries(name: str) -> dict[str, Any]:
            ml = self.config["machineLearning"]
            if name == "smartSearch":
                return {"clip": {"visual": {"modelName": ml["clip"]["modelName"]}}}
            face = ml["facialRecognition"]
            return {"facial-recognition": {"detection": {"modelName": face["modelName"], "options": {"minScore": face["minScore"]}},
                                           "recognition": {"modelName": face["modelName"]}}}

        def healthy_url(http: httpx.Client) -> str | None:
            for url in self.config["machineLearning"]["urls"]:
                try:
                    if http.get(f"{url}/ping", timeout=2).status_code == 200:
                        return url
                except httpx.HTTPError:
                    continue
            return None

        def work() -> None:
            with httpx.Client(timeout=60) as http:
                while not stop.is_set():
                    busy = False
                    for name in ("smartSearch", "faceDetection"):
                        stats = self.queues[name]["statistics"]
                        todo = [a for a in self.assets if a not in self.processed.setdefault(name, set())]
                        if stats["waiting"] <= 0:
                            continue
                        busy = True
                        stats["waiting"] -= 1
                        if not todo:  # a job for an asset that has its answer by now: done, nothing to post
                            continue
                        stats["active"] += 1
                        asset = todo[0]
                        url = healthy_url(http)
                        try:
                            if url is not None:
                                r = http.post(f"{url}/predict", data={"entries": json.dumps(entries(name))},
                                              files={"image": ("blob", self.previews[asset], "application/octet-stream")})
                                if r.status_code == 200:
                                    self.ml_answers[name][asset] = r.json()
                                    self.processed[name].add(asset)  # a failed job leaves the asset without it
                        except httpx.HTTPError:
                            pass
                        finally:
                            stats["active"] -= 1
                    if not busy:
                        stop.wait(poll)

        thread = threading.Thread(target=work, daemon=True, name="fake-immich-ml-workers")
        thread.start()

        def stop_workers() -> None:
            stop.set()
            thread.join(timeout=30)
        return stop_workers

    def process_jobs(self, name: str, count: int) -> None:
        """Immich's workers finish `count` waiting jobs of a queue. As in Immich 3.1, finished jobs are
        removed (`completed` stays 0) and a job whose handler throws is not counted in `failed` either."""
        stats = self.queues[name]["statistics"]
        done = min(count, stats["waiting"])
        stats["waiting"] -= done
        todo = [a for a in self.assets if a not in self.processed.setdefault(name, set())]
        self.processed[name].update(todo[:done])


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
