"""The index job on real photos with the real tiny CLIP pack and SCRFD face pack: every format indexed,
bad files recorded with reasons, re-scans do only what changed, pause/resume/cancel within a second."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from immich_ml_desktop.errors import ImageDecodeError
from immich_ml_desktop.library.folders import FolderSource, load_preview, scan_folder
from immich_ml_desktop.library.store import LibraryStore
from immich_ml_desktop.services.index import IndexJob, IndexProgress

from conftest import CLIP_PACK, FACE_PACK, PHOTOS

# One photo of every format plus faces; small enough to index in a few seconds.
SUBSET = [
    "immich_test_assets/formats/heic/IMG_2682.heic",
    "immich_test_assets/formats/avif/8bit-sRGB.avif",
    "immich_test_assets/formats/webp/denali.webp",
    "immich_test_assets/formats/png/density_plot.png",
    "immich_test_assets/formats/jpg/el_torcal_rocks.jpg",
    "immich_test_assets/metadata/faces/portrait-orientation-6.jpg",
    "insightface/t1.jpg",
    "face_recognition/examples/two_people.jpg",
    "skimage/astronaut.png",
]


def copy_photos(dst: Path, rels: list[str]) -> Path:
    for rel in rels:
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PHOTOS / rel, target)
    return dst


def add_bad_files(folder: Path) -> dict[str, str]:
    """Files that look like photos but are not; name -> a word their failure reason must contain."""
    (folder / "bad").mkdir(exist_ok=True)
    (folder / "bad" / "text.jpg").write_text("this is not a photo")
    (folder / "bad" / "truncated.jpg").write_bytes((PHOTOS / "insightface/t1.jpg").read_bytes()[:4000])
    (folder / "bad" / "empty.heic").write_bytes(b"")
    return {"text.jpg": "not an image", "truncated.jpg": "truncated", "empty.heic": "not an image"}


def make_job(store: LibraryStore, engine, folder: Path, **kwargs) -> IndexJob:
    return IndexJob(store, engine, FolderSource([folder]), clip_model=CLIP_PACK, face_model=FACE_PACK, **kwargs)


@pytest.fixture
def library(tmp_path: Path):
    with LibraryStore(tmp_path / "library.sqlite3") as store:
        yield store


def test_indexes_every_format_records_failures_and_rescans_only_changes(cpu_engine, library, tmp_path) -> None:
    folder = copy_photos(tmp_path / "photos", SUBSET)
    bad = add_bad_files(folder)
    events: list[IndexProgress] = []
    failures: list[tuple[str, str]] = []
    summary = make_job(library, cpu_engine, folder, progress=events.append,
                       failure=lambda a, r: failures.append((Path(a.key).name, r))).run()

    assert (summary.new, summary.indexed, summary.failed) == (len(SUBSET) + 3, len(SUBSET), 3)
    assert sorted(name for name, _ in failures) == sorted(bad)
    for name, reason in failures:
        assert bad[name] in reason
    stats = library.stats(clip_model=CLIP_PACK, face_model=FACE_PACK)
    assert stats["indexed"] == len(SUBSET) and stats["failed"] == 3 and stats["clip"] == len(SUBSET)
    assert stats["faces"] >= 6 + 2  # t1.jpg has 6 faces, two_people.jpg 2
    assert {Path(f.key).name for f in library.failures()} == set(bad)
    assert all(f.reason for f in library.failures())

    heic = library.asset_by_key("folder", str(folder / SUBSET[0]))
    assert heic is not None and min(heic.width, heic.height) == 1440  # the preview size the models saw
    t1 = library.asset_by_key("folder", str(folder / "insightface/t1.jpg"))
    assert len(library.faces(asset_id=t1.id, model=FACE_PACK)) == 6  # type: ignore[union-attr]
    # stored vectors are what the engine computes for the same preview
    expected = cpu_engine.clip_image(CLIP_PACK, load_preview(folder / "insightface/t1.jpg"))
    np.testing.assert_allclose(library.clip_vector(t1.id, CLIP_PACK), expected, atol=1e-5)  # type: ignore[union-attr]

    assert events[0].state == "scanning" and events[-1].state == "finished"
    assert events[-1].done == events[-1].total == len(SUBSET) + 3 and events[-1].failed == 3
    assert [e.done for e in events] == sorted(e.done for e in events)

    # a second run does nothing
    again = make_job(library, cpu_engine, folder).run()
    assert (again.total, again.new, again.changed, again.unchanged) == (0, 0, 0, len(SUBSET) + 3)

    # touching one file re-indexes only that file; deleting one removes it with its faces
    touched = folder / "insightface/t1.jpg"
    os.utime(touched, ns=(time.time_ns(), time.time_ns() + 10**9))
    (folder / "face_recognition/examples/two_people.jpg").unlink()
    faces_before = library.stats()["faces"]
    third = make_job(library, cpu_engine, folder).run()
    assert (third.changed, third.removed, third.total, third.indexed) == (1, 1, 1, 1)
    assert library.asset_by_key("folder", str(folder / "face_recognition/examples/two_people.jpg")) is None
    assert library.stats()["faces"] == faces_before - 2
    assert library.stats()["assets"] == len(SUBSET) + 2


def test_whole_shared_photo_tree_decodes_and_gets_clip_vectors(cpu_engine, library) -> None:
    """Every image of ../shared/photos indexed, HEIC and AVIF included (CLIP only: faces take minutes here)."""
    summary = IndexJob(library, cpu_engine, FolderSource([PHOTOS]), clip_model=CLIP_PACK, face_model=None).run()
    files = list(scan_folder(PHOTOS))
    assert summary.total == len(files) > 150 and summary.indexed + summary.failed == len(files)
    assert summary.indexed == len(files)  # every photo in the shared tree is decodable
    assert library.stats()["clip"] == len(files) and all(a.width and a.height for a in library.assets())
    assert all(min(a.width, a.height) <= 1440 for a in library.assets())  # type: ignore[type-var]


@pytest.mark.slow
def test_indexes_the_whole_shared_photo_tree(cpu_engine, library) -> None:
    """Every decodable image of ../shared/photos indexed with CLIP and faces (a few minutes)."""
    summary = IndexJob(library, cpu_engine, FolderSource([PHOTOS]), clip_model=CLIP_PACK, face_model=FACE_PACK).run()
    files = list(scan_folder(PHOTOS))
    assert summary.total == len(files) and summary.indexed + summary.failed == len(files)
    for f in library.failures():
        with pytest.raises(ImageDecodeError):  # a failure is only allowed for a file that really cannot be decoded
            load_preview(f.key)
    keys = {a.key for a in library.assets(indexed_only=True)}
    assert any(k.endswith(".heic") for k in keys) and any(k.endswith(".avif") for k in keys)


def _run_in_thread(job: IndexJob) -> tuple[threading.Thread, dict]:
    out: dict = {}
    thread = threading.Thread(target=lambda: out.setdefault("summary", job.run()), daemon=True)
    thread.start()
    return thread, out


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _small_photos(folder: Path, n: int) -> Path:
    """n copies of small real photos (a job long enough to pause, short enough for the test)."""
    sources = [load_preview(p, 320) for p in sorted((PHOTOS / "photoprism/assets/examples").glob("*.jpg"))[:8]]
    folder.mkdir(parents=True)
    for i in range(n):
        sources[i % len(sources)].save(folder / f"{i:03d}.jpg", quality=90)
    return folder


def test_pause_resume_and_cancel_take_effect_at_the_next_photo(cpu_engine, library, tmp_path) -> None:
    """Pause and cancel start no new photo: only those already handed to the workers (at most two per
    worker) finish after the request. That is what the job controls; how soon that is depends on the
    machine's load (about a photo's time when idle), so the test counts photos, not seconds."""
    folder = _small_photos(tmp_path / "photos", 40)
    events: list[IndexProgress] = []
    job = make_job(library, cpu_engine, folder, progress=events.append, progress_interval=0.0)
    in_flight = 2 * job.workers
    thread, out = _run_in_thread(job)
    _wait_for(lambda: events and events[-1].done >= 4)

    asked_at = events[-1].done
    job.pause()
    _wait_for(lambda: events[-1].state == "paused", timeout=60)
    done_at_pause = events[-1].done
    assert done_at_pause - asked_at <= in_flight
    assert library.stats()["indexed"] == done_at_pause  # what was finished is stored before waiting
    time.sleep(1.2)
    assert events[-1].done == done_at_pause and events[-1].state == "paused"
    assert library.stats()["indexed"] == done_at_pause

    job.resume()
    _wait_for(lambda: events[-1].done >= done_at_pause + 4)
    assert events[-1].images_per_second > 0 and events[-1].eta_seconds is not None

    asked_at = events[-1].done
    job.cancel()
    thread.join(60)
    assert not thread.is_alive()
    summary = out["summary"]
    assert summary.cancelled and 0 < summary.indexed < 40 and summary.indexed - asked_at <= in_flight
    assert events[-1].state == "cancelled"
    assert library.stats()["indexed"] == summary.indexed  # nothing finished is lost, nothing half-stored

    rest = make_job(library, cpu_engine, folder).run()  # the next run does only the rest
    assert rest.total == 40 - summary.indexed and library.stats()["indexed"] == 40


def test_cancel_while_paused_stops_at_once(cpu_engine, library, tmp_path) -> None:
    folder = _small_photos(tmp_path / "photos", 20)
    events: list[IndexProgress] = []
    job = make_job(library, cpu_engine, folder, progress=events.append, progress_interval=0.0)
    thread, out = _run_in_thread(job)
    _wait_for(lambda: events and events[-1].done >= 2)
    job.pause()
    _wait_for(lambda: events[-1].state == "paused", timeout=60)
    paused_at = events[-1].done
    job.cancel()
    thread.join(60)  # a paused job has nothing in flight: it ends without another photo
    assert not thread.is_alive() and out["summary"].cancelled and out["summary"].indexed == paused_at


def test_a_run_with_another_face_threshold_redoes_the_photos_made_otherwise(cpu_engine, library, tmp_path) -> None:
    """Faces are stored with the threshold they were found at: another threshold redoes those photos, the
    same threshold finds nothing to do (it used to keep whatever an earlier run stored, e.g. 0 faces)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for rel in ("face_recognition/examples/obama.jpg", "face_recognition/examples/two_people.jpg"):
        shutil.copy(PHOTOS / rel, folder / Path(rel).name)
    strict = make_job(library, cpu_engine, folder, face_min_score=0.95).run()
    assert strict.total == 2
    strict_faces = len(library.faces(model=FACE_PACK))
    assert make_job(library, cpu_engine, folder, face_min_score=0.95).run().total == 0  # same options: done

    default = make_job(library, cpu_engine, folder, face_min_score=0.7).run()
    assert default.total == 2 and default.failed == 0
    assert len(library.faces(model=FACE_PACK)) > strict_faces  # 0.7 keeps faces 0.95 dropped
    assert make_job(library, cpu_engine, folder, face_min_score=0.7).run().total == 0
    rows = library.connection().execute("SELECT DISTINCT options FROM asset_status WHERE task = 'faces'").fetchall()
    assert rows == [("minScore=0.7",)]
