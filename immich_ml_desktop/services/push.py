"""Push reviewed people to Immich: a `PushPlan` built from the local face groups, shown as a dry run, applied
step by step with progress, and revertible from its undo log.

The plan is a JSON file (next to the library, in `<library>.pushes/`) with an append-only journal beside
it that records every step as it starts and ends, so an interrupted push can be resumed or reverted and
no step is applied twice. Each local face is matched to
the Immich face of the same asset by box overlap (both come from the same preview).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterable

from immich_ml_desktop.errors import ImmichError, ImmichPermissionError, InvalidInputError
from immich_ml_desktop.immich.client import ImmichClient, not_visible

log = logging.getLogger(__name__)

MATCH_IOU = 0.5        # same preview, same detector family: a real match overlaps far more than this
MERGE_MIN_SHARE = 0.5  # an Immich person is merged when the group holds at least this share of its photos
UNDO_PERSON_NAME = "immich-ml-desktop undo"  # a throwaway person used to unassign faces again
TEMP_NAME_PREFIX = "immich-ml-desktop push"  # the name an unnamed new person has until it has its faces

Progress = Callable[[int, int, str], None]  # (done, total, what)


@dataclass(frozen=True)
class LocalFace:
    """One face of a reviewed group: the Immich asset it is on and its box in that asset's preview."""

    asset_id: str
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in preview pixels
    image_size: tuple[int, int] | None = None  # (width, height) of the preview the box refers to
    found_by: str = "detector"  # Immich's own detection finds it too; another pass: Immich never does


@dataclass
class ReviewedPerson:
    """A face group after review: its name, whether it is hidden, its faces."""

    name: str
    faces: list[LocalFace]
    hidden: bool = False
    label: str = ""  # how the app shows the group (for the plan's text)


def reviewed_people(people: Any, include_unreviewed: bool = False) -> list[ReviewedPerson]:
    """The face groups of a `library.people.People` the user reviewed (named, hidden, merged, moved into:
    `confirmed`), or every group with `include_unreviewed` but the suggested pairs (two faces the grouping
    put together and nobody confirmed); only faces on Immich assets count."""
    found = []
    for group in people.groups("all") + people.groups("hidden"):
        if not (group.confirmed or (include_unreviewed and not group.suggested)):
            continue
        faces = []
        for face in people.group(group.id).faces:
            if face.source != "immich":
                continue
            asset = people.store.asset(face.asset_id)
            size = (asset.width, asset.height) if asset is not None and asset.width else None
            faces.append(LocalFace(face.asset_key, tuple(face.box), size, face.found_by))
        if faces:
            found.append(ReviewedPerson(group.name or "", faces, hidden=group.hidden, label=f"group {group.id}"))
    return found


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def immich_box(face: dict[str, Any]) -> tuple[float, float, float, float]:
    return (face["boundingBoxX1"], face["boundingBoxY1"], face["boundingBoxX2"], face["boundingBoxY2"])


def scaled_box(local: LocalFace, immich_face: dict[str, Any]) -> tuple[float, float, float, float]:
    """The local box in the pixels of Immich's preview (they differ only if the preview size differs)."""
    if not local.image_size or not local.image_size[0] or not local.image_size[1]:
        return local.box
    sx = immich_face["imageWidth"] / local.image_size[0]
    sy = immich_face["imageHeight"] / local.image_size[1]
    x1, y1, x2, y2 = local.box
    return (x1 * sx, y1 * sy, x2 * sx, y2 * sy)


def match_faces(local: list[LocalFace], remote: list[dict[str, Any]], threshold: float = MATCH_IOU) -> dict[int, dict[str, Any]]:
    """Local face index -> Immich face, one to one, greedily by highest overlap above `threshold`."""
    pairs = sorted(
        ((iou(scaled_box(lf, rf), immich_box(rf)), i, j) for i, lf in enumerate(local) for j, rf in enumerate(remote)),
        reverse=True,
    )
    matched: dict[int, dict[str, Any]] = {}
    used: set[int] = set()
    for overlap, i, j in pairs:
        if overlap <= threshold:
            break
        if i not in matched and j not in used:
            matched[i] = remote[j]
            used.add(j)
    return matched


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def pushes_dir(library_path: Path | str) -> Path:
    """Where the plans and undo logs of a library live: `<library>.pushes/` beside the library file."""
    library_path = Path(library_path)
    return library_path.with_name(library_path.stem + ".pushes")


