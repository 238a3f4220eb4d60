"""Export an open_clip model (any architecture + pretrained tag) into Immich's CLIP pack layout.

Writes `config.json`, `visual/model.onnx` + `preprocess_cfg.json`, `textual/model.onnx` + the Hugging
Face tokenizer files, the way Immich's own export scripts do, and checks the exported pack, run through
this app's engine, against PyTorch. Needs the optional extra `export` (torch, open-clip-torch).
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np
from PIL import Image

from immich_ml_desktop.errors import UserError
from immich_ml_desktop.models.base import ModelTask, clean_name

log = logging.getLogger(__name__)

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
# open_clip's SimpleTokenizer word pattern, as a split the `tokenizers` library applies before BPE.
_CLIP_WORD_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
PARITY_TEXTS = ("a photo of a dog", "Ein Foto von einem Strand bei Sonnenuntergang", "two people at a birthday party")


class ExportError(UserError):
    """An open_clip model cannot be exported (extra not installed, unknown architecture, no tokenizer)."""


@dataclass
class ExportResult:
    pack_dir: Path
    seconds: float
    file_sizes: dict[str, int]
    parity: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pack_dir": str(self.pack_dir),
            "seconds": round(self.seconds, 1),
            "file_sizes": self.file_sizes,
            "parity": self.parity,
        }


def _require_torch() -> tuple[Any, Any]:
    try:
        import open_clip
        import torch
    except ImportError as e:
        if getattr(sys, "frozen", False):  # the installed app: PyTorch is never bundled
            raise ExportError(
                "Exporting needs PyTorch and open_clip, which the installed app does not include: install the "
                "Python package with its export extra (pip install 'immich-ml-desktop[export]') and run "
                "`immich-ml-desktop models export-clip` from there; the app then uses the exported model."
            ) from None
        raise ExportError(
            f"Exporting needs PyTorch and open_clip ({e.name} is missing): "
            "pip install 'immich-ml-desktop[export]'"
        ) from None
    return torch, open_clip


def clip_bpe_tokenizer(bpe_path: Path | None = None) -> Any:
    """OpenAI CLIP's BPE tokenizer as a `tokenizers.Tokenizer` (what `tokenizer.json` holds), built
    from open_clip's own vocabulary file so no download is needed."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    if bpe_path is None:
        from open_clip.tokenizer import default_bpe

        bpe_path = Path(default_bpe())
    with gzip.open(bpe_path) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    byte_chars = list(_bytes_to_unicode().values())
    vocab_list = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + [SOT, EOT]
    vocab = {token: i for i, token in enumerate(vocab_list)}
    tokenizer = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=[(m[0], m[1]) for m in merges],
            unk_token=EOT,
            continuing_subword_prefix="",
            end_of_word_suffix="</w>",
            fuse_unk=False,
        )
    )
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CLIP_WORD_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tokenizer.post_processor = processors.RobertaProcessing(
        (EOT, vocab[EOT]), (SOT, vocab[SOT]), trim_offsets=False, add_prefix_space=False
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(SOT, normalized=False), AddedToken(EOT, normalized=False)])
    return tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=_json_default), encoding="utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _write_tokenizer(text_dir: Path, model_cfg: dict[str, Any]) -> None:
    text_cfg = model_cfg.get("text_cfg", {})
    context_length = int(text_cfg.get("context_length", 77))
    hf_name = text_cfg.get("hf_tokenizer_name")
    if hf_name:
        # Take the tokenizer files as published, the way Immich's exporter saves AutoTokenizer's.
        try:
            from huggingface_hub import hf_hub_download

            shutil.copyfile(hf_hub_download(hf_name, "tokenizer.json"), text_dir / "tokenizer.json")
            tokenizer_cfg = json.loads(Path(hf_hub_download(hf_name, "tokenizer_config.json")).read_text(encoding="utf-8"))
            try:
                specials = json.loads(Path(hf_hub_download(hf_name, "special_tokens_map.json")).read_text(encoding="utf-8"))
            except Exception:  # noqa: BLE001 - optional file
                specials = {k: v for k, v in tokenizer_cfg.items() if k.endswith("_token")}
        except Exception as e:  # noqa: BLE001 - any hub/network failure means the same to the user
            raise ExportError(
                f"This architecture uses the Hugging Face tokenizer {hf_name!r}, which could not be fetched ({e}). "
                "Export it on a machine with access to Hugging Face."
            ) from None
        tokenizer_cfg.setdefault("model_max_length", context_length)
    else:
        clip_bpe_tokenizer().save(str(text_dir / "tokenizer.json"))
        specials = {"bos_token": SOT, "eos_token": EOT, "pad_token": EOT, "unk_token": EOT}
        tokenizer_cfg = {**specials, "model_max_length": context_length, "tokenizer_class": "CLIPTokenizer"}
    _write_json(text_dir / "tokenizer_config.json", tokenizer_cfg)
    _write_json(text_dir / "special_tokens_map.json", specials)


def _onnx_export(torch: Any, module: Any, args: tuple[Any, ...], path: Path, input_name: str, dynamic_batch: bool, opset: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=[input_name],
            output_names=["embedding"],
            opset_version=opset,
            dynamic_axes={input_name: {0: "batch_size"}, "embedding": {0: "batch_size"}} if dynamic_batch else None,
            dynamo=False,  # the TorchScript exporter Immich's scripts use: one self-contained file
        )


