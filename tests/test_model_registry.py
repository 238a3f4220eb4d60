"""The model registry: a class per task, type AND model name; open tasks; collisions refused plainly;
classes from entry points. Registries are built fresh here (no built-in state is changed), except
where the engine and /predict must see a class, which is registered and taken out again."""

from __future__ import annotations

import json
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from immich_ml_desktop.errors import UserError
from immich_ml_desktop.models import registry
from immich_ml_desktop.models.base import InferenceModel, ModelNames, ModelTask, ModelType
from immich_ml_desktop.models.clip import ClipTextualEncoder, ClipVisualEncoder
from immich_ml_desktop.models.engine import Engine, UnsupportedTaskError
from immich_ml_desktop.models.facial_recognition import FaceDetector
from immich_ml_desktop.models.predict import to_json
from immich_ml_desktop.models.registry import ModelConflictError, ModelRegistrationError, Registry
from tests.conftest import CLIP_PACK, FACE_PACK, photo


def fresh() -> Registry:
    return Registry(plugins=False)


def visual(name: str, **attrs: Any) -> type[InferenceModel]:
    """A CLIP visual class of its own (defined here, outside the package)."""
    return type(name, (ClipVisualEncoder,), {"__module__": "plugin_under_test", **attrs})


def test_built_in_classes_serve_every_name() -> None:
    reg = fresh()
    assert reg.model_class("clip", "visual", "ViT-B-32__openai") is ClipVisualEncoder
    assert reg.model_class(ModelTask.SEARCH, ModelType.TEXTUAL, "anything-at-all") is ClipTextualEncoder
    assert reg.model_class("facial-recognition", "detection", "buffalo_l") is FaceDetector
    assert reg.model_class("clip", "audio", "x") is None and reg.model_class("tags", "visual", "x") is None


def test_a_class_serves_only_the_names_it_declares() -> None:
    reg = fresh()
    exact = reg.register(visual("Exact", model_names=ModelNames("my-clip", "immich-app/Other::Clip")))
    pattern = reg.register(visual("Pattern", model_names=ModelNames(pattern=r"squashed-.*")))
    assert reg.model_class("clip", "visual", "my-clip") is exact
    assert reg.model_class("clip", "visual", "MY-CLIP") is exact  # names compare as Immich's clean names, case ignored
    assert reg.model_class("clip", "visual", "Other__Clip") is exact
    assert reg.model_class("clip", "visual", "squashed-b32") is pattern
    assert reg.model_class("clip", "visual", "not-squashed-b32") is ClipVisualEncoder  # fullmatch, not search
    assert reg.model_class("clip", "visual", CLIP_PACK) is ClipVisualEncoder
    assert reg.model_class("clip", "textual", "my-clip") is ClipTextualEncoder  # per type: the textual side keeps its class
    assert reg.model_class("clip", "visual") is ClipVisualEncoder  # no name: the class for every other name


def test_a_check_on_the_pack_claims_by_files(tmp_path: Path) -> None:
    def has_marker(pack: Path) -> bool:
        """visual/squash.json is in the pack"""
        return (pack / "visual" / "squash.json").is_file()

    def broken(pack: Path) -> bool:
        raise RuntimeError("plugin bug")

    reg = fresh()
    by_files = reg.register(visual("ByFiles", model_names=ModelNames(check=has_marker)))
    reg.register(visual("Broken", model_names=ModelNames(check=broken)))
    (tmp_path / "clip" / "marked" / "visual").mkdir(parents=True)
    (tmp_path / "clip" / "marked" / "visual" / "squash.json").write_text("{}")
    (tmp_path / "clip" / "plain" / "visual").mkdir(parents=True)
    assert reg.model_class("clip", "visual", "marked", [tmp_path]) is by_files
    assert reg.model_class("clip", "visual", "plain", [tmp_path]) is ClipVisualEncoder  # the broken check says no
    assert reg.model_class("clip", "visual", "marked") is ClipVisualEncoder  # no cache to look in
    assert "packs where visual/squash.json is in the pack" in {c.names for c in reg.model_classes("clip", "visual")}


