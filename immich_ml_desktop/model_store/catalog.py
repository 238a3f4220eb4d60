"""Immich's model names with their embedding dimensions, and custom packs found in a model cache.

The CLIP names and dimensions are those the Immich server accepts (its `CLIP_MODEL_INFO`); the face
models are Immich's insightface packs. A folder in a cache with the right layout is usable too, as a
custom model whose dimension is read from its own files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterable

from immich_ml_desktop.models.base import ModelTask, clean_name

# Files that must be present for a pack of each task to load (Immich's layout inside `<task>/<name>/`).
REQUIRED_FILES: dict[ModelTask, tuple[str, ...]] = {
    ModelTask.SEARCH: (
        "config.json",
        "visual/model.onnx",
        "visual/preprocess_cfg.json",
        "textual/model.onnx",
        "textual/tokenizer.json",
        "textual/tokenizer_config.json",
    ),
    ModelTask.FACIAL_RECOGNITION: ("detection/model.onnx", "recognition/model.onnx"),
}

# Sub-folders of a pack that hold its models, per task.
MODEL_FOLDERS: dict[ModelTask, tuple[str, ...]] = {
    ModelTask.SEARCH: ("visual", "textual"),
    ModelTask.FACIAL_RECOGNITION: ("detection", "recognition"),
}


@dataclass(frozen=True)
class CatalogEntry:
    """One model a user can pick: Immich's name, its task, and the length of the vectors it gives."""

    name: str
    task: ModelTask
    dim: int
    family: str  # openai, laion, dfn, siglip, siglip2, mclip, nllb, insightface, custom
    multilingual: bool = False
    custom: bool = False
    path: Path | None = None  # the folder of a custom model

    @property
    def repo_id(self) -> str:
        """Where Immich publishes the pack on Hugging Face."""
        return f"immich-app/{self.name}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task.value,
            "dim": self.dim,
            "family": self.family,
            "multilingual": self.multilingual,
            "custom": self.custom,
            "path": str(self.path) if self.path else None,
        }


def _family(name: str) -> tuple[str, bool]:
    lower = name.lower()
    if lower.startswith("nllb"):
        return "nllb", True
    if lower.startswith(("xlm-roberta", "labse")):
        return "mclip", True
    if "siglip2" in lower:
        return "siglip2", True  # SigLIP 2 was trained on multilingual WebLI
    if "siglip" in lower:
        return "siglip", "i18n" in lower
    if "dfn" in lower:
        return "dfn", False
    if "openai" in lower:
        return "openai", False
    return "laion", False


# name -> embedding dimension, as the Immich server's CLIP_MODEL_INFO lists them.
_CLIP_DIMS: dict[str, int] = {
    "RN101__openai": 512,
    "RN101__yfcc15m": 512,
    "ViT-B-16__laion400m_e31": 512,
    "ViT-B-16__laion400m_e32": 512,
    "ViT-B-16__openai": 512,
    "ViT-B-32__laion2b-s34b-b79k": 512,
    "ViT-B-32__laion2b_e16": 512,
    "ViT-B-32__laion400m_e31": 512,
    "ViT-B-32__laion400m_e32": 512,
    "ViT-B-32__openai": 512,
    "XLM-Roberta-Base-ViT-B-32__laion5b_s13b_b90k": 512,
    "XLM-Roberta-Large-Vit-B-32": 512,
    "RN50x4__openai": 640,
    "ViT-B-16-plus-240__laion400m_e31": 640,
    "ViT-B-16-plus-240__laion400m_e32": 640,
    "XLM-Roberta-Large-Vit-B-16Plus": 640,
    "LABSE-Vit-L-14": 768,
    "RN50x16__openai": 768,
    "ViT-B-16-SigLIP-256__webli": 768,
    "ViT-B-16-SigLIP-384__webli": 768,
    "ViT-B-16-SigLIP-512__webli": 768,
    "ViT-B-16-SigLIP-i18n-256__webli": 768,
    "ViT-B-16-SigLIP__webli": 768,
    "ViT-L-14-336__openai": 768,
    "ViT-L-14-quickgelu__dfn2b": 768,
    "ViT-L-14__laion2b-s32b-b82k": 768,
    "ViT-L-14__laion400m_e31": 768,
    "ViT-L-14__laion400m_e32": 768,
    "ViT-L-14__openai": 768,
    "XLM-Roberta-Large-Vit-L-14": 768,
    "nllb-clip-base-siglip__mrl": 768,
    "nllb-clip-base-siglip__v1": 768,
    "RN50__cc12m": 1024,
    "RN50__openai": 1024,
    "RN50__yfcc15m": 1024,
    "RN50x64__openai": 1024,
    "ViT-H-14-378-quickgelu__dfn5b": 1024,
    "ViT-H-14-quickgelu__dfn5b": 1024,
    "ViT-H-14__laion2b-s32b-b79k": 1024,
    "ViT-L-16-SigLIP-256__webli": 1024,
    "ViT-L-16-SigLIP-384__webli": 1024,
    "ViT-g-14__laion2b-s12b-b42k": 1024,
    "XLM-Roberta-Large-ViT-H-14__frozen_laion5b_s13b_b90k": 1024,
    "ViT-SO400M-14-SigLIP-384__webli": 1152,
    "nllb-clip-large-siglip__mrl": 1152,
    "nllb-clip-large-siglip__v1": 1152,
    "ViT-B-16-SigLIP2__webli": 768,
    "ViT-B-32-SigLIP2-256__webli": 768,
    "ViT-L-16-SigLIP2-256__webli": 1024,
    "ViT-L-16-SigLIP2-384__webli": 1024,
    "ViT-L-16-SigLIP2-512__webli": 1024,
    "ViT-SO400M-14-SigLIP2__webli": 1152,
    "ViT-SO400M-14-SigLIP2-378__webli": 1152,
    "ViT-SO400M-16-SigLIP2-256__webli": 1152,
    "ViT-SO400M-16-SigLIP2-384__webli": 1152,
    "ViT-SO400M-16-SigLIP2-512__webli": 1152,
    "ViT-gopt-16-SigLIP2-256__webli": 1536,
    "ViT-gopt-16-SigLIP2-384__webli": 1536,
}

