"""README's "Adding a new model", run as written.

Its code blocks are cut out of README.md into a package outside immich_ml_desktop: the two modules and
a distribution whose `immich_ml_desktop.models` entry points are those of the README's pyproject.toml,
found by importlib.metadata as a pip-installed package would be. The tagger runs on a tiny ONNX model
built here, the CLIP variant on a copy of the shared tiny CLIP pack. Both are served by a real MlServer
on 127.0.0.1 and stored by the index job; CLIP and face answers stay byte for byte what they were
before the classes were registered.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from immich_ml_desktop.cli import main
from immich_ml_desktop.errors import UserError
from immich_ml_desktop.library.folders import FolderSource
from immich_ml_desktop.library.store import LibraryStore
from immich_ml_desktop.model_store.fetcher import ModelFetcher
from immich_ml_desktop.models import registry
from immich_ml_desktop.models.clip import ClipTextualEncoder, ClipVisualEncoder, serialize_embedding
from immich_ml_desktop.models.engine import Engine
from immich_ml_desktop.models.facial_recognition import FaceDetector, FaceRecognizer
from immich_ml_desktop.server.ml_server import MlServer
from immich_ml_desktop.services.index import IndexJob, TaskSpec
from tests.conftest import CLIP_PACK, FACE_PACK, ROOT, photo
from tests.test_ml_server import _RecordingMlService, predict

tomllib = pytest.importorskip("tomllib", reason="reading the README's pyproject.toml block needs Python 3.11+")

TAGS = "colour-tags"  # the tagger pack this test builds
SQUASHED = "squashed-tiny-clip"  # a copy of the tiny CLIP pack, under a name SquashedClipVisual claims
LABELS = ["red", "green", "blue"]
COLOURS = {"red": (230, 20, 10), "green": (15, 210, 30), "blue": (20, 25, 240)}
PLUGIN_MODULES = ("my_tagger", "my_clip")


def readme_blocks() -> dict[str, str]:
    """The code blocks of README's section, by the file their first line names (`# my_tagger.py`)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Adding a new model"):]
    section = section[: section.index("\n## ", 1)]
    blocks = {}
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, re.S):
        first = body.splitlines()[0]
        name = first[2:].strip() if first.startswith("# ") and first.endswith(".py") else {"toml": "pyproject.toml"}.get(lang)
        if name:
            blocks[name] = body
    return blocks


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's package, installed as pip would: its modules and a dist-info with its entry points."""
    blocks = readme_blocks()
    assert set(blocks) >= {"my_tagger.py", "my_clip.py", "pyproject.toml"}, "README's section lost an example"
    folder = tmp_path_factory.mktemp("readme-plugin")
    for module in PLUGIN_MODULES:
        (folder / f"{module}.py").write_text(blocks[f"{module}.py"], encoding="utf-8")
    eps = tomllib.loads(blocks["pyproject.toml"])["project"]["entry-points"][registry.ENTRY_POINT_GROUP]
    info = folder / "readme_models-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: readme-models\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    return folder


def build_tagger(path: Path) -> None:
    """A colour tagger: mean colour x 20 -> softmax over red, green, blue (input `image`, 1x3x64x64)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.eye(3, dtype=np.float32) * 20, "W")
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
        ],
        "colour-tags",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def expected_tags(rgb: tuple[int, int, int]) -> list[tuple[str, float]]:
    logits = np.array(rgb, np.float32) / 255 * 20
    scores = np.exp(logits - logits.max())
    scores /= scores.sum()
    return sorted(zip(LABELS, scores.tolist()), key=lambda t: -t[1])


def png(rgb: tuple[int, int, int], size: tuple[int, int] = (80, 60)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, rgb).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("plugin-cache")
    pack = folder / "tags" / TAGS / "classification"
    build_tagger(pack / "model.onnx")
    (pack / "labels.json").write_text(json.dumps(LABELS))
    shutil.copytree(models_dir / "clip" / CLIP_PACK, folder / "clip" / SQUASHED)
    return folder


def make_engine(cache: Path, models_dir: Path, work_dir: Path) -> Engine:
    return Engine([cache, models_dir], "cpu", work_dir=work_dir)


REQUESTS = {
    "clip-visual": ({"clip": {"visual": {"modelName": CLIP_PACK}}}, "image"),
    "clip-textual": ({"clip": {"textual": {"modelName": CLIP_PACK}}}, "text"),
    "faces": ({"facial-recognition": {"detection": {"modelName": FACE_PACK, "options": {"minScore": 0.7}},
                                      "recognition": {"modelName": FACE_PACK}}}, "image"),
    "squashed-visual": ({"clip": {"visual": {"modelName": SQUASHED}}}, "image"),
}


def answers(engine: Engine) -> dict[str, bytes]:
    image = photo("insightface/t1.jpg").read_bytes()  # 6 faces, not square: crop and squash differ
    with MlServer(engine, "127.0.0.1", 0) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        out = {}
        for label, (entries, kind) in REQUESTS.items():
            r = predict(c, entries, image=image) if kind == "image" else predict(c, entries, text="a dog on a beach")
            assert r.status_code == 200, r.text
            out[label] = r.content
    return out


@pytest.fixture(scope="module")
def before(cache: Path, models_dir: Path, work_dir: Path) -> dict[str, bytes]:
    """Answers before the README's classes exist (squashed-tiny-clip is then an ordinary CLIP pack)."""
    assert registry.model_class("clip", "visual", SQUASHED, [cache]) is ClipVisualEncoder
    with make_engine(cache, models_dir, work_dir) as engine:
        with MlServer(engine, "127.0.0.1", 0) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
            r = predict(c, {"tags": {"classification": {"modelName": TAGS}}}, image=png(COLOURS["red"]))
            assert r.status_code == 422 and "--forward" in r.json()["detail"]  # no such task yet
        return answers(engine)