@pytest.mark.parametrize(
    "first, second, words",
    [
        (None, None, ["every other name", "ClipVisualEncoder", "model_names = ModelNames"]),
        (ModelNames("a", "shared"), ModelNames("SHARED"), ["the name 'SHARED'", "First"]),
        (ModelNames(pattern=r"sq-.*"), ModelNames("sq-1"), ["'sq-1' (matched by 'sq-.*')"]),
        (ModelNames("sq-1"), ModelNames(pattern=r"sq-.*"), ["'sq-1' (matched by 'sq-.*')"]),
        (ModelNames(pattern=r"sq-.*"), ModelNames(pattern=r"sq-.*"), ["names matching 'sq-.*'"]),
    ],
)
def test_two_classes_claiming_the_same_name_is_refused_at_registration(first, second, words) -> None:
    reg = fresh()
    if first is not None:
        reg.register(visual("First", model_names=first))
    with pytest.raises(ModelRegistrationError) as e:
        reg.register(visual("Second", model_names=second))
    message = str(e.value)
    assert "plugin_under_test:Second" in message and "clip/visual" in message
    assert all(w in message for w in words), message
    assert "\n" not in message
    assert reg.model_class("clip", "visual", "sq-1") is not None  # the registry is as it was


def test_overlapping_patterns_are_refused_when_a_request_names_the_model() -> None:
    reg = fresh()
    reg.register(visual("Wide", model_names=ModelNames(pattern=r"sq-.*")))
    reg.register(visual("Narrow", model_names=ModelNames(pattern=r".*-b32")))  # different patterns: allowed
    assert reg.model_class("clip", "visual", "sq-l14").__name__ == "Wide"
    with pytest.raises(ModelConflictError, match=r"'sq-b32' for clip/visual is claimed by both .*Wide.* and .*Narrow"):
        reg.model_class("clip", "visual", "sq-b32")


def test_registering_again_or_after_a_reimport_replaces_and_unregister_restores() -> None:
    reg = fresh()
    a = reg.register(visual("Mine", model_names=ModelNames("mine")))
    assert reg.register(a) is a  # the same class twice (a module that registers itself, and an entry point)
    b = reg.register(visual("Mine", model_names=ModelNames("mine")))  # its module imported again
    assert reg.model_class("clip", "visual", "mine") is b
    assert [c.cls for c in reg.model_classes("clip", "visual")] == [ClipVisualEncoder, b]
    reg.unregister(b)
    assert reg.model_class("clip", "visual", "mine") is ClipVisualEncoder


def test_a_new_task_and_type_open_the_enums() -> None:
    class Scorer(InferenceModel):
        identity = ("aesthetic-score", "aesthetic")
        depends = [("detection", "facial-recognition")]

    reg = fresh()
    with pytest.raises(ValueError):
        ModelTask("never-registered-task")
    reg.register(Scorer)
    assert reg.model_class("aesthetic", "aesthetic-score", "anything") is Scorer
    assert ModelTask("aesthetic").value == "aesthetic" and ModelType("aesthetic-score") is Scorer.identity[0]
    assert Scorer.depends == [(ModelType.DETECTION, ModelTask.FACIAL_RECOGNITION)]
    assert ("aesthetic", "aesthetic-score") in reg.served_tasks()
    assert ModelTask("aesthetic") not in list(ModelTask)  # iterating still gives Immich's tasks


@pytest.mark.parametrize(
    "cls, words",
    [
        (type("NoIdentity", (InferenceModel,), {}), "has no identity"),
        (type("Shouting", (InferenceModel,), {"identity": ("visual", "Tags!")}), "lower-case letters"),
        (type("BadNames", (InferenceModel,), {"identity": ("visual", "t"), "model_names": "x"}), "must be ModelNames"),
        (object, "not a subclass of InferenceModel"),
    ],
)
def test_malformed_classes_are_refused_plainly(cls: Any, words: str) -> None:
    with pytest.raises(ModelRegistrationError, match=words):
        fresh().register(cls)