# Immich's insightface packs; all four recognisers give 512-d vectors.
_FACE_MODELS = ("buffalo_l", "buffalo_m", "buffalo_s", "antelopev2")

_CATALOG: dict[str, CatalogEntry] = {}
for _name, _dim in sorted(_CLIP_DIMS.items(), key=lambda kv: (kv[1], kv[0].lower())):
    _fam, _multi = _family(_name)
    _CATALOG[_name.lower()] = CatalogEntry(_name, ModelTask.SEARCH, _dim, _fam, _multi)
for _name in _FACE_MODELS:
    _CATALOG[_name] = CatalogEntry(_name, ModelTask.FACIAL_RECOGNITION, 512, "insightface")


def lookup(name: str) -> CatalogEntry | None:
    """The catalogue entry for an Immich model name (`immich-app/` prefix, `:` and case tolerated)."""
    return _CATALOG.get(clean_name(name).lower())


def entries(task: ModelTask | None = None, cache_dirs: Iterable[Path] = ()) -> list[CatalogEntry]:
    """Every catalogued model (of one task, if given), then custom packs found in `cache_dirs`."""
    found = [e for e in _CATALOG.values() if task is None or e.task == task]
    seen = {e.name.lower() for e in found}
    for entry in custom_entries(cache_dirs):
        if entry.name.lower() not in seen and (task is None or entry.task == task):
            seen.add(entry.name.lower())
            found.append(entry)
    return found


def custom_entries(cache_dirs: Iterable[Path]) -> list[CatalogEntry]:
    """Packs in the caches that the catalogue does not name, with dimensions read from their files."""
    result = []
    for cache in cache_dirs:
        for task in REQUIRED_FILES:
            folder = Path(cache) / task.value
            if not folder.is_dir():
                continue
            for pack in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
                if lookup(pack.name) is None:
                    entry = custom_entry(pack, task)
                    if entry is not None:
                        result.append(entry)
    return result


def custom_entry(pack_dir: Path, task: ModelTask) -> CatalogEntry | None:
    """A pack folder as a custom model, or None if its layout is not that of `task`."""
    if not all((pack_dir / rel).is_file() for rel in REQUIRED_FILES[task]):
        return None
    try:
        dim = pack_dimension(pack_dir, task)
    except (OSError, ValueError, KeyError, TypeError):
        dim = 0  # present but unreadable: `models verify` says what is wrong
    family, multilingual = ("custom", False)
    return CatalogEntry(pack_dir.name, task, dim, family, multilingual, custom=True, path=pack_dir)


def pack_dimension(pack_dir: Path, task: ModelTask) -> int:
    """The embedding length a pack's files declare: CLIP `config.json` embed_dim, or the face
    recogniser's output shape."""
    if task == ModelTask.SEARCH:
        return int(json.loads((pack_dir / "config.json").read_text(encoding="utf-8"))["embed_dim"])
    return onnx_output_dim(pack_dir / "recognition" / "model.onnx")


def onnx_output_dim(path: Path) -> int:
    """The last dimension of an ONNX model's first output (its embedding length)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if not dims or not dims[-1].HasField("dim_value"):
        # Some exports leave the output shape symbolic; shape inference usually pins it down.
        dims = onnx.shape_inference.infer_shapes(model).graph.output[0].type.tensor_type.shape.dim
    if not dims or not dims[-1].HasField("dim_value") or dims[-1].dim_value <= 0:
        raise ValueError(f"{path} does not declare a fixed output length")
    return int(dims[-1].dim_value)
