"""Review decisions follow faces through re-indexing.

When a photo's image changes (edited, replaced) its faces are detected again and get new ids. Before the
old faces go, what the user decided about them (the group they were put in or a group the user acted on,
"not this person", "not a face") is kept in `pending_decisions`; when the photo is indexed again, each new
face that overlaps an old one (IoU > 0.5, the old box scaled to the new preview's size) takes its
decisions. A photo that fails to index keeps them pending until a later run indexes it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

MATCH_IOU = 0.5  # the same face re-detected on the same (or a resized) image overlaps far more than this


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def stash(conn: sqlite3.Connection, asset_id: int, model: str | None = None) -> int:
    """Keep the decisions about the asset's faces (of `model`, or every model) before those faces are deleted;
    returns how many faces had any."""
    where, args = ("f.asset_id = ?", [asset_id]) if model is None else ("f.asset_id = ? AND f.model = ?", [asset_id, model])
    rows = conn.execute(
        "SELECT f.id, f.model, f.x1, f.y1, f.x2, f.y2, a.width, a.height, fa.group_id, coalesce(fa.pinned, 0), "
        "coalesce(g.confirmed, 0), EXISTS (SELECT 1 FROM not_faces n WHERE n.face_id = f.id) "
        "FROM faces f JOIN assets a ON a.id = f.asset_id "
        "LEFT JOIN face_assignments fa ON fa.face_id = f.id LEFT JOIN face_groups g ON g.id = fa.group_id "
        f"WHERE {where}", args,
    ).fetchall()
    kept = 0
    for face_id, face_model, x1, y1, x2, y2, width, height, group_id, pinned, confirmed, not_face in rows:
        rejected = [g for (g,) in conn.execute("SELECT group_id FROM face_rejections WHERE face_id = ?", (face_id,))]
        decided = group_id if (pinned or confirmed) else None
        if decided is None and not rejected and not not_face:
            continue  # nothing the user decided: a new grouping run places the new face
        conn.execute(
            "INSERT INTO pending_decisions (asset_id, model, x1, y1, x2, y2, width, height, group_id, pinned, rejected, "
            "not_face) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (asset_id, face_model, x1, y1, x2, y2, width, height, decided, int(pinned), json.dumps(rejected), int(not_face)),
        )
        kept += 1
    return kept


def reapply(conn: sqlite3.Connection, asset_id: int, model: str, width: int | None, height: int | None) -> int:
    """Give the asset's new faces (of `model`) the pending decisions of the old faces they overlap, one to
    one by highest overlap; the pending rows go. Returns how many faces took decisions."""
    pending = conn.execute(
        "SELECT rowid, x1, y1, x2, y2, width, height, group_id, pinned, rejected, not_face FROM pending_decisions "
        "WHERE asset_id = ? AND model = ?", (asset_id, model),
    ).fetchall()
    if not pending:
        return 0
    faces = conn.execute("SELECT id, x1, y1, x2, y2 FROM faces WHERE asset_id = ? AND model = ?", (asset_id, model)).fetchall()
    pairs = []
    for p in pending:
        sx = width / p[5] if width and p[5] else 1.0
        sy = height / p[6] if height and p[6] else 1.0
        old = (p[1] * sx, p[2] * sy, p[3] * sx, p[4] * sy)
        for f in faces:
            overlap = _iou(old, f[1:5])
            if overlap > MATCH_IOU:
                pairs.append((overlap, p, f[0]))
    groups = {g for (g,) in conn.execute("SELECT id FROM face_groups WHERE model = ?", (model,))}
    used_pending: set[int] = set()
    used_faces: set[int] = set()
    applied = 0
    for _, p, face_id in sorted(pairs, key=lambda x: -x[0]):
        if p[0] in used_pending or face_id in used_faces:
            continue
        used_pending.add(p[0])
        used_faces.add(face_id)
        group_id, pinned, rejected, not_face = p[7], p[8], json.loads(p[9]), p[10]
        if group_id is not None and group_id in groups:
            conn.execute(
                "INSERT INTO face_assignments (face_id, group_id, pinned) VALUES (?, ?, ?) "
                "ON CONFLICT (face_id) DO UPDATE SET group_id = excluded.group_id, pinned = excluded.pinned",
                (face_id, group_id, pinned),
            )
        conn.executemany("INSERT OR IGNORE INTO face_rejections (face_id, group_id) VALUES (?, ?)",
                         [(face_id, g) for g in rejected if g in groups])
        if not_face:
            conn.execute("INSERT OR IGNORE INTO not_faces (face_id) VALUES (?)", (face_id,))
        applied += 1
    conn.execute("DELETE FROM pending_decisions WHERE asset_id = ? AND model = ?", (asset_id, model))
    return applied