def export_clip(
    arch: str,
    pretrained: str | None,
    cache_dir: Path,
    *,
    name: str | None = None,
    random_init: bool = False,
    seed: int = 0,
    opset: int = 17,
    dynamic_batch: bool = False,
    parity: bool = True,
    replace: bool = False,
    parity_photos: list[Image.Image] | None = None,
    say: Callable[[str], None] = lambda msg: log.info("%s", msg),
) -> ExportResult:
    """Export `arch` (+ `pretrained` weights, or random ones) into `<cache_dir>/clip/<name>/`.

    The pack is built in a temporary folder beside the target and moved into place only when complete.
    The parity check runs `parity_photos` (default: synthetic images) through both PyTorch and the engine.
    """
    torch, open_clip = _require_torch()
    if not random_init and not pretrained:
        raise ExportError("Give a pretrained tag (see `open_clip.list_pretrained()`) or --random-init.")
    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise ExportError(f"open_clip has no architecture {arch!r}; see open_clip.list_models().")
    name = clean_name(name or f"{arch}__{pretrained if not random_init else 'random-init'}")
    target = Path(cache_dir) / ModelTask.SEARCH.value / name
    if target.exists() and not replace:
        raise ExportError(f"{target} already exists; pass --replace to overwrite it.")

    start = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".export-{name}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the pack from other users of a shared cache
    try:
        visual_dir, text_dir = staging / "visual", staging / "textual"
        visual_dir.mkdir()
        text_dir.mkdir()
        _write_json(staging / "config.json", model_cfg)
        _write_tokenizer(text_dir, model_cfg)  # first: it may need the network and fail fast

        torch.manual_seed(seed)
        torch.backends.mha.set_fastpath_enabled(False)
        say(f"creating {arch} ({'random weights' if random_init else pretrained})")
        try:
            model = open_clip.create_model(arch, pretrained=None if random_init else pretrained, jit=False)
        except Exception as e:  # noqa: BLE001 - unknown tags, failed weight downloads, missing HF configs
            raise ExportError(f"open_clip could not create {arch} ({pretrained or 'random weights'}): {e}") from None
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
        _write_json(visual_dir / "preprocess_cfg.json", open_clip.get_model_preprocess_cfg(model))

        image_size = model_cfg["vision_cfg"]["image_size"]
        size = image_size if isinstance(image_size, int) else image_size[0]
        context_length = int(model_cfg.get("text_cfg", {}).get("context_length", 77))

        Module: Any = torch.nn.Module  # torch is optional: untyped here

        class _Visual(Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, image: Any) -> Any:
                return self.model.encode_image(image, normalize=True)

        class _Textual(Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, text: Any) -> Any:
                return self.model.encode_text(text, normalize=True)

        say("exporting visual encoder")
        _onnx_export(torch, _Visual(), (torch.randn(1, 3, size, size),), visual_dir / "model.onnx", "image", dynamic_batch, opset)
        say("exporting textual encoder")
        _onnx_export(
            torch, _Textual(), (torch.ones(1, context_length, dtype=torch.int32),), text_dir / "model.onnx", "text", dynamic_batch, opset
        )

        from immich_ml_desktop.model_store.store import write_manifest

        write_manifest(staging, source=f"open_clip export {arch} {'random-init' if random_init else pretrained}")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    seconds = time.perf_counter() - start
    sizes = {str(p.relative_to(target)): p.stat().st_size for p in sorted(target.rglob("*")) if p.is_file()}
    result = ExportResult(target, seconds, sizes)
    if parity:
        say("checking the exported pack against PyTorch")
        result.parity = parity_check(model, arch, target, parity_photos)
    return result


def parity_images(count: int = 3, seed: int = 0) -> list[Image.Image]:
    """Small synthetic photos of different sizes and aspect ratios (smooth shapes plus noise)."""
    rng = np.random.default_rng(seed)
    images = []
    for i, (w, h) in enumerate([(320, 240), (200, 300), (256, 256), (640, 360)][:count]):
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([xx / w, yy / h, ((xx + yy) % 97) / 97], axis=-1) * 200
        base += rng.normal(0, 25, size=(h, w, 3)) + 20 * i
        images.append(Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB"))
    return images


def parity_check(model: Any, arch: str, pack_dir: Path, images: list[Image.Image] | None = None, texts: tuple[str, ...] = PARITY_TEXTS) -> dict[str, float]:
    """Minimum cosine similarity between PyTorch's vectors and this app's engine on the exported pack."""
    torch, open_clip = _require_torch()
    from immich_ml_desktop.models.engine import Engine

    images = images or parity_images()
    cfg = open_clip.get_model_preprocess_cfg(model)
    preprocess = open_clip.image_transform(
        cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"], resize_mode=cfg.get("resize_mode"),
        interpolation=cfg.get("interpolation"), fill_color=cfg.get("fill_color", 0),
    )
    tokenizer = open_clip.get_tokenizer(arch)
    with torch.no_grad():
        torch_images = model.encode_image(torch.stack([preprocess(im) for im in images]), normalize=True).numpy()
        torch_texts = model.encode_text(tokenizer(list(texts)), normalize=True).numpy()
    with tempfile.TemporaryDirectory(prefix="export-parity-") as work, Engine(pack_dir.parent.parent, "cpu", work_dir=Path(work)) as engine:
        ours_images = np.stack([engine.clip_image(pack_dir.name, im) for im in images])
        ours_texts = np.stack([engine.clip_text(pack_dir.name, t) for t in texts])

    def min_cos(a: np.ndarray, b: np.ndarray) -> float:
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return float((a * b).sum(axis=1).min())

    return {"image_min_cosine": min_cos(torch_images, ours_images), "text_min_cosine": min_cos(torch_texts, ours_texts)}