@dataclass
class PushPlan:
    """The steps of a push and, once applied, its undo log. `state`: planned, applying, applied,
    reverting, reverted. Step `status`: pending, started, done, undone, skipped."""

    id: str
    server: str
    created_at: float
    steps: list[dict[str, Any]]
    people_before: list[str]
    summary: list[dict[str, Any]]
    state: str = "planned"
    refs: dict[str, str] = field(default_factory=dict)  # "new:N" -> the Immich id it got
    path: Path | None = None

    # -- persistence ----------------------------------------------------------------------------

    @property
    def journal_path(self) -> Path:
        if self.path is None:
            raise InvalidInputError("Save the push plan before applying it, so that it can be undone.")
        return self.path.with_suffix(".journal")

    def save(self, path: Path | str) -> Path:
        """Write the plan (once) and start its journal; everything after goes through `record`."""
        self.path = Path(path)
        data = {k: v for k, v in self.__dict__.items() if k != "path"}
        _atomic_write(self.path, json.dumps(data, indent=1))
        self.journal_path.write_text("", encoding="utf-8")
        return self.path

    def _append(self, entry: dict[str, Any]) -> None:
        with open(self.journal_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def record(self, step: dict[str, Any], **changes: Any) -> None:
        """Change a step (its status, what undo needs) and journal the change before going on."""
        self._append({"step": step["n"], **changes})
        step.update(changes)

    def set_ref(self, key: str, person_id: str) -> None:
        self._append({"ref": key, "id": person_id})
        self.refs[key] = person_id

    def set_state(self, state: str) -> None:
        self._append({"state": state})
        self.state = state

    @classmethod
    def load(cls, path: Path | str) -> PushPlan:
        """The plan with its journal replayed (a line cut short by a crash is ignored)."""
        path = Path(path)
        try:
            plan = cls(**json.loads(path.read_text(encoding="utf-8")), path=path)
            lines = plan.journal_path.read_text(encoding="utf-8").splitlines() if plan.journal_path.exists() else []
        except (OSError, ValueError, TypeError) as e:
            raise InvalidInputError(f"Cannot read the push plan {path}: {e}.") from None
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                break
            if "step" in entry:
                plan.steps[entry.pop("step")].update(entry)
            elif "ref" in entry:
                plan.refs[entry["ref"]] = entry["id"]
            elif "state" in entry:
                plan.state = entry["state"]
        return plan

    @classmethod
    def latest(cls, folder: Path) -> PushPlan | None:
        """The plan made last (by its creation time: two plans of the same second sort by their random id)."""
        files = list(folder.glob("push-*.json")) if folder.is_dir() else []
        return max((cls.load(f) for f in files), key=lambda plan: plan.created_at, default=None)

    # -- reading --------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        return dict(Counter(s["kind"] for s in self.steps))

    def describe(self) -> list[str]:
        """The plan in words, one line per person, then totals."""
        lines = []
        for p in self.summary:
            if not p["matched"] and not p.get("add_faces"):
                where = (f"{p['not_visible']} on assets this API key cannot see (deleted in Immich, or another user's)"
                         if p.get("not_visible") == p["faces"] else
                         "Immich has no face there yet: run its Face Detection job (or `immich send`), then push again")
                lines.append(f"{p['name'] or '(unnamed)'}: nothing to do; none of its {p['faces']} faces is in Immich ({where})")
                continue
            if p["create"]:
                action = "create"
            else:
                action = "use existing " + (f"'{p['target_name']}'" if p["target_name"] else f"unnamed person {str(p['target'])[:8]}")
            extra = [f"{p['reassign']} faces to assign"]
            if p.get("add_faces"):
                extra.append(f"{p['add_faces']} faces Immich did not find to add")
            if p["merge"]:
                merged = len(p["merge"])
                names = ", ".join(n or "unnamed" for n in p["merge"])
                extra.append(f"merge {merged} Immich {'person' if merged == 1 else 'people'} ({names})")
            if p["rename"]:
                extra.append("rename")
            if p["hide"]:
                extra.append("hide")
            if p["unmatched"]:
                extra.append(f"{p['unmatched']} faces not found in Immich")
            if p.get("not_visible"):
                extra.append(f"{p['not_visible']} faces on assets this API key cannot see (deleted in Immich, "
                             "or another user's)")
            lines.append(f"{p['name'] or '(unnamed)'}: {action}; " + ", ".join(extra))
        counts = self.counts()
        lines.append("steps: " + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none (Immich already agrees)"))
        return lines

    def progress(self) -> tuple[int, int]:
        """(steps finished, steps): applied ones, or undone ones once reverting."""
        finished = ("undone", "skipped") if self.state in ("reverting", "reverted") else ("done", "skipped")
        return sum(1 for s in self.steps if s["status"] in finished), len(self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "server": self.server, "state": self.state, "counts": self.counts(),
                "people": self.summary, "steps": self.steps, "file": str(self.path) if self.path else None}


def build_plan(client: ImmichClient, people: Iterable[ReviewedPerson], *, match_iou: float = MATCH_IOU,
               merge_min_share: float = MERGE_MIN_SHARE) -> PushPlan:
    """Read Immich's faces and people (nothing is written) and work out the steps of the push.

    Per reviewed group: its person is the Immich person holding most of its faces (else one with its
    name, else a new one). Another Immich person holding some of its faces is merged into it when the
    group covers at least `merge_min_share` of that person's photos (Immich split the person); otherwise
    only the group's faces are moved, so a person Immich mixed up is not merged wholesale."""
    people = sorted((p for p in people if p.faces), key=lambda p: -len(p.faces))
    plan_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
    immich_people = ImmichPeople(client)
    remote_faces: dict[str, list[dict[str, Any]] | None] = {}
    steps: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    claimed: set[str] = set()  # Immich people already chosen as some group's person, or merged

    for index, person in enumerate(people):
        matched, missed, not_visible = _match_group(client, person, remote_faces, match_iou)
        # Faces only the library's own passes found (a face filling the frame: the padded pass), which Immich's
        # detector never finds, are added to Immich as the group's, where the preview's size places them. A
        # face Immich's detection would find (`detector`) and Immich lacks waits for Immich's face detection.
        addable = [f for f in missed if f.found_by != "detector" and f.image_size and f.image_size[0] and f.image_size[1]]
        unmatched = len(missed)
        for face in matched:
            if face["person"]:
                immich_people.saw(face["person"])
        owners = Counter(f["person"]["id"] for f in matched if f["person"] and f["person"]["id"] not in claimed)
        target = _target(person, owners, immich_people, claimed)
        ref = target or f"new:{index}"
        entry: dict[str, Any] = {
            "name": person.name, "label": person.label, "faces": len(person.faces), "matched": len(matched),
            "unmatched": unmatched - len(addable), "not_visible": not_visible, "add_faces": len(addable),
            "create": target is None and bool(matched or addable),
            "target": target, "target_name": immich_people.get(target)["name"] if target else person.name,
            "merge": [], "reassign": 0, "rename": False, "hide": False,
        }
        summary.append(entry)
        if not matched and not addable:
            continue  # nothing of this group is in Immich: do not create an empty person
        claimed.add(ref)
        if target is None:
            step = {"kind": "create_person", "ref": ref, "name": person.name, "hidden": person.hidden}
            if not person.name:
                # An empty, unnamed person cannot be found again after a crash (Immich lists no empty person,
                # and search needs a name): it is made under a name of this push's, cleared once it has faces.
                step["temp_name"] = f"{TEMP_NAME_PREFIX} {plan_id} {ref}"
            steps.append(step)
            entry["hide"] = person.hidden
        else:
            changes, old = _changes(person, immich_people.get(target))
            if changes:
                steps.append({"kind": "update_person", "person": ref, "set": changes, "old": old})
                entry["rename"], entry["hide"] = "name" in changes, "isHidden" in changes
        merged = [pid for pid in owners if pid != target and _share(
            client, pid, {f["assetId"] for f in matched if f["person"] and f["person"]["id"] == pid}) >= merge_min_share]
        for pid in merged:
            source = immich_people.get(pid)
            steps.append({"kind": "merge_people", "into": ref, "name": person.name, "source": pid,
                          "source_name": source.get("name", ""), "source_hidden": bool(source.get("isHidden")),
                          "source_faces": None})
            entry["merge"].append(source.get("name", ""))
            claimed.add(pid)
        for face in matched:
            owner = face["person"]["id"] if face["person"] else None
            if owner is not None and (owner == target or owner in merged):
                continue
            steps.append({"kind": "reassign_face", "face": face["id"], "asset": face["assetId"], "to": ref,
                          "name": person.name, "from": owner})
            entry["reassign"] += 1
        for local in addable:
            steps.append({"kind": "create_face", "asset": local.asset_id, "person": ref, "name": person.name,
                          "box": [round(v) for v in local.box], "image": list(local.image_size or ()), "face": None})
        if target is None and not person.name:  # its faces are on it now: drop the push's own name
            steps.append({"kind": "update_person", "person": ref, "set": {"name": ""}, "old": {"name": step["temp_name"]}})

    if summary and all(e["not_visible"] == e["faces"] for e in summary):
        raise InvalidInputError(
            f"None of the {sum(e['faces'] for e in summary)} faces of these groups is on an asset this API key can "
            f"see in Immich at {client.base_url}: they were deleted there, or the library was indexed with "
            "another user's key. Push with the key of the user whose photos they are."
        )
    for number, step in enumerate(steps):
        step.update(n=number, status="pending")
    return PushPlan(id=plan_id, server=client.base_url, created_at=time.time(), steps=steps,
                    people_before=sorted(immich_people.listed), summary=summary)


class ImmichPeople:
    """Immich's people as a plan needs them. `GET /people` lists only people with a visible face that have a
    name or at least 3 faces, so a person a face belongs to is read on its own when not listed, and people
    are matched by name through Immich's person search (which finds empty people too)."""

    def __init__(self, client: ImmichClient) -> None:
        self.client = client
        self.listed = {p["id"]: p for p in client.people(with_hidden=True)}
        self._known = dict(self.listed)
        self._by_name: dict[str, list[dict[str, Any]]] = {}

    def saw(self, person: dict[str, Any]) -> None:
        """A person as a face's `person` field gave it (the same DTO `GET /people/{id}` answers)."""
        self._known.setdefault(person["id"], person)

    def get(self, person_id: str | None) -> dict[str, Any]:
        if person_id is None:
            return {}
        if person_id not in self._known:
            self._known[person_id] = self.client.person(person_id) or {"id": person_id, "name": "", "isHidden": False}
        return self._known[person_id]

    def named(self, name: str) -> list[dict[str, Any]]:
        """Every person whose name is exactly `name` (ignoring case), with faces or not."""
        key = name.casefold()
        if key not in self._by_name:
            found = self.client.search_people(name, with_hidden=True) if name.strip() else []
            self._by_name[key] = [p for p in found if p["name"].casefold() == key]
            for p in self._by_name[key]:
                self._known.setdefault(p["id"], p)
        return self._by_name[key]


def _match_group(client: ImmichClient, person: ReviewedPerson, cache: dict[str, list[dict[str, Any]] | None],
                 match_iou: float) -> tuple[list[dict[str, Any]], list[LocalFace], int]:
    """(the Immich faces matching the group's faces, each with its `assetId`; the group's faces that match
    none; how many are on assets this key cannot see: deleted, or another user's)."""
    by_asset: dict[str, list[LocalFace]] = {}
    for face in person.faces:
        by_asset.setdefault(face.asset_id, []).append(face)
    matched: list[dict[str, Any]] = []
    missed: list[LocalFace] = []
    not_seen = 0
    for asset_id, faces in by_asset.items():
        if asset_id not in cache:
            try:
                cache[asset_id] = client.faces(asset_id)
            except ImmichError as e:
                if not not_visible(e):
                    raise
                cache[asset_id] = None  # 400 "Not found or no asset.read access"
        remote = cache[asset_id]
        if remote is None:
            not_seen += len(faces)
            continue
        pairs = match_faces(faces, remote, match_iou)
        missed += [f for i, f in enumerate(faces) if i not in pairs]
        matched += [{**pairs[i], "assetId": asset_id} for i in sorted(pairs)]
    return matched, missed, not_seen


def _target(person: ReviewedPerson, owners: Counter[str], immich_people: ImmichPeople,
            claimed: set[str]) -> str | None:
    """The Immich person a group becomes: most of its faces' owner (its namesake on a tie), else a free
    person of the same name (with faces or not), else None (a new person)."""
    name = person.name.casefold()
    if owners:
        return max(owners, key=lambda pid: (owners[pid], immich_people.get(pid).get("name", "").casefold() == name))
    for p in immich_people.named(person.name):
        if p["id"] not in claimed:
            return str(p["id"])
    return None


def _changes(person: ReviewedPerson, current: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what to set on an existing Immich person, its old values for the undo)."""
    changes: dict[str, Any] = {}
    old: dict[str, Any] = {}
    if person.name and current.get("name") != person.name:
        changes["name"], old["name"] = person.name, current.get("name", "")
    if person.hidden and not current.get("isHidden"):  # never unhides what the user hid in Immich
        changes["isHidden"], old["isHidden"] = True, False
    return changes, old


def _share(client: ImmichClient, person_id: str, our_assets: set[str]) -> float:
    """The share of an Immich person's photos that a group's faces are on."""
    theirs = {a["id"] for a in client.search_assets(personIds=[person_id])}
    return len(theirs & our_assets) / len(theirs) if theirs else 1.0


class PushRun:
    """Applies or reverts a saved plan against its server, one recorded step at a time."""

    def __init__(self, client: ImmichClient, plan: PushPlan, progress: Progress | None = None) -> None:
        if plan.path is None:
            raise InvalidInputError("Save the push plan before applying it, so that it can be undone.")
        if plan.server.rstrip("/") != client.base_url.rstrip("/"):
            raise InvalidInputError(f"This push plan is for {plan.server}, not {client.base_url}.")
        self.client = client
        self.plan = plan
        self.progress = progress or (lambda done, total, what: None)

    def _check_key(self) -> None:
        """Refuse before the first write rather than stop halfway for want of a permission."""
        missing = self.client.check_key().missing
        lacks = list(missing.get("push people", []))
        if any(s["kind"] == "create_face" for s in self.plan.steps):
            lacks += [p for p in missing.get("add missed faces", []) if p not in lacks]
        if lacks:
            raise ImmichPermissionError(
                f"The API key lacks {', '.join(lacks)}, needed to push people; nothing was changed. "
                "Edit the key in Immich (Account Settings > API Keys) to grant them."
            )

    def _id(self, ref: str) -> str:
        """An Immich person id: a person this push created (`new:N`) by the id it got."""
        return self.plan.refs.get(ref, ref) if ref.startswith("new:") else ref

    # -- apply ----------------------------------------------------------------------------------

    def apply(self) -> PushPlan:
        """Run every step not yet done (resumes an interrupted push). Raises on the first failure."""
        if self.plan.state in ("reverting", "reverted"):
            raise InvalidInputError("This push was reverted; run `immich push` again to build a new plan.")
        self._check_key()
        self.plan.set_state("applying")
        total = len(self.plan.steps)
        for number, step in enumerate(self.plan.steps, 1):
            if step["status"] in ("done", "skipped"):
                continue
            resumed = step["status"] == "started"
            if not resumed:
                self.plan.record(step, status="started")
            getattr(self, "_do_" + step["kind"])(step, resumed)
            self.plan.record(step, status="done")
            self.progress(number, total, describe_step(step))
        self.plan.set_state("applied")
        return self.plan

    def _do_create_person(self, step: dict[str, Any], resumed: bool) -> None:
        if resumed and self._find_created(step):
            return
        name = step.get("temp_name") or step["name"]
        if not resumed or "existing" not in step:
            # Who already has that name, journaled before the create: after a crash, a person of that name
            # who is not among them (nor made by this push) is the one this step made.
            self.plan.record(step, existing=[p["id"] for p in self._namesakes(name)])
        person = self.client.create_person(name, step["hidden"])
        self.plan.set_ref(step["ref"], person["id"])

    def _namesakes(self, name: str) -> list[dict[str, Any]]:
        """Every person named exactly `name`, empty ones too (`GET /people` lists no empty person)."""
        return [p for p in self.client.search_people(name, with_hidden=True) if p["name"] == name] if name else []

    def _find_created(self, step: dict[str, Any]) -> bool:
        """After an interruption: did the create reach Immich? (a new person of that name) -> remember it."""
        if step["ref"] in self.plan.refs:
            return True
        if "existing" not in step:
            return False  # the create had not been sent: the step journals `existing` before it sends
        taken = set(step["existing"]) | set(self.plan.refs.values()) | set(self.plan.people_before)
        for p in self._namesakes(step.get("temp_name") or step["name"]):
            if p["id"] not in taken:
                self.plan.set_ref(step["ref"], p["id"])
                return True
        return False

    def _do_update_person(self, step: dict[str, Any], resumed: bool) -> None:
        self._update(self._id(step["person"]), step["set"])

    def _update(self, person_id: str | None, values: dict[str, Any]) -> None:
        result = self.client.update_people([{"id": person_id, **values}])
        if result and not result[0].get("success"):
            raise ImmichError(f"Immich did not update person {person_id}: {result[0].get('error', 'unknown')}.")

    def _do_merge_people(self, step: dict[str, Any], resumed: bool) -> None:
        if step["source_faces"] is None:  # remember who was in the person, to split it again on undo
            self.plan.record(step, source_faces=self._faces_of(step["source"]))
        if self.client.person(step["source"]) is None:
            return  # merged before the interruption
        result = self.client.merge_people(self._id(step["into"]), [step["source"]])
        if result and not result[0].get("success") and result[0].get("error") != "not_found":
            raise ImmichError(f"Immich did not merge person {step['source']}: {result[0].get('error', 'unknown')}.")

    def _faces_of(self, person_id: str) -> list[dict[str, str]]:
        faces = []
        for asset in self.client.search_assets(personIds=[person_id]):
            faces += [{"face": f["id"], "asset": asset["id"]} for f in self.client.faces(asset["id"])
                      if f["person"] and f["person"]["id"] == person_id]
        return faces

    def _do_reassign_face(self, step: dict[str, Any], resumed: bool) -> None:
        self.client.reassign_face(step["face"], self._id(step["to"]))

    def _do_create_face(self, step: dict[str, Any], resumed: bool) -> None:
        # After an interruption the face may be there already: Immich answers a create with nothing, so
        # the face is found again by its place (and person) on the asset, before and after the create.
        if resumed and self._find_face(step):
            return
        self.client.create_face(step["asset"], self._id(step["person"]), tuple(step["box"]), tuple(step["image"]))
        if not self._find_face(step):
            raise ImmichError(f"Immich took the face on asset {step['asset']} but does not show it.")

    def _find_face(self, step: dict[str, Any]) -> bool:
        person = self._id(step["person"])
        for face in self.client.faces(step["asset"]):
            if (face.get("sourceType") == "manual" and face["person"] and face["person"]["id"] == person
                    and all(abs(a - b) <= 1 for a, b in zip(immich_box(face), step["box"]))):
                self.plan.record(step, face=face["id"])
                return True
        return False

    # -- revert ---------------------------------------------------------------------------------

    def revert(self) -> PushPlan:
        """Undo the applied steps, newest first. A face the user moved in Immich since is left alone."""
        if self.plan.state == "planned":
            raise InvalidInputError("This push plan was never applied; there is nothing to undo.")
        self._check_key()
        self.plan.set_state("reverting")
        applied = [s for s in self.plan.steps if s["status"] in ("done", "started")]
        total = len(applied)
        faces_now: dict[str, dict[str, str | None]] = {}
        to_unassign: list[dict[str, Any]] = []
        for number, step in enumerate(reversed(applied), 1):
            kind = step["kind"]
            deferred = False
            if kind == "reassign_face":
                current = self._current_owner(step, faces_now)
                if current != self._id(step["to"]):
                    self.plan.record(step, status="skipped")  # changed in Immich since (or never reached it)
                elif step["from"] is None:
                    to_unassign.append(step)  # unassigned together, with their person's deletion or below
                    deferred = True
                else:
                    self.client.reassign_face(step["face"], self._restored(step["from"]))
            elif kind == "create_face":
                if step.get("face") or self._find_face(step):
                    try:
                        self.client.delete_face(step["face"])
                    except ImmichError as e:
                        if e.status not in (400, 404):  # gone already (deleted in Immich, or a retried delete)
                            raise
            elif kind == "merge_people":
                self._unmerge(step)
            elif kind == "update_person":
                if self.client.person(self._id(step["person"])) is not None:
                    self._update(self._id(step["person"]), step["old"])
            elif kind == "create_person":
                self._unassign([s for s in to_unassign if s["to"] != step["ref"]])
                to_unassign = [s for s in to_unassign if s["to"] == step["ref"]]
                person_id = self.plan.refs.get(step["ref"]) if self._find_created(step) else None
                if person_id and self.client.person(person_id) is not None:
                    self.client.delete_person(person_id)  # its faces become unassigned, as they were
                for s in to_unassign:
                    self.plan.record(s, status="undone")
                to_unassign = []
            if step["status"] != "skipped" and not deferred:
                self.plan.record(step, status="undone")
            self.progress(number, total, "undo " + describe_step(step))
        self._unassign(to_unassign)
        self.plan.set_state("reverted")
        return self.plan

    def _current_owner(self, step: dict[str, Any], cache: dict[str, dict[str, str | None]]) -> str | None:
        if step["asset"] not in cache:
            cache[step["asset"]] = {f["id"]: (f["person"]["id"] if f["person"] else None)
                                    for f in self.client.faces(step["asset"])}
        return cache[step["asset"]].get(step["face"])

    def _restored(self, person_id: str) -> str:
        """A person merged away by this push comes back under a new id on undo."""
        return self.plan.refs.get("restored:" + person_id, person_id)

    def _unmerge(self, step: dict[str, Any]) -> None:
        if step["status"] == "started" and self.client.person(step["source"]) is not None:
            return  # the merge never happened
        key = "restored:" + step["source"]
        if key not in self.plan.refs:
            person = self.client.create_person(step["source_name"], step["source_hidden"])
            self.plan.set_ref(key, person["id"])
        for face in step["source_faces"] or ():
            self.client.reassign_face(face["face"], self.plan.refs[key])

    def _unassign(self, steps: list[dict[str, Any]]) -> None:
        """Immich has no "unassign face": move the faces to a throwaway person and delete it."""
        if not steps:
            return
        holder = self.client.create_person(UNDO_PERSON_NAME, True)
        for step in steps:
            self.client.reassign_face(step["face"], holder["id"])
        self.client.delete_person(holder["id"])
        for step in steps:
            self.plan.record(step, status="undone")


def describe_step(step: dict[str, Any]) -> str:
    kind = step["kind"]
    if kind == "create_person":
        who = f"person '{step['name']}'" if step["name"] else "an unnamed person"
        return f"create {who}" + (" (hidden)" if step["hidden"] else "")
    if kind == "update_person" and step["set"] == {"name": ""} and str(step["old"].get("name", "")).startswith(TEMP_NAME_PREFIX):
        return "leave the new person unnamed (drop the push's temporary name)"
    if kind == "update_person":
        return f"update person {str(step['person'])[:8]}: " + ", ".join(f"{k} {v!r}" for k, v in step["set"].items())
    if kind == "create_face":
        return f"add a face Immich did not find on asset {step['asset'][:8]} to '{step['name']}'"
    if kind == "merge_people":
        source = f"'{step['source_name']}'" if step["source_name"] else f"unnamed person {step['source'][:8]}"
        return f"merge {source} into '{step['name']}'"
    return f"assign face {step['face']} to '{step['name']}'"
