"""AnswerCache on a real SQLite file: exact bytes back, only for the same image and entries, bounded by
least recent use, shared by threads and processes, and never in the way when its file is damaged."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

from immich_ml_desktop.models.predict import parse_entries
from immich_ml_desktop.server.answer_cache import AnswerCache, entries_key, image_digest

FACES = '{"facial-recognition":{"detection":{"modelName":"buffalo_l","options":{"minScore":0.7}},"recognition":{"modelName":"buffalo_l"}}}'


def test_the_same_request_in_another_spelling_is_the_same_key_and_other_options_are_not():
    same = [FACES,
            '{"facial-recognition":{"recognition":{"modelName":"buffalo_l","options":{}},"detection":{"options":{"minScore":0.7},"modelName":"buffalo_l"}}}',
            '{"facial-recognition":{"detection":{"modelName":"immich-app/buffalo_l","options":{"minScore":0.7}},"recognition":{"modelName":"buffalo_l"}}}']
    keys = {entries_key(parse_entries(e)) for e in same}
    assert len(keys) == 1
    other = [FACES.replace("0.7", "0.6"), FACES.replace("buffalo_l", "buffalo_s"),
             '{"clip":{"visual":{"modelName":"ViT-B-32__openai"}}}']
    assert len({entries_key(parse_entries(e)) for e in other} | keys) == 4


def test_answers_come_back_byte_for_byte_for_their_key_only(tmp_path: Path):
    cache = AnswerCache(tmp_path / "answers.sqlite3")
    answer = orjson.dumps({"clip": "[0.1,-0.2]", "imageHeight": 1440, "imageWidth": 1920})
    image = image_digest(b"a preview")
    key = entries_key(parse_entries('{"clip":{"visual":{"modelName":"ViT-B-32__openai"}}}'))
    cache.put(image, key, answer, origin="index")
    assert cache.get(image, key) == answer
    assert cache.get(image_digest(b"another preview"), key) is None
    assert cache.get(image, entries_key(parse_entries(FACES))) is None
    stats = cache.stats()
    assert (stats.answers, stats.by_origin, stats.hits, stats.misses) == (1, {"index": 1}, 1, 2)
    assert AnswerCache(tmp_path / "answers.sqlite3").get(image, key) == answer  # kept on disk
    assert cache.clear() == 1 and cache.get(image, key) is None


def test_it_stays_under_its_bound_dropping_the_least_recently_used(tmp_path: Path):
    cache = AnswerCache(tmp_path / "answers.sqlite3", max_bytes=20_000)
    answer = lambda i: os.urandom(1500) + bytes([i])  # noqa: E731 - incompressible answers of ~1.5 kB
    for i in range(5):
        cache.put(f"img{i}", "k", answer(i))
    with cache._connect() as conn:  # img2 was used just now (a hit refreshes its use)
        conn.execute("UPDATE answers SET used_at = used_at + 1000 WHERE image = 'img2'")
    for i in range(5, 40):
        cache.put(f"img{i}", "k", answer(i))
    stats = cache.stats()
    assert stats.bytes <= 20_000
    kept = {f"img{i}" for i in range(40) if cache.get(f"img{i}", "k") is not None}
    assert "img2" in kept and len(kept) == stats.answers >= 10
    newest = {f"img{i}" for i in range(40 - (len(kept) - 1), 40)}
    assert kept == newest | {"img2"}  # the others went oldest first


def test_threads_and_a_second_process_share_it(tmp_path: Path):
    path = tmp_path / "answers.sqlite3"
    cache = AnswerCache(path)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: cache.put(f"img{i}", "k", f"answer {i}".encode()), range(200)))
    assert cache.stats().answers == 200
    code = ("import sys; from immich_ml_desktop.server.answer_cache import AnswerCache; "
            "c = AnswerCache(sys.argv[1]); c.put('other', 'k', b'from another process'); print(c.get('img7', 'k').decode())")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "answer 7", out.stderr
    assert cache.get("other", "k") == b"from another process"


def test_a_damaged_cache_file_costs_time_not_answers(tmp_path: Path, caplog):
    path = tmp_path / "answers.sqlite3"
    AnswerCache(path).put("img", "k", b"answer")
    cache = AnswerCache(path)
    cache.close()
    path.write_bytes(b"this is not a database" * 1000)
    for wal in tmp_path.glob("answers.sqlite3-*"):
        wal.unlink()
    damaged = AnswerCache(path)  # set aside, started afresh
    assert damaged.get("img", "k") is None
    damaged.put("img", "k", b"answer")
    assert damaged.get("img", "k") == b"answer"
    assert "answer cache" in caplog.text.lower() and list(tmp_path.glob("answers.sqlite3.damaged-*"))
