"""`cluster --library FILE`: group the library's faces into people (our default or Immich's rules),
keeping every review decision, and print the groups and the faces left unassigned."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from immich_ml_desktop.cli.common import add_json_option, print_json, settings_from_args


def register(sub: Any) -> None:
    p = sub.add_parser("cluster", help="group faces into people and print the groups")
    p.add_argument("--library", type=Path, help="the library file (default: the one in the settings)")
    p.add_argument("--face-model", help="whose faces to group (default: the only face model in the library)")
    p.add_argument("--algorithm", choices=["default", "immich"], default="default",
                   help="default: constrained average linkage; immich: Immich's own rules, to preview what "
                        "Immich would make of the library")
    p.add_argument("--max-distance", type=float,
                   help="cosine distance within which faces are one person (immich default 0.5, ours 0.6)")
    p.add_argument("--min-faces", type=int,
                   help="faces needed to found a person (immich default 3) / a group (ours 2)")
    p.add_argument("--incremental", action="store_true", help="keep every existing group; only place new faces")
    p.add_argument("--preview", action="store_true", help="print what the run would make without storing it")
    add_json_option(p)
    p.set_defaults(func=run)


def _params(args: argparse.Namespace):
    from dataclasses import replace

    from immich_ml_desktop.errors import InvalidInputError
    from immich_ml_desktop.library.clustering import GroupingParams, ImmichParams

    if args.max_distance is not None and not 0.0 < args.max_distance < 2.0:
        raise InvalidInputError("--max-distance is a cosine distance: give a value between 0 and 2 (e.g. 0.5).")
    if args.min_faces is not None and args.min_faces < 1:
        raise InvalidInputError("--min-faces must be at least 1.")
    if args.algorithm == "immich":
        immich = ImmichParams()
        if args.max_distance is not None:
            immich = replace(immich, max_distance=args.max_distance)
        if args.min_faces is not None:
            immich = replace(immich, min_faces=args.min_faces)
        return immich
    params = GroupingParams()
    if args.max_distance is not None:
        params = replace(params, link_distance=args.max_distance, join_distance=args.max_distance)
    if args.min_faces is not None:
        params = replace(params, min_group_size=args.min_faces)
    return params


def run(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from immich_ml_desktop.errors import LibraryError
    from immich_ml_desktop.library.people import PAIR_SIZE, People
    from immich_ml_desktop.library.store import LibraryStore

    path = Path(args.library or settings_from_args(args).library_path)
    if not path.is_file():
        raise LibraryError(f"There is no library at {path}, so no faces to group; index photos first "
                           f"(`immich-ml-desktop index`) or give --library.")
    params = _params(args)
    with LibraryStore(path) as store:
        people = People(store, args.face_model)
        if args.preview:
            grouping = people.preview(args.algorithm, params)
        else:
            grouping = people.recluster(args.algorithm, params, incremental=args.incremental)
        faces = {f.face_id: f for f in people.all_faces()}
        known = people.groups("all") + people.groups("hidden")
        names = {g.id: g.name for g in known}
        confirmed = {g.id for g in known if g.confirmed}

    def face(fid: int) -> dict[str, Any]:
        f = faces[fid]
        return {"face_id": fid, "asset_id": f.asset_id, "source": f.source, "path": f.asset_key,
                "box": [round(float(v), 1) for v in f.box]}

    out = {
        "library": str(path),
        "model": people.model,
        "algorithm": args.algorithm,
        "params": asdict(params),
        "stored": not args.preview,
        # suggested: a pair nobody confirmed (the People page offers it; a push leaves it out until confirmed)
        "groups": [{"id": gid, "name": names.get(gid) if gid is not None else None, "face_ids": ids,
                    "suggested": len(ids) == PAIR_SIZE and gid not in confirmed, "faces": [face(f) for f in ids]}
                   for gid, ids in grouping.groups],
        "unassigned": [face(f) for f in grouping.unassigned],
    }
    if args.json:
        print_json(out)
        return 0
    print(f"{len(out['groups'])} groups, {len(out['unassigned'])} faces unassigned ({args.algorithm}, {path})")
    for g in out["groups"]:
        label = g["name"] or (f"group {g['id']}" if g["id"] is not None else "new group")
        paths = sorted({f["path"] for f in g["faces"]})
        pair = " (a suggested pair)" if g["suggested"] else ""
        print(f"  {label}{pair}: {len(g['face_ids'])} faces in {len(paths)} photos, e.g. {paths[0]}")
    return 0
