"""LibraryStore on real SQLite files: schema and migrations, atomic results, sync, reads, bad files,
a writer thread next to reader threads; plus the folder scan and preview decoding on real photos."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from immich_ml_desktop.errors import ImageDecodeError, InvalidInputError, LibraryError
from immich_ml_desktop.library import schema
from immich_ml_desktop.library.folders import FolderSource, is_skipped, load_preview, scan_folder
from immich_ml_desktop.library.search import ClipSearch, rank
from immich_ml_desktop.library.store import AssetFile, AssetResult, LibraryStore

from conftest import photo
from conftest import FaceRow as _Face

CLIP, FACES = "clip-a", "faces-a"




def _face(seed: int, dim: int = 8) -> _Face:
    rng = np.random.default_rng(seed)
    return _Face(np.array([1, 2, 30, 40], np.float32), 0.9, rng.random((5, 2), np.float32), rng.random(dim, np.float32))


def _vec(seed: int, dim: int = 4) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def store(tmp_path: Path):
    with LibraryStore(tmp_path / "lib" / "library.sqlite3") as s:
        yield s


def test_new_library_has_current_schema_and_wal(store: LibraryStore) -> None:
    assert store.schema_version == schema.SCHEMA_VERSION == len(schema.MIGRATIONS)
    assert store.connection().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.stats() == {"assets": 0, "indexed": 0, "failed": 0, "pending": 0, "faces": 0, "clip": 0}


def test_appended_migration_is_applied_once_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lib.sqlite3"
    LibraryStore(path).close()
    extra = "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO people (name) VALUES ('x');"
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, extra])
    monkeypatch.setattr("immich_ml_desktop.library.store.MIGRATIONS", schema.MIGRATIONS)
    monkeypatch.setattr("immich_ml_desktop.library.store.SCHEMA_VERSION", len(schema.MIGRATIONS))
    for _ in range(2):  # the second open must not run it again
        with LibraryStore(path) as s:
            assert s.schema_version == len(schema.MIGRATIONS)
            assert s.connection().execute("SELECT count(*) FROM people").fetchone()[0] == 1


def test_failed_migration_leaves_library_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lib.sqlite3"
    LibraryStore(path).close()
    broken = "CREATE TABLE half (id INTEGER); THIS IS NOT SQL;"
    monkeypatch.setattr("immich_ml_desktop.library.store.MIGRATIONS", [*schema.MIGRATIONS, broken])
    monkeypatch.setattr("immich_ml_desktop.library.store.SCHEMA_VERSION", len(schema.MIGRATIONS) + 1)
    with pytest.raises(LibraryError):
        LibraryStore(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half'").fetchone()[0] == 0


def test_library_of_schema_3_keeps_its_results_and_takes_task_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Migration 4 rebuilds asset_status without its CHECK on the task: every row stays, other tasks fit."""
    path = tmp_path / "lib.sqlite3"
    with monkeypatch.context() as m:
        m.setattr("immich_ml_desktop.library.store.MIGRATIONS", schema.MIGRATIONS[:3])
        m.setattr("immich_ml_desktop.library.store.SCHEMA_VERSION", 3)
        with LibraryStore(path) as old:
            ids = [old.upsert_asset("folder", f"/p/{i}.jpg", size=i, mtime_ns=i)[0] for i in range(3)]
            old.record_result(AssetResult(ids[0], 10, 10, _vec(0), []), clip_model=CLIP, face_model=FACES)
            face = _face(0)  # a face row as schema 3 wrote it (no found_by column yet)
            old.connection().execute(
                "INSERT INTO faces (asset_id, model, x1, y1, x2, y2, score, landmarks, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (ids[0], FACES, *map(float, face.box), face.score, face.landmarks.tobytes(), face.embedding.tobytes()))
            old.record_failure(ids[1], "corrupt", clip_model=CLIP, face_model=FACES)
            with pytest.raises(sqlite3.IntegrityError, match="CHECK"):  # schema 3 knows only clip and faces
                old.connection().execute("INSERT INTO asset_status VALUES (?, 'tags', 't', 'done', NULL, 0)", (ids[2],))
            before = (old.stats(), old.failures(), old.pending_assets(clip_model=CLIP, face_model=FACES))
    with LibraryStore(path) as store:
        assert store.schema_version == schema.SCHEMA_VERSION
        assert (store.stats(), store.failures(), store.pending_assets(clip_model=CLIP, face_model=FACES)) == before
        # Migration 5: faces found before are taken as Immich's detection found them (push adds none of them).
        assert [r[0] for r in store.connection().execute("SELECT found_by FROM faces")] == ["detector"]
        assert [a.id for a in store.pending_assets(clip_model=None, face_model=None, tasks=[("tags", "t")])] == ids
        store.record_result(AssetResult(ids[2], 10, 10, results={("tags", "t"): b'[{"label":"cat"}]'}), clip_model=None, face_model=None)
        assert [(r.asset_id, r.result) for r in store.task_results("tags")] == [(ids[2], [{"label": "cat"}])]
        assert store.result_counts() == {"tags": {"t": 1}}
        with pytest.raises(ValueError, match="clip_model/face_model"):
            store.record_result(AssetResult(ids[2], 10, 10, results={("clip", "x"): b"1"}), clip_model=None, face_model=None)
        store.upsert_asset("folder", "/p/2.jpg", size=99, mtime_ns=2)  # the photo changed: its results go
        assert store.task_results("tags") == [] and store.result_counts() == {}


def test_bad_files_are_clear_user_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.sqlite3"
    text.write_text("these are my notes, not a database " * 100)
    with pytest.raises(LibraryError, match="not a library"):
        LibraryStore(text)
    assert text.read_text().startswith("these are my notes")  # nothing the user had is touched

    newer = tmp_path / "newer.sqlite3"
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(LibraryError, match="newer version"):
        LibraryStore(newer)

    other = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE recipes (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(LibraryError, match="another program"):
        LibraryStore(other)

    with pytest.raises(LibraryError, match="folder"):
        LibraryStore(tmp_path)


def test_result_is_stored_whole_and_replaces_faces(store: LibraryStore) -> None:
    (a, _), (b, _) = store.upsert_asset("folder", "/p/a.jpg", size=1, mtime_ns=1), store.upsert_asset("immich", "uuid-b", checksum="c")
    store.record_result(AssetResult(a, 1440, 1920, _vec(1), [_face(1), _face(2)]), clip_model=CLIP, face_model=FACES)
    store.record_result(AssetResult(a, 1440, 1920, _vec(1), [_face(3)]), clip_model=CLIP, face_model=FACES)  # re-run
    store.record_result(AssetResult(b, 1440, 1440, _vec(2), []), clip_model=CLIP, face_model=FACES)
    assert store.stats() == {"assets": 2, "indexed": 2, "failed": 0, "pending": 0, "faces": 1, "clip": 2}
    asset = store.asset(a)
    assert asset is not None and (asset.width, asset.height) == (1440, 1920) and asset.path == Path("/p/a.jpg")
    assert store.asset_by_key("immich", "uuid-b").path is None  # type: ignore[union-attr]
    ids, vectors = store.clip_vectors(CLIP)
    assert ids.tolist() == [a, b] and vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors[1], _vec(2))
    face_ids, face_vecs = store.face_vectors(FACES)
    assert face_vecs.shape == (1, 8)
    np.testing.assert_array_equal(face_vecs[0], _face(3).embedding)
    [stored] = store.faces(asset_id=a)
    assert stored.id == face_ids[0] and stored.box == (1, 2, 30, 40) and stored.landmarks.shape == (5, 2)
    assert store.pending_assets(clip_model=CLIP, face_model=FACES) == []
    assert [x.id for x in store.pending_assets(clip_model="clip-b", face_model=FACES)] == [a, b]


def test_a_failing_transaction_stores_nothing_of_the_asset(store: LibraryStore) -> None:
    a, _ = store.upsert_asset("folder", "/p/a.jpg", size=1, mtime_ns=1)
    bad_face = _Face(np.array([1, 2, 3, 4]), 0.9, np.zeros((5, 2)), np.zeros(4))
    bad_face.box = np.array([1.0])  # too short: the INSERT fails after the CLIP vector was written
    with pytest.raises(sqlite3.ProgrammingError):
        store.record_result(AssetResult(a, 10, 10, _vec(1), [bad_face]), clip_model=CLIP, face_model=FACES)
    assert store.stats()["clip"] == 0 and store.stats()["indexed"] == 0
    assert store.asset(a).width is None  # type: ignore[union-attr]


def test_failure_then_change_then_retry(store: LibraryStore) -> None:
    a, change = store.upsert_asset("folder", "/p/a.jpg", size=1, mtime_ns=1)
    assert change == "new"
    store.record_failure(a, "a.jpg is truncated", clip_model=CLIP, face_model=FACES)
    assert store.stats()["failed"] == 1
    assert {(f.task, f.reason) for f in store.failures()} == {("clip", "a.jpg is truncated"), ("faces", "a.jpg is truncated")}
    assert store.pending_assets(clip_model=CLIP, face_model=FACES) == []
    assert len(store.pending_assets(clip_model=CLIP, face_model=FACES, retry_failed=True)) == 1
    assert store.upsert_asset("folder", "/p/a.jpg", size=1, mtime_ns=1) == (a, "unchanged")
    assert store.upsert_asset("folder", "/p/a.jpg", size=2, mtime_ns=1) == (a, "changed")
    assert store.failures() == [] and len(store.pending_assets(clip_model=CLIP, face_model=FACES)) == 1


def test_sync_and_delete_cascade(store: LibraryStore) -> None:
    files = [AssetFile("/r/a.jpg", 1, 1), AssetFile("/r/b.jpg", 1, 1), AssetFile("/other/c.jpg", 1, 1)]
    first = store.sync_assets("folder", files)
    assert len(first["new"]) == 3
    for asset_id in first["new"]:
        store.record_result(AssetResult(asset_id, 5, 5, _vec(asset_id), [_face(asset_id)]), clip_model=CLIP, face_model=FACES)
    second = store.sync_assets(
        "folder", [AssetFile("/r/a.jpg", 1, 2)], remove_missing_under=["/r/"]
    )  # a touched, b deleted, c outside the scanned folder kept
    assert len(second["changed"]) == 1 and len(second["removed"]) == 1
    assert sorted(x.key for x in store.assets()) == ["/other/c.jpg", "/r/a.jpg"]
    assert store.stats() == {"assets": 2, "indexed": 1, "failed": 0, "pending": 1, "faces": 1, "clip": 1}
    assert [x.key for x in store.assets(indexed_only=True)] == ["/other/c.jpg"]
    assert store.delete_assets([store.asset_by_key("folder", "/other/c.jpg").id, 999]) == 1  # type: ignore[union-attr]
    assert store.stats()["faces"] == 0 and store.stats()["clip"] == 0
    assert store.connection().execute("SELECT count(*) FROM asset_status").fetchone()[0] == 0


def test_writer_thread_and_reader_threads(store: LibraryStore) -> None:
    """Readers see only whole assets (a clip vector always has its status) while a thread writes."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        for i in range(150):
            a, _ = store.upsert_asset("folder", f"/p/{i}.jpg", size=i, mtime_ns=i)
            store.record_result(AssetResult(a, 4, 4, _vec(i), [_face(i)]), clip_model=CLIP, face_model=FACES)
        stop.set()

    def read() -> None:
        try:
            while not stop.is_set():
                s = store.stats(clip_model=CLIP, face_model=FACES)
                assert s["clip"] >= s["indexed"] and s["faces"] >= s["indexed"] - 1
                ids, vectors = store.clip_vectors(CLIP)
                assert vectors.shape[0] == ids.shape[0]
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=write), *(threading.Thread(target=read) for _ in range(3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert store.stats(clip_model=CLIP, face_model=FACES)["indexed"] == 150


def test_search_ranks_by_cosine_and_follows_changes(store: LibraryStore) -> None:
    class _Text:
        def clip_text(self, name: str, text: str, language: str | None = None) -> np.ndarray:
            return {"north": np.array([0, 3, 0, 0], np.float32), "east": np.array([2, 0, 0, 0], np.float32)}[text]

    vectors = {"/n.jpg": [0, 1, 0, 0], "/ne.jpg": [0.7, 0.7, 0, 0], "/e.jpg": [1, 0, 0, 0]}
    for key, v in vectors.items():
        a, _ = store.upsert_asset("folder", key)
        store.record_result(AssetResult(a, 1, 1, np.array(v, np.float32)), clip_model=CLIP, face_model=None)
    search = ClipSearch(store, _Text(), CLIP)
    assert [h.asset.key for h in search.search("north", 2)] == ["/n.jpg", "/ne.jpg"]
    assert search.search("north")[0].score == pytest.approx(1.0)
    store.delete_assets([store.asset_by_key("folder", "/e.jpg").id])  # type: ignore[union-attr]
    assert [h.asset.key for h in search.search("east")] == ["/ne.jpg", "/n.jpg"]


def test_rank_is_exact_top_k_on_a_large_matrix() -> None:
    rng = np.random.default_rng(0)
    m = rng.standard_normal((100_000, 512)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    q = rng.standard_normal(512).astype(np.float32)
    rows, scores = rank(q, m, 10)
    expected = np.argsort(-(m @ (q / np.linalg.norm(q))))[:10]
    assert rows.tolist() == expected.tolist() and np.all(np.diff(scores) <= 0)


# the folder source ----------------------------------------------------------------------------

def test_scan_skips_hidden_and_system_files(tmp_path: Path) -> None:
    for rel in ["a.jpg", "sub/b.PNG", "sub/deeper/c.heic", "notes.txt", ".hidden.jpg", ".git/d.jpg",
                "@eaDir/e.jpg", "sub/Thumbs.db", "$RECYCLE.BIN/f.jpg", "x/.DS_Store"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = sorted(Path(f.key).relative_to(tmp_path).as_posix() for f in scan_folder(tmp_path))
    assert found == ["a.jpg", "sub/b.PNG", "sub/deeper/c.heic"]
    assert is_skipped("@eaDir") and is_skipped(".DS_Store") and not is_skipped("photo.jpg")


def test_missing_folder_never_empties_the_library(store: LibraryStore, tmp_path: Path) -> None:
    store.upsert_asset("folder", str(tmp_path / "gone" / "a.jpg"), size=1, mtime_ns=1)
    with pytest.raises(InvalidInputError, match="does not exist"):
        FolderSource([tmp_path / "gone"]).sync(store)
    assert store.stats()["assets"] == 1


def test_preview_is_immich_sized_rotated_and_never_upscaled(tmp_path: Path) -> None:
    upright = load_preview(photo("immich_test_assets/metadata/faces/portrait.jpg"), 300)
    rotated = load_preview(photo("immich_test_assets/metadata/faces/portrait-orientation-6.jpg"), 300)
    assert upright.size == rotated.size == (360, 300)  # EXIF orientation 6 applied
    assert np.abs(np.asarray(upright, np.float32) - np.asarray(rotated, np.float32)).mean() < 8
    big = load_preview(photo("photoprism/assets/examples/6720px_white.jpg"))
    assert min(big.size) == 1440 and big.mode == "RGB"
    small = photo("face_recognition/examples/obama-240p.jpg")
    assert load_preview(small).size == Image.open(small).size  # smaller than a preview: kept as is
    heic = load_preview(photo("immich_test_assets/formats/heic/IMG_2682.heic"))
    avif = load_preview(photo("immich_test_assets/formats/avif/8bit-sRGB.avif"))
    assert min(heic.size) == 1440 and min(avif.size) == 1080


def test_draft_decoding_matches_a_full_decode(tmp_path: Path) -> None:
    """JPEG draft (DCT scaling) then the exact resize gives nearly the pixels of a full decode."""
    src = photo("photoprism/assets/examples/6720px_white.jpg")
    fast = np.asarray(load_preview(src, 400), np.float32)
    full = Image.open(src).convert("RGB")
    full = full.resize(fast.shape[1::-1], Image.Resampling.LANCZOS)
    assert np.abs(fast - np.asarray(full, np.float32)).mean() < 3


def test_bad_images_raise_decode_errors_with_reasons(tmp_path: Path) -> None:
    (tmp_path / "text.jpg").write_text("hello")
    (tmp_path / "trunc.jpg").write_bytes(photo("insightface/t1.jpg").read_bytes()[:3000])
    (tmp_path / "empty.png").write_bytes(b"")
    for name, reason in [("text.jpg", "not an image"), ("trunc.jpg", "truncated"), ("empty.png", "not an image"),
                         ("missing.jpg", "deleted or moved")]:
        with pytest.raises(ImageDecodeError, match=reason):
            load_preview(tmp_path / name)


def test_photos_with_another_colour_profile_are_converted_to_srgb(tmp_path: Path) -> None:
    p3 = Image.open(photo("immich_test_assets/formats/heic/IMG_2682.heic")).info["icc_profile"]  # Display P3
    Image.new("RGB", (64, 48), (40, 160, 90)).save(tmp_path / "p3.jpg", quality=100, icc_profile=p3)
    Image.new("RGB", (64, 48), (40, 160, 90)).save(tmp_path / "plain.jpg", quality=100)
    converted = np.asarray(load_preview(tmp_path / "p3.jpg"), np.int16)[24, 32]
    plain = np.asarray(load_preview(tmp_path / "plain.jpg"), np.int16)[24, 32]
    assert np.abs(plain - (40, 160, 90)).max() <= 2  # no profile: pixels as they are
    assert np.abs(converted - plain).max() >= 5  # P3 green is more saturated than sRGB's: values move


def test_results_for_an_asset_deleted_meanwhile_are_dropped(store: LibraryStore) -> None:
    a, _ = store.upsert_asset("folder", "/p/a.jpg")
    b, _ = store.upsert_asset("folder", "/p/b.jpg")
    store.delete_assets([a])
    store.record_results([AssetResult(a, 1, 1, _vec(1), [_face(1)]), AssetResult(b, 1, 1, _vec(2), [])],
                         clip_model=CLIP, face_model=FACES)
    store.record_failure(a, "gone", clip_model=CLIP, face_model=FACES)
    assert store.stats() == {"assets": 1, "indexed": 1, "failed": 0, "pending": 0, "faces": 0, "clip": 1}


def test_connections_of_finished_threads_are_closed(store: LibraryStore) -> None:
    for _ in range(5):
        t = threading.Thread(target=lambda: store.stats())
        t.start()
        t.join()
    store.stats()
    assert len(store._connections) <= 2  # this thread's and at most the last finished thread's



def test_fast_jpeg_previews_match_pil_for_every_orientation(tmp_path: Path) -> None:
    """Large JPEGs are decoded through OpenCV at a reduced DCT scale; each EXIF orientation gives the
    preview PIL's decode + Lanczos + exif_transpose gives (same size, pixels within a level or two)."""
    from immich_ml_desktop.library.folders import _pil_preview, decode_preview

    base = Image.open(photo("skimage/astronaut.png")).convert("RGB").resize((1200, 900), Image.Resampling.BICUBIC)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}.jpg"
        base.save(path, quality=92, exif=exif)
        fast = decode_preview(path, 400)
        assert fast.bgr.shape[:2] == (fast.height, fast.width)
        with Image.open(path) as im:
            slow = _pil_preview(im, 400)
        assert fast.pil.size == slow.size, orientation
        diff = np.abs(np.asarray(fast.pil, np.float32) - np.asarray(slow, np.float32)).mean()
        assert diff < 2.5, (orientation, diff)
        assert np.array_equal(fast.bgr[:, :, ::-1], np.asarray(fast.pil))  # both views of one picture
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "o1.jpg").read_bytes()[:20000])
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_preview(tmp_path / "cut.jpg", 400)
