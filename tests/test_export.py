"""open_clip export into Immich's layout: tokenizer, a small random-init architecture exported and run
through the engine against PyTorch (cosine >= 0.9999).

Needs the `export` extra (torch, open-clip-torch); without it these tests skip, except the one that checks
the command's message when torch is missing. They run in the `export` lane (README, Development): a venv of
their own with the extra and a CPU PyTorch, here and in GitHub's `export` job.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from PIL import Image

from immich_ml_desktop.cli import main
from immich_ml_desktop.model_store.store import ModelStore
from tests.conftest import CLIP_PACK, photo

HAVE_EXPORT = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("open_clip") is not None
needs_export = pytest.mark.skipif(
    not HAVE_EXPORT, reason="torch and open_clip are not installed (pip install 'immich-ml-desktop[export]')"
)

# The tiny pack's shape: 2 layers of width 64 in each tower, CLIP's 49408-token vocabulary.
TINY_ARCH = "tiny-export-test"
TINY_CONFIG = {
    "embed_dim": 256,
    "vision_cfg": {"image_size": 96, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TEXTS = ["a photo of a cat", "an astronaut in a white suit", "Grandma's 80th birthday, 2019 — Zürich", "  TWO   dogs!!  "]


@pytest.fixture(scope="module")
def tiny_arch(tmp_path_factory: pytest.TempPathFactory) -> str:
    import open_clip

    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(folder)
    return TINY_ARCH


@pytest.mark.skipif(HAVE_EXPORT, reason="checks the message shown when the export extra is missing")
def test_export_without_torch_says_what_to_install(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "export-clip", "ViT-B-32", "--random-init", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "immich-ml-desktop[export]" in err and err.count("\n") == 1


@needs_export
def test_clip_tokenizer_matches_the_packs_and_open_clips(models_dir: Path) -> None:
    import open_clip
    from tokenizers import Tokenizer

    from immich_ml_desktop.model_store.export import clip_bpe_tokenizer

    ours = clip_bpe_tokenizer()
    shipped = Tokenizer.from_file(str(models_dir / "clip" / CLIP_PACK / "textual" / "tokenizer.json"))
    reference = open_clip.get_tokenizer("ViT-B-32")
    for text in TEXTS:
        ids = ours.encode(text).ids
        assert ids == shipped.encode(text).ids
        expected = [int(t) for t in reference([text])[0] if t != 0]
        assert ids == expected, text


@needs_export
def test_export_random_init_matches_pytorch(tiny_arch: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["models", "export-clip", tiny_arch, "--random-init", "--name", "tiny-export", "--cache-dir", str(tmp_path), "--json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    pack = tmp_path / "clip" / "tiny-export"
    assert result["pack_dir"] == str(pack)
    assert result["parity"]["image_min_cosine"] >= 0.9999
    assert result["parity"]["text_min_cosine"] >= 0.9999
    assert set(result["file_sizes"]) >= {
        "config.json",
        "visual/model.onnx",
        "visual/preprocess_cfg.json",
        "textual/model.onnx",
        "textual/tokenizer.json",
        "textual/tokenizer_config.json",
        "textual/special_tokens_map.json",
    }
    assert json.loads((pack / "config.json").read_text())["embed_dim"] == 256
    assert json.loads((pack / "visual" / "preprocess_cfg.json").read_text())["size"] == [96, 96]
    report = ModelStore(tmp_path).verify("tiny-export")
    assert report.status == "complete" and report.managed
    assert main(argv) == 2  # refuses to overwrite without --replace
    assert "--replace" in capsys.readouterr().err


@needs_export
def test_export_parity_on_real_photos(tiny_arch: str, tmp_path: Path) -> None:
    from immich_ml_desktop.models.engine import Engine
    from immich_ml_desktop.model_store.export import export_clip

    photos = [
        Image.open(photo("insightface/t1.jpg")).convert("RGB"),
        Image.open(photo("immich_test_assets/albums/nature/prairie_falcon.jpg")).convert("RGB"),
    ]
    result = export_clip(tiny_arch, None, tmp_path, name="tiny-photos", random_init=True, seed=7, dynamic_batch=True, parity_photos=photos)
    assert min(result.parity.values()) >= 0.9999
    with Engine(tmp_path, "cpu", work_dir=tmp_path / "work") as engine:
        batch = engine.clip_visual("tiny-photos").encode_images(photos)
        assert batch.shape == (2, 256)
        single = engine.clip_image("tiny-photos", photos[1])
    assert abs(float(batch[1] @ single) / float((batch[1] ** 2).sum() ** 0.5 * (single**2).sum() ** 0.5) - 1) < 1e-5


@needs_export
def test_export_errors_are_clear(tmp_path: Path) -> None:
    from immich_ml_desktop.model_store.export import ExportError, export_clip

    with pytest.raises(ExportError, match="no architecture"):
        export_clip("ViT-Nope-99", "openai", tmp_path)
    with pytest.raises(ExportError, match="--random-init"):
        export_clip("ViT-B-32", None, tmp_path)


@needs_export
def test_export_of_a_model_with_a_hub_tokenizer_fails_clearly_offline(tmp_path: Path) -> None:
    """SigLIP's tokenizer lives on Hugging Face; offline (as conftest sets) the export stops at once."""
    from immich_ml_desktop.model_store.export import ExportError, export_clip

    with pytest.raises(ExportError, match="Hugging Face tokenizer"):
        export_clip("ViT-B-16-SigLIP", None, tmp_path, random_init=True)
    assert not (tmp_path / "clip" / "ViT-B-16-SigLIP__random-init").exists()
    assert list((tmp_path / "clip").iterdir()) == []  # no staging folder left behind
