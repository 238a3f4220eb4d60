"""The library's SQLite schema as an ordered list of migrations; `PRAGMA user_version` counts those applied.

To change the schema, APPEND a migration (never edit one that has shipped): a library made by an older
version is brought up to date step by step, each step in its own transaction.
"""

from __future__ import annotations

# Index i holds the SQL that takes a library from version i to version i + 1.
MIGRATIONS: list[str] = [
    # 1: assets, per-model status, CLIP vectors, faces.
    """
    CREATE TABLE assets (
        id        INTEGER PRIMARY KEY,
        source    TEXT NOT NULL CHECK (source IN ('folder', 'immich')),
        key       TEXT NOT NULL,           -- absolute path for 'folder', the remote asset id for 'immich'
        size      INTEGER,                 -- bytes of the original (folder)
        mtime_ns  INTEGER,                 -- modification time of the original (folder)
        checksum  TEXT,                    -- the server's checksum (immich)
        width     INTEGER,                 -- size of the preview the models saw (EXIF-rotated, shorter side <= 1440)
        height    INTEGER,
        added_at  REAL NOT NULL,
        UNIQUE (source, key)
    );
    CREATE TABLE asset_status (
        asset_id   INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
        task       TEXT NOT NULL CHECK (task IN ('clip', 'faces')),
        model      TEXT NOT NULL,
        state      TEXT NOT NULL CHECK (state IN ('done', 'failed')),
        reason     TEXT,                   -- why it failed, in words a user can act on
        updated_at REAL NOT NULL,
        PRIMARY KEY (asset_id, task, model)
    ) WITHOUT ROWID;
    CREATE INDEX asset_status_by_model ON asset_status (task, model, state);
    CREATE TABLE clip_vectors (
        asset_id INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
        model    TEXT NOT NULL,
        vector   BLOB NOT NULL,            -- little-endian float32, L2-normalised
        PRIMARY KEY (asset_id, model)
    );
    CREATE INDEX clip_vectors_by_model ON clip_vectors (model);
    CREATE TABLE faces (
        id        INTEGER PRIMARY KEY,
        asset_id  INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
        model     TEXT NOT NULL,
        x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,  -- preview pixels
        score     REAL NOT NULL,
        landmarks BLOB NOT NULL,           -- float32 (5, 2), preview pixels
        vector    BLOB NOT NULL            -- float32 as the recognizer returns it (not normalised)
    );
    CREATE INDEX faces_by_asset ON faces (asset_id, model);
    CREATE INDEX faces_by_model ON faces (model);
    """,
    # 2: people review (library/people.py): face groups, the user's decisions, the undo/redo log.
    """
    CREATE TABLE face_groups (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: undo history and the GUI hold ids
        model      TEXT NOT NULL,
        name       TEXT,
        hidden     INTEGER NOT NULL DEFAULT 0,
        confirmed  INTEGER NOT NULL DEFAULT 0,   -- the user acted on it: re-clustering keeps it and its faces
        created_at REAL NOT NULL
    );
    CREATE INDEX face_groups_by_model ON face_groups (model);
    CREATE TABLE face_assignments (
        face_id  INTEGER PRIMARY KEY REFERENCES faces(id) ON DELETE CASCADE,
        group_id INTEGER NOT NULL REFERENCES face_groups(id) ON DELETE CASCADE,
        pinned   INTEGER NOT NULL DEFAULT 0      -- put there by the user
    );
    CREATE INDEX face_assignments_by_group ON face_assignments (group_id);
    CREATE TABLE face_rejections (                -- "not this person": never join this face to this group
        face_id  INTEGER NOT NULL REFERENCES faces(id) ON DELETE CASCADE,
        group_id INTEGER NOT NULL REFERENCES face_groups(id) ON DELETE CASCADE,
        PRIMARY KEY (face_id, group_id)
    ) WITHOUT ROWID;
    CREATE TABLE not_faces (                      -- "not a face": left out of every grouping
        face_id INTEGER PRIMARY KEY REFERENCES faces(id) ON DELETE CASCADE
    );
    CREATE TABLE dismissed_suggestions (
        group_a INTEGER NOT NULL REFERENCES face_groups(id) ON DELETE CASCADE,
        group_b INTEGER NOT NULL REFERENCES face_groups(id) ON DELETE CASCADE,
        PRIMARY KEY (group_a, group_b)
    ) WITHOUT ROWID;
    CREATE TABLE review_log (
        id         INTEGER PRIMARY KEY,
        model      TEXT NOT NULL,
        action     TEXT NOT NULL,                -- what the Undo/Redo menu says
        before     TEXT NOT NULL,                -- JSON snapshot of the rows the action changed
        after      TEXT NOT NULL,
        undone     INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    """,
    # 3: decisions about the faces of a photo whose image changed, kept until it is indexed again
    # (library/decisions.py: they then go to the new faces that overlap the old ones).
    """
    CREATE TABLE pending_decisions (
        asset_id INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
        model    TEXT NOT NULL,
        x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,  -- the old face, old preview pixels
        width    INTEGER,                       -- the old preview's size (boxes are scaled to the new one)
        height   INTEGER,
        group_id INTEGER,                       -- the group the user put it in (or acted on), if any
        pinned   INTEGER NOT NULL DEFAULT 0,
        rejected TEXT NOT NULL DEFAULT '[]',    -- JSON list of group ids: "not this person"
        not_face INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX pending_decisions_by_asset ON pending_decisions (asset_id, model);
    -- Face ids are never reused (the undo log and pending decisions name faces by id): the highest id ever
    -- deleted is remembered, and new faces are numbered above it (store.record_results).
    CREATE TABLE face_id_high (id INTEGER NOT NULL);
    INSERT INTO face_id_high SELECT coalesce(max(id), 0) FROM faces;
    CREATE TRIGGER faces_keep_id_high AFTER DELETE ON faces BEGIN
        UPDATE face_id_high SET id = max(id, OLD.id);
    END;
    """,
    # 4: what other tasks return (a model class's own task, e.g. tags; OCR), per asset, task and model, as
    # /predict answers it; their status goes in asset_status under the task's name, so asset_status.task
    # loses its CHECK (SQLite cannot drop a CHECK in place: the table is rebuilt, rows kept).
    """
    CREATE TABLE asset_status_v4 (
        asset_id   INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
        task       TEXT NOT NULL,          -- 'clip', 'faces', or the /predict task of task_results
        model      TEXT NOT NULL,
        state      TEXT NOT NULL CHECK (state IN ('done', 'failed')),
        reason     TEXT,
        updated_at REAL NOT NULL,
        PRIMARY KEY (asset_id, task, model)
    ) WITHOUT ROWID;
    INSERT INTO asset_status_v4 SELECT asset_id, task, model, state, reason, updated_at FROM asset_status;
    DROP TABLE asset_status;
    ALTER TABLE asset_status_v4 RENAME TO asset_status;
    CREATE INDEX asset_status_by_model ON asset_status (task, model, state);
    CREATE TABLE task_results (
        asset_id INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
        task     TEXT NOT NULL,            -- the /predict task, e.g. 'tags'
        model    TEXT NOT NULL,
        result   BLOB NOT NULL,            -- the answer's value for the task, JSON exactly as /predict gives it
        PRIMARY KEY (asset_id, task, model)
    );
    CREATE INDEX task_results_by_model ON task_results (task, model);
    """,
    # 5: which pass found a face: 'detector' (Immich's own detection, so Immich finds it too) or one of the
    # library's own passes (e.g. 'padded'), which Immich never finds: `immich push` adds those to Immich.
    """
    ALTER TABLE faces ADD COLUMN found_by TEXT NOT NULL DEFAULT 'detector';
    """,
    # 6: the options a result was made with (faces: 'minScore=0.7'), so a run with other options redoes it;
    # NULL for results stored before this column (kept: nothing says they were made otherwise).
    """
    ALTER TABLE asset_status ADD COLUMN options TEXT;
    """,
    # 7: how good each face's pixels are (services/face_quality.py, on the 112 px crop ArcFace sees), which
    # decides how the face may be grouped (library/clustering.py, weak faces); NULL for faces stored before.
    """
    ALTER TABLE faces ADD COLUMN brightness REAL;
    ALTER TABLE faces ADD COLUMN contrast REAL;
    ALTER TABLE faces ADD COLUMN sharpness REAL;
    ALTER TABLE faces ADD COLUMN lower_detail REAL;
    """,
    # 8: each photo's fingerprint (services/face_quality.py, `photo_fingerprint`), which tells a photo's edited
    # copies (library/copies.py); NULL for photos indexed before.
    """
    ALTER TABLE assets ADD COLUMN fingerprint BLOB;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)
