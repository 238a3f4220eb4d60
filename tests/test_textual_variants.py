"""Text encoder variants on tiny models built here: SigLIP-style canonicalize, M-CLIP's two inputs,
NLLB language prefixes, and the context length / pad token from the pack's own configs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import CLIP_PACK
from immich_ml_desktop.models.engine import Engine


def _write_echo_model(path: Path, inputs: list[str], length: int) -> None:
    """A tiny ONNX text encoder whose 'embedding' is its (first) input tokens as floats, plus, for
    two inputs, the attention mask: lets tests see exactly what the tokenizer fed the model."""
    import onnx
    from onnx import TensorProto, helper

    graph_inputs = [helper.make_tensor_value_info(n, TensorProto.INT32, [1, length]) for n in inputs]
    nodes = [helper.make_node("Cast", [inputs[0]], ["ids_f"], to=TensorProto.FLOAT)]
    if len(inputs) == 2:
        nodes.append(helper.make_node("Cast", [inputs[1]], ["mask_f"], to=TensorProto.FLOAT))
        nodes.append(helper.make_node("Concat", ["ids_f", "mask_f"], ["embedding"], axis=1))
        out_len = 2 * length
    else:
        nodes.append(helper.make_node("Identity", ["ids_f"], ["embedding"]))
        out_len = length
    graph = helper.make_graph(nodes, "echo", graph_inputs, [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, out_len])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _pack(models_dir: Path, cache: Path, name: str, inputs: list[str], text_cfg: dict) -> None:
    src = models_dir / "clip" / CLIP_PACK / "textual"
    dst = cache / "clip" / name / "textual"
    dst.mkdir(parents=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / f, dst / f)
    length = text_cfg.get("context_length", 77)
    _write_echo_model(dst / "model.onnx", inputs, length)
    (cache / "clip" / name / "config.json").write_text(json.dumps({"embed_dim": length, "text_cfg": text_cfg}))


@pytest.fixture
def echo_engine(models_dir: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    _pack(models_dir, cache, "echo-plain", ["text"], {"context_length": 16})
    _pack(models_dir, cache, "echo-siglip", ["text"], {"context_length": 16, "tokenizer_kwargs": {"clean": "canonicalize"}})
    _pack(models_dir, cache, "echo-M-CLIP", ["input_ids", "attention_mask"], {"context_length": 16})
    _pack(models_dir, cache, "nllb-echo", ["text"], {"context_length": 16})  # Immich: names starting "nllb"
    with Engine(cache, "cpu", work_dir=tmp_path / "work") as engine:
        yield engine


def ids(engine: Engine, name: str, text: str, language: str | None = None) -> list[int]:
    return engine.clip_text(name, text, language).astype(int).tolist()


def test_padding_to_context_length_with_pad_token(echo_engine: Engine) -> None:
    tokens = ids(echo_engine, "echo-plain", "a photo of a cat")
    pad = echo_engine.clip_textual("echo-plain").tokenizer.token_to_id("<|endoftext|>")
    assert len(tokens) == 16
    assert tokens[-1] == pad and tokens.count(pad) >= 16 - 7
    assert ids(echo_engine, "echo-plain", "a   photo\n of a\tcat ") == tokens  # whitespace collapsed


def test_truncation_at_context_length(echo_engine: Engine) -> None:
    assert len(ids(echo_engine, "echo-plain", "word " * 100)) == 16


def test_canonicalize_drops_punctuation_and_case(echo_engine: Engine) -> None:
    assert ids(echo_engine, "echo-siglip", "Hello, World!") == ids(echo_engine, "echo-siglip", "hello world")
    assert ids(echo_engine, "echo-plain", "Hello, World!") != ids(echo_engine, "echo-plain", "hello world")


def _unpadded(models_dir: Path, text: str) -> list[int]:
    """The pack's tokenizer on its own, without padding: the real tokens of `text`."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(models_dir / "clip" / CLIP_PACK / "textual" / "tokenizer.json")).encode(text).ids


def test_mclip_gets_ids_and_attention_mask(echo_engine: Engine, models_dir: Path) -> None:
    out = ids(echo_engine, "echo-M-CLIP", "a cat")
    tokens, mask = out[:16], out[16:]
    real = _unpadded(models_dir, "a cat")
    pad = echo_engine.clip_textual("echo-M-CLIP").tokenizer.token_to_id("<|endoftext|>")
    assert 0 < len(real) < 16
    assert tokens == real + [pad] * (16 - len(real))  # the same ids a one-input model gets
    assert mask == [1] * len(real) + [0] * (16 - len(real))  # 1 on each real token, 0 on the padding
    assert tokens == ids(echo_engine, "echo-plain", "a cat")


def test_nllb_language_prefix(echo_engine: Engine) -> None:
    """As Immich's `tokenize`: the FLORES-200 code of the language glued before the text, a region dropped
    when the full code is unknown, eng_Latn for an unknown language, nothing without a language."""
    sent = lambda text, language=None: ids(echo_engine, "nllb-echo", text, language)  # noqa: E731
    plain = lambda text: ids(echo_engine, "echo-plain", text)  # noqa: E731
    assert sent("ein Hund", "de") == plain("deu_Latnein Hund")
    assert sent("un chien", "fr") == plain("fra_Latnun chien")
    assert sent("ein Hund", "de-AT") == plain("deu_Latnein Hund")
    assert sent("um cão", "pt_BR") == plain("por_Latnum cão")
    assert sent("a dog", "xx") == plain("eng_Latna dog")
    assert sent("a dog") == plain("a dog")
    assert ids(echo_engine, "echo-plain", "a dog", "de") == plain("a dog")  # only NLLB models get a prefix