@pytest.fixture(scope="module")
def plugins(before: dict[str, bytes], plugin_dir: Path):
    """The README's package on sys.path, its entry points loaded into the app's registry (and out again)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(plugin_dir))
        problems = registry.load_plugins()
        assert not [p for p in problems if "my_" in p], problems
        classes = {c.cls.__name__: c for c in registry.model_classes() if c.cls.__module__ in PLUGIN_MODULES}
        assert set(classes) == {"ImageTagger", "SquashedClipVisual"}
        try:
            yield classes
        finally:
            for info in classes.values():
                registry.unregister(info.cls)
            for module in PLUGIN_MODULES:
                sys.modules.pop(module, None)


def test_the_new_task_is_served_by_serve_as_immich_shapes_answers(plugins, before, cache: Path, models_dir: Path, work_dir: Path) -> None:
    tags = {"tags": {"classification": {"modelName": TAGS}}}
    assert "readme-models 0.1" in plugins["ImageTagger"].source
    with make_engine(cache, models_dir, work_dir) as engine, MlServer(engine, "127.0.0.1", 0) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as c:
        for colour, rgb in COLOURS.items():
            r = predict(c, tags, image=png(rgb))
            assert r.status_code == 200, r.text
            body = r.json()
            assert set(body) == {"tags", "imageHeight", "imageWidth"} and (body["imageWidth"], body["imageHeight"]) == (80, 60)
            assert [t["label"] for t in body["tags"]] == [label for label, _ in expected_tags(rgb)]
            assert body["tags"][0]["label"] == colour
            np.testing.assert_allclose([t["score"] for t in body["tags"]], [s for _, s in expected_tags(rgb)], rtol=1e-3, atol=1e-6)

        # The entry's options reach _predict; the task sits next to Immich's in one request.
        r = predict(c, {"tags": {"classification": {"modelName": TAGS, "options": {"minScore": 0.5}}},
                        "clip": {"visual": {"modelName": CLIP_PACK}}}, image=photo("insightface/t1.jpg").read_bytes())
        assert r.status_code == 200, r.text
        assert len(r.json()["tags"]) == 1 and r.json()["clip"] == json.loads(before["clip-visual"])["clip"]

        r = predict(c, tags, text="red")
        assert r.status_code == 400 and "needs an image" in r.json()["detail"]
        r = predict(c, {"colours": {"classification": {"modelName": TAGS}}}, image=png(COLOURS["red"]))
        assert r.status_code == 422 and "'colours'" in r.json()["detail"]  # unknown tasks: refused as before

        routes = {(x["task"], x["type"]): x for x in srv.served_tasks()}  # what the Server page lists
        assert routes[("tags", "classification")]["route"] == "local"
        assert [k["class"] for k in routes[("tags", "classification")]["classes"]] == ["my_tagger:ImageTagger"]
        assert [k["class"].rsplit(":", 1)[1] for k in routes[("clip", "visual")]["classes"]] == ["ClipVisualEncoder", "SquashedClipVisual"]
        assert srv.plugin_problems() == []
        # A tagger named like one of Immich's CLIP packs is not fetched as that pack.
        fetcher = ModelFetcher(cache)
        assert not fetcher.knows(engine.get_model("tags", "classification", "ViT-B-32__openai", load=False))
        assert fetcher.knows(engine.get_model("clip", "visual", "ViT-B-32__openai", load=False))

    # With --forward, a task no class serves is handed on; the new one is answered here.
    other = _RecordingMlService()
    try:
        with make_engine(cache, models_dir, work_dir) as engine, \
                MlServer(engine, "127.0.0.1", 0, forward_url=other.url) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
            assert predict(c, {"image-classification": {"classification": {"modelName": "x"}}}, image=png(COLOURS["red"])).status_code == 200
            assert predict(c, tags, image=png(COLOURS["red"])).json()["tags"][0]["label"] == "red"
            assert (len(other.received), srv.stats.forwarded) == (1, 1)
    finally:
        other.close()


def test_clip_and_face_answers_are_unchanged(plugins, before, cache: Path, models_dir: Path, work_dir: Path) -> None:
    with make_engine(cache, models_dir, work_dir) as engine:
        after = answers(engine)
        assert type(engine.get_model("clip", "visual", CLIP_PACK)) is ClipVisualEncoder
        assert type(engine.get_model("clip", "textual", CLIP_PACK)) is ClipTextualEncoder
        assert type(engine.get_model("facial-recognition", "detection", FACE_PACK)) is FaceDetector
        assert type(engine.get_model("facial-recognition", "recognition", FACE_PACK)) is FaceRecognizer
    for label in ("clip-visual", "clip-textual", "faces"):
        assert after[label] == before[label], f"{label} answer changed after registering the README's classes"
    assert len(json.loads(after["faces"])["facial-recognition"]) == 6


def test_the_existing_task_class_serves_its_names_only(plugins, before, cache: Path, models_dir: Path, work_dir: Path) -> None:
    squashed_cls = plugins["SquashedClipVisual"].cls
    assert registry.model_class("clip", "textual", SQUASHED) is ClipTextualEncoder  # its textual side keeps its class
    with make_engine(cache, models_dir, work_dir) as engine:
        after = answers(engine)
        model = engine.get_model("clip", "visual", SQUASHED)
        assert type(model) is squashed_cls
        # The answer is the pack's model on the whole photo squashed to 224x224, computed here without the class.
        image = Image.open(photo("insightface/t1.jpg")).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
        cfg = json.loads((cache / "clip" / SQUASHED / "visual" / "preprocess_cfg.json").read_text())
        pixels = ((np.asarray(image, np.float32) / 255 - np.array(cfg["mean"], np.float32)) / np.array(cfg["std"], np.float32))
        expected = model.session.run(None, {model.input_name: pixels.transpose(2, 0, 1)[np.newaxis].astype(np.float32)})[0][0]
    got = np.array(json.loads(json.loads(after["squashed-visual"])["clip"]), np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert after["squashed-visual"] != before["squashed-visual"]  # before: centre-cropped by ClipVisualEncoder
    assert json.loads(after["squashed-visual"])["clip"] == serialize_embedding(got)


def test_the_index_job_stores_the_new_task_and_reads_it_back(
    plugins, cache: Path, models_dir: Path, work_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for colour, rgb in COLOURS.items():
        (folder / f"{colour}.png").write_bytes(png(rgb))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    library = tmp_path / "library.sqlite3"

    # The CLI, as a user runs it: only the new task, by TASK=MODEL.
    assert main(["index", str(folder), "--library", str(library), "--cache-dir", str(cache), "--device", "cpu",
                 "--no-clip", "--no-faces", "--task", f"tags={TAGS}", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["indexed"], summary["failed"], summary["results"]) == (3, 1, 3)

    assert main(["results", "tags", "--library", str(library), "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert sorted(Path(r["key"]).stem for r in exported) == sorted(COLOURS)
    with make_engine(cache, models_dir, work_dir) as engine:
        for row in exported:  # exactly what /predict answers for the same photo
            answer = engine.predict_entries({"tags": {"classification": {"modelName": TAGS}}}, image=Path(row["key"]).read_bytes())
            assert (row["task"], row["model"]) == ("tags", TAGS)
            assert row["result"] == json.loads(json.dumps(answer["tags"]))
            assert row["result"][0]["label"] == Path(row["key"]).stem

    assert main(["stats", "--library", str(library), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["results"] == {"tags": {TAGS: 3}} and stats["models"]["tags"] == [TAGS]
    assert (stats["indexed"], stats["failed"]) == (3, 1)
    assert [(f["task"], Path(f["path"]).name) for f in stats["failures"]] == [("tags", "broken.jpg")]

    # The job itself: nothing left to do; a photo that changed gets its new answer, with CLIP alongside.
    with LibraryStore(library) as store, make_engine(cache, models_dir, work_dir) as engine:
        job = lambda: IndexJob(store, engine, FolderSource([folder]), clip_model=None, face_model=None,  # noqa: E731
                               tasks=[TaskSpec("tags", TAGS)])
        assert job().run().total == 0
        red = folder / "red.png"
        red.write_bytes(png(COLOURS["blue"], size=(81, 60)))
        os.utime(red, ns=(red.stat().st_atime_ns, red.stat().st_mtime_ns + 10**9))
        summary2 = job().run()
        assert (summary2.changed, summary2.indexed, summary2.results) == (1, 1, 1)
        assert {Path(r.key).stem: r.result[0]["label"] for r in store.task_results("tags")}["red"] == "blue"
        both = IndexJob(store, engine, FolderSource([folder]), clip_model=SQUASHED, face_model=None, tasks=[TaskSpec("tags", TAGS)])
        assert both.run().indexed == 3
        assert store.stats(clip_model=SQUASHED)["clip"] == 3 and store.result_counts() == {"tags": {TAGS: 3}}

    # Before the first photo: a task no class serves, a model that is not there.
    for spec, words in ((TaskSpec("colours", TAGS), f"No model class here serves '{TAGS}' for a task 'colours'"),
                        (TaskSpec("tags", "nope"), "Model 'nope' (tags classification) is not in the model cache")):
        with LibraryStore(library) as store, make_engine(cache, models_dir, work_dir) as engine:
            with pytest.raises(UserError, match=re.escape(words)):
                IndexJob(store, engine, FolderSource([folder]), clip_model=None, face_model=None, tasks=[spec]).run()
    assert main(["results", "colours", "--library", str(library)]) == 2
    assert "holds no 'colours' results (tasks it holds: tags)" in capsys.readouterr().err


def test_models_list_shows_the_classes_of_an_installed_package(plugin_dir: Path, cache: Path) -> None:
    """A separate process, as after `pip install`: the entry points are found at start-up."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "immich_ml_desktop", "models", "list", "--cache-dir", str(cache), *args],
                              capture_output=True, text=True, env=env, timeout=120)

    listed = run("--json")
    assert listed.returncode == 0, listed.stderr
    assert "warning" not in listed.stderr
    rows = {(r["task"], r["name"]): r for r in json.loads(listed.stdout)}
    assert rows[("tags", TAGS)]["classes"] == {"classification": "my_tagger:ImageTagger"}
    assert rows[("tags", TAGS)]["installed"] and rows[("tags", TAGS)]["path"] == str(cache / "tags" / TAGS)
    assert rows[("clip", SQUASHED)]["classes"] == {
        "textual": "immich_ml_desktop.models.clip:ClipTextualEncoder", "visual": "my_clip:SquashedClipVisual"}
    assert rows[("clip", "ViT-B-32__openai")]["classes"]["visual"] == "immich_ml_desktop.models.clip:ClipVisualEncoder"
    assert rows[("facial-recognition", "buffalo_l")]["classes"] == {
        "detection": "immich_ml_desktop.models.facial_recognition:FaceDetector",
        "recognition": "immich_ml_desktop.models.facial_recognition:FaceRecognizer"}

    classes = run("--classes", "--json")
    assert classes.returncode == 0, classes.stderr
    by_class = {c["class"]: c for c in json.loads(classes.stdout)}
    assert by_class["my_tagger:ImageTagger"] == {
        "task": "tags", "type": "classification", "class": "my_tagger:ImageTagger", "names": "every other name",
        "source": "entry point tags = my_tagger:ImageTagger (readme-models 0.1)"}
    assert by_class["my_clip:SquashedClipVisual"]["names"] == "names matching 'squashed-.*'"
    assert by_class["immich_ml_desktop.models.clip:ClipVisualEncoder"]["source"] == "built in"

    text = run("--task", "tags")
    assert text.returncode == 0 and re.search(rf"^{TAGS}\s+tags\s+-\s+classification=ImageTagger\s+{re.escape(str(cache))}", text.stdout, re.M), text.stdout