def test_entry_points_register_classes_and_broken_plugins_are_left_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "good_plugin.py").write_text(textwrap.dedent("""
        from immich_ml_desktop.models.base import InferenceModel, ModelNames
        from immich_ml_desktop.models.clip import ClipVisualEncoder

        class Tagger(InferenceModel):
            identity = ("classification", "tags")

        class MyClip(ClipVisualEncoder):
            model_names = ModelNames("my-clip")

        class Thief(ClipVisualEncoder):  # no model_names: would take every CLIP model
            pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    group = registry.ENTRY_POINT_GROUP
    eps = [
        EntryPoint("both", "good_plugin:Tagger", group),
        EntryPoint("list", "good_plugin:MyClip", group),
        EntryPoint("thief", "good_plugin:Thief", group),
        EntryPoint("missing", "no_such_module:Model", group),
    ]
    reg = fresh()
    problems = reg.load_plugins(eps)
    assert reg.model_class("tags", "classification", "x").__name__ == "Tagger"
    assert reg.model_class("clip", "visual", "my-clip").__name__ == "MyClip"
    assert reg.model_class("clip", "visual", CLIP_PACK) is ClipVisualEncoder  # the thief was left out
    assert len(problems) == 2
    assert "thief = good_plugin:Thief was left out" in problems[0] and "ClipVisualEncoder" in problems[0]
    assert "missing = no_such_module:Model cannot be loaded (ModuleNotFoundError" in problems[1]
    assert reg.load_plugins(eps) == []  # each entry point once
    sources = {c.cls.__name__: c.source for c in reg.model_classes()}
    assert sources["Tagger"] == "entry point both = good_plugin:Tagger" and sources["ClipVisualEncoder"] == "built in"


# Through the engine and /predict (the process-wide registry) --------------------------------------


class FaceCounter(InferenceModel):
    """A new task that uses another task's output: the number of faces the detector found, per photo."""

    identity = ("count", "face-count")
    depends = [("detection", "facial-recognition")]

    def required_files(self) -> list[Path]:
        return []

    def _load(self) -> None:  # type: ignore[override]
        return None

    def _predict(self, inputs: Any, faces: dict[str, np.ndarray], **options: Any) -> int:
        return int(faces["boxes"].shape[0])


class OnlyNamed(InferenceModel):
    identity = ("classification", "named-only")
    model_names = ModelNames("the-one")


@pytest.fixture
def global_classes():
    for cls in (FaceCounter, OnlyNamed):
        registry.register(cls)
    yield
    for cls in (FaceCounter, OnlyNamed):
        registry.unregister(cls)


def test_a_new_task_gets_another_tasks_output_through_predict(global_classes, cpu_engine: Engine) -> None:
    image = photo("insightface/t1.jpg").read_bytes()
    entries = {
        "face-count": {"count": {"modelName": "any"}},  # listed first: still runs after what it depends on
        "facial-recognition": {"detection": {"modelName": FACE_PACK, "options": {"minScore": 0.7}}},
    }
    answer = json.loads(to_json(cpu_engine.predict_entries(entries, image=image)))
    assert answer["face-count"] == len(answer["facial-recognition"]["boxes"]) == 6
    assert {"imageHeight", "imageWidth"} <= set(answer)
    with pytest.raises(UserError, match="depends on output of detection"):
        cpu_engine.predict_entries({"face-count": {"count": {"modelName": "any"}}}, image=image)


def test_a_name_no_class_claims_is_unsupported(global_classes, cpu_engine: Engine) -> None:
    assert cpu_engine.get_model("named-only", "classification", "the-one", load=False).__class__ is OnlyNamed
    with pytest.raises(UnsupportedTaskError, match=r"No model class here serves 'another' for named-only/classification \(OnlyNamed serves the-one\)") as e:
        cpu_engine.get_model("named-only", "classification", "another")
    assert e.value.http_status == 422
    with pytest.raises(UnsupportedTaskError, match="Task 'never-seen' of type 'visual' is not served"):
        cpu_engine.get_model("never-seen", "visual", "x")
