"""A real Immich 3.1 server for the real-server suite (`tests/test_real_immich.py`) and the benchmarks.

Either the server named by `IMMICH_TEST_URL` + `IMMICH_TEST_API_KEY` (an admin's key), or the kit in
`../shared/immich-kit` (built once with its `server-build.sh`; see its README): started here when it is
built but not running, and stopped again by `close()` (by the PIDs the kit records) only if started here.
`KitUnavailable` says why neither can be had, for a clear skip.

Test data only: nothing here is part of the product. Each test module makes its own user (`new_user`), so
modules never see each other's assets or people; Immich's ML queues and config are global, so `ml_urls`
restores what it changed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Iterator

import httpx

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("IMMICH_ML_SHARED", HERE.parent.parent / "shared"))
KIT = SHARED / "immich-kit"
KIT_WORK = Path(os.environ.get("IMMICH_KIT_WORK", "/var/tmp/immich-kit"))
KIT_URL = "http://127.0.0.1:2283"
ADMIN = {"email": "admin@example.com", "password": "admin-password", "name": "Admin"}
CREDENTIALS = KIT_WORK / "server" / "test-admin.json"  # the admin key this module made, reused by later runs


class KitUnavailable(Exception):
    """No real Immich server can be had here; the message says what to do."""


@dataclass
class User:
    id: str
    email: str
    key: str


def _ping(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/server/ping", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class RealImmich:
    """A running Immich: admin API calls, users, uploads, jobs. `close()` stops what `start()` started."""

    def __init__(self, url: str, admin_key: str, started: bool = False) -> None:
        self.url = url.rstrip("/")
        self.admin_key = admin_key
        self.started = started
        self.http = httpx.Client(base_url=f"{self.url}/api", timeout=60)

    # -- getting one -------------------------------------------------------------------------------

    @classmethod
    def get(cls) -> RealImmich:
        url, key = os.environ.get("IMMICH_TEST_URL"), os.environ.get("IMMICH_TEST_API_KEY")
        if url:
            if not key:
                raise KitUnavailable("IMMICH_TEST_URL is set but IMMICH_TEST_API_KEY (an admin's key) is not")
            if not _ping(url):
                raise KitUnavailable(f"IMMICH_TEST_URL {url} does not answer /api/server/ping")
            return cls(url, key)
        started = False
        if not _ping(KIT_URL):
            if not (KIT_WORK / "server" / ".done-pnpm-build").exists() or not (KIT / "server-start.sh").exists():
                raise KitUnavailable(
                    f"no real Immich server: set IMMICH_TEST_URL + IMMICH_TEST_API_KEY, or build the kit once "
                    f"({KIT}/server-build.sh, see its README; work dir {KIT_WORK})"
                )
            proc = subprocess.run([str(KIT / "server-start.sh")], capture_output=True, text=True, timeout=300)
            if proc.returncode != 0 or not _ping(KIT_URL):
                raise KitUnavailable(f"the kit's server-start.sh failed: {(proc.stdout + proc.stderr)[-500:]}")
            started = True
        immich = cls(KIT_URL, cls._kit_admin_key(), started=started)
        immich.turn_off_version_check()
        return immich

    @staticmethod
    def _kit_admin_key() -> str:
        http = httpx.Client(base_url=f"{KIT_URL}/api", timeout=30)
        if CREDENTIALS.is_file():
            key = json.loads(CREDENTIALS.read_text())["key"]
            if http.get("/users/me", headers={"x-api-key": key}).status_code == 200:
                return key
        if not http.get("/server/config").json().get("isInitialized"):
            http.post("/auth/admin-sign-up", json=ADMIN).raise_for_status()
        login = http.post("/auth/login", json={"email": ADMIN["email"], "password": ADMIN["password"]})
        if login.status_code != 201:
            raise KitUnavailable(
                f"the kit's Immich has an admin this suite does not know ({login.status_code}): set "
                "IMMICH_TEST_URL and IMMICH_TEST_API_KEY, or reset the kit (FORCE=1 server-build.sh)"
            )
        token = login.json()["accessToken"]
        made = http.post("/api-keys", headers={"authorization": f"Bearer {token}"},
                         json={"name": "immich-ml-desktop tests", "permissions": ["all"]})
        made.raise_for_status()
        key = made.json()["secret"]
        CREDENTIALS.write_text(json.dumps({"key": key}))
        return key

    def close(self) -> None:
        self.http.close()
        if self.started:
            subprocess.run([str(KIT / "server-stop.sh")], capture_output=True, timeout=120)
            self.started = False

    # -- plain API calls --------------------------------------------------------------------------

    def api(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, path, headers={"x-api-key": key or self.admin_key}, **kwargs)

    def json(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> Any:
        response = self.api(method, path, key, **kwargs)
        if response.status_code >= 400:
            raise AssertionError(f"{method} {path} -> {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None

    def turn_off_version_check(self) -> None:
        """Nothing may leave loopback: Immich's version check would call GitHub."""
        config = self.json("GET", "/system-config")
        if config["newVersionCheck"]["enabled"]:
            config["newVersionCheck"]["enabled"] = False
            self.json("PUT", "/system-config", json=config)

    # -- users and assets -------------------------------------------------------------------------

    def new_user(self, name: str, permissions: Iterable[str] = ("all",)) -> User:
        """A fresh user (so a test module sees only its own assets and people) and an API key of theirs."""
        email = f"{name.lower().replace(' ', '-')}-{uuid.uuid4().hex[:8]}@example.com"
        password = uuid.uuid4().hex
        user = self.json("POST", "/admin/users", json={"email": email, "password": password, "name": name,
                                                       "shouldChangePassword": False})
        # A client of its own: the login's session cookie must not stick to the admin's client.
        with httpx.Client(base_url=f"{self.url}/api", timeout=60) as http:
            token = http.post("/auth/login", json={"email": email, "password": password}).json()["accessToken"]
            made = http.post("/api-keys", headers={"authorization": f"Bearer {token}"},
                             json={"name": "tests", "permissions": list(permissions)})
        made.raise_for_status()
        return User(user["id"], email, made.json()["secret"])

    def new_key(self, user_key: str, permissions: Iterable[str]) -> str:
        """Another key of the same user (`user_key`'s) with only these permissions."""
        made = self.api("POST", "/api-keys", user_key, json={"name": "limited", "permissions": list(permissions)})
        made.raise_for_status()
        return made.json()["secret"]

    def upload(self, key: str, photo: Path) -> str:
        """Upload a photo as the Immich app would; returns the asset id (an existing one for a duplicate)."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(photo.stat().st_mtime))
        with photo.open("rb") as f:
            response = self.api(
                "POST", "/assets", key,
                data={"deviceAssetId": f"{photo.name}-{hashlib.sha1(photo.read_bytes()).hexdigest()[:12]}",
                      "deviceId": "immich-ml-desktop-tests", "fileCreatedAt": stamp, "fileModifiedAt": stamp},
                files={"assetData": (photo.name, f, "application/octet-stream")},
            )
        if response.status_code not in (200, 201):
            raise AssertionError(f"upload of {photo} -> {response.status_code}: {response.text[:300]}")
        return response.json()["id"]

    def asset(self, key: str, asset_id: str) -> dict[str, Any]:
        return self.json("GET", f"/assets/{asset_id}", key)

    def wait_for_previews(self, key: str, asset_ids: Iterable[str], timeout: float = 180) -> dict[str, bool]:
        """Wait until Immich has made each asset's preview (its thumbhash is set) or gave up on it
        (thumbnail queue empty); asset id -> whether it has a preview."""
        ids = list(asset_ids)
        deadline = time.monotonic() + timeout
        while True:
            have = {i: bool(self.asset(key, i).get("thumbhash")) for i in ids}
            if all(have.values()):
                return have
            if self.queues_idle(["metadataExtraction", "thumbnailGeneration"]) or time.monotonic() > deadline:
                time.sleep(1)  # one more look: the last job may have just finished
                return {i: bool(self.asset(key, i).get("thumbhash")) for i in ids}
            time.sleep(1)

    # -- ML config and jobs -----------------------------------------------------------------------

    def queues(self) -> dict[str, dict[str, Any]]:
        return {q["name"]: q for q in self.json("GET", "/queues")}

    def queues_idle(self, names: Iterable[str]) -> bool:
        queues = self.queues()
        return all(queues[n]["statistics"]["waiting"] + queues[n]["statistics"]["active"]
                   + queues[n]["statistics"].get("delayed", 0) == 0 for n in names)

    def wait_for_queues(self, names: Iterable[str], timeout: float = 600, settle: float = 2.0) -> float:
        """Wait until the queues are empty (and stay so for `settle` s: a finished job may queue the next);
        returns the seconds waited."""
        names = list(names)
        start = time.monotonic()
        idle_since: float | None = None
        while time.monotonic() - start < timeout:
            if self.queues_idle(names):
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= settle:
                    return time.monotonic() - start
            else:
                idle_since = None
            time.sleep(0.5)
        raise AssertionError(f"Immich's queues {names} were still busy after {timeout:.0f} s: {self.queues()}")

    def run_job(self, name: str, force: bool = False) -> None:
        self.json("PUT", f"/jobs/{name}", json={"command": "start", "force": force})

    @contextmanager
    def ml_config(self, **changes: Any) -> Iterator[dict[str, Any]]:
        """Change `machineLearning` (e.g. `urls=[...]`) for the block, then put the whole section back."""
        config = self.json("GET", "/system-config")
        before = json.loads(json.dumps(config["machineLearning"]))
        config["machineLearning"].update(changes)
        self.json("PUT", "/system-config", json=config)
        try:
            yield config["machineLearning"]
        finally:
            config = self.json("GET", "/system-config")
            config["machineLearning"] = before
            self.json("PUT", "/system-config", json=config)


def kit_sql(query: str) -> list[list[str]]:
    """Rows of a query on the kit's own Postgres (what Immich stored, e.g. `smart_search` embeddings), for
    what the API does not show; raises KitUnavailable where the server is not the kit's."""
    if os.environ.get("IMMICH_TEST_URL"):
        raise KitUnavailable("Immich's database is only known for the kit's server")
    proc = subprocess.run(["psql", "-h", "127.0.0.1", "-p", os.environ.get("PG_PORT", "55432"), "-U", "postgres",
                           "-d", "immich", "-AtF", "\t", "-c", query], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PGPASSWORD": "postgres"})
    if proc.returncode != 0:
        raise AssertionError(f"psql: {proc.stderr[-500:]}")
    return [line.split("\t") for line in proc.stdout.splitlines() if line]


def sha1_b64(path: Path) -> str:
    return base64.b64encode(hashlib.sha1(path.read_bytes()).digest()).decode()
