"""Give a fixed-batch ONNX model a symbolic batch axis, in the app's own cache (never the model pack).

Immich's packs are exported with batch 1. Setting the batch dimension of the inputs and outputs to a
symbol is enough for most graphs; a flatten written as `Reshape(x, [1, -1])` (common in ArcFace
exports) would silently fold N faces into one vector, so such reshapes become `[0, -1]` (keep the
batch dimension). Callers must still check a batched run against single runs (`batch_matches`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)


def _source_key(src: Path) -> str:
    st = src.stat()
    return hashlib.sha1(f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]


def batchable_copy(src: Path, work_dir: Path) -> Path:
    """Path of a copy of `src` with a symbolic batch axis, written once into `work_dir`."""
    import onnx
    from onnx import numpy_helper

    dst = work_dir / "batch-axis" / f"{src.parent.parent.name}-{src.parent.name}-{_source_key(src)}.onnx"
    if dst.is_file():
        return dst
    model = onnx.load(str(src))
    graph = model.graph
    initializer_names = {i.name for i in graph.initializer}
    for value in [*(i for i in graph.input if i.name not in initializer_names), *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "batch"
    del graph.value_info[:]  # intermediate shape annotations still say batch 1

    producers = {out: node for node in graph.node for out in node.output}
    inits = {i.name: i for i in graph.initializer}
    patched = 0
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        shape_name = node.input[1]
        if shape_name in inits:
            arr = numpy_helper.to_array(inits[shape_name])
            if arr.tolist() == [1, -1]:
                inits[shape_name].CopyFrom(numpy_helper.from_array(np.array([0, -1], dtype=arr.dtype), shape_name))
                patched += 1
        elif shape_name in producers and producers[shape_name].op_type == "Constant":
            for attr in producers[shape_name].attribute:
                if attr.name == "value":
                    arr = numpy_helper.to_array(attr.t)
                    if arr.tolist() == [1, -1]:
                        attr.t.CopyFrom(numpy_helper.from_array(np.array([0, -1], dtype=arr.dtype)))
                        patched += 1
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, suffix=".onnx.part")
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("Wrote batch-axis copy of %s to %s (%d flatten reshapes kept batch)", src, dst, patched)
    return dst


def has_batch_axis(shape: list) -> bool:
    return bool(shape) and not isinstance(shape[0], int)


def batch_matches(run: Callable[[np.ndarray], np.ndarray], samples: np.ndarray, tol: float = 1e-3) -> bool:
    """True if running `samples` as one batch gives the same rows as running them one by one."""
    try:
        batched = run(samples)
    except Exception as e:  # noqa: BLE001 - any failure means "cannot batch"
        log.info("Batched run failed (%s); running one at a time", str(e).splitlines()[0] if str(e) else e)
        return False
    if batched.shape[0] != samples.shape[0]:
        return False
    singles = np.concatenate([run(samples[i : i + 1]) for i in range(samples.shape[0])])
    if singles.shape != batched.shape:
        return False
    scale = float(np.abs(singles).max()) or 1.0
    return bool(np.abs(batched - singles).max() <= tol * scale)
