"""`auto` precision: a lower precision (bf16 on CPUs with AMX/AVX-512 bf16, f16 on GPUs) only for the
models whose vectors stay interchangeable with Immich's.

A model that offers a calibration (a function that runs a session on a few real inputs and returns its
vectors) is compiled once in f32 and once in the device's own lower precision; the lower one is kept only
if every calibration vector has cosine >= `CHECK_COSINE` (a margin above `MIN_COSINE`) to its f32 twin. Models without a calibration
(detectors, whose small box and landmark shifts move the face vectors computed from them) stay in f32.
The verdict is remembered per model file, device and runtime version, so the check runs once.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)

# The precisions a user can ask for. `auto`: the device's faster precision (bf16 on new CPUs, f16 on GPUs)
# for each model whose vectors stay interchangeable with Immich's (checked at first load), f32 for the others.
PRECISIONS = ("auto", "f32", "bf16", "f16")

MIN_COSINE = 0.9999  # what "interchangeable with Immich's vectors" means here (DESIGN.md)
# What the sample vectors must reach for the lower precision to be kept: a margin above MIN_COSINE, so that
# inputs that were not sampled stay above it too (bench/bench_precision.py measures both; see docs/engine.md).
CHECK_COSINE = 0.99995

# Runs a session on the model's calibration inputs and returns one vector per row.
Calibration = Callable[[object], np.ndarray]


@dataclass(frozen=True)
class Verdict:
    precision: str  # what the model runs in
    candidate: str  # the lower precision that was tried
    min_cosine: float | None  # worst calibration cosine to f32 (None: not measured)

    def as_dict(self) -> dict[str, object]:
        return {"precision": self.precision, "candidate": self.candidate, "min_cosine": self.min_cosine}


def min_row_cosine(reference: np.ndarray, other: np.ndarray) -> float:
    """The smallest cosine between corresponding rows (vectors) of two outputs."""
    a = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    b = np.asarray(other, dtype=np.float64).reshape(len(other), -1)
    if a.shape != b.shape:
        return -1.0
    dots = (a * b).sum(axis=1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(norms > 0, dots / norms, np.where(np.abs(a - b).max(axis=1) == 0, 1.0, 0.0))
    return float(cos.min())


class VerdictCache:
    """Verdicts in one small JSON file beside OpenVINO's compiled-model cache."""

    _lock = threading.Lock()  # one for all: two caches of the same file must not lose each other's writes

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, key: str) -> Verdict | None:
        with self._lock:
            entry = self._read().get(key)
        if not isinstance(entry, dict) or entry.get("precision") not in PRECISIONS:
            return None
        return Verdict(entry["precision"], str(entry.get("candidate", "")), entry.get("min_cosine"))

    def put(self, key: str, verdict: Verdict) -> None:
        with self._lock:
            data = self._read()
            data[key] = verdict.as_dict()
            tmp: str | None = None
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".json.part")
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(data, f, indent=1, sort_keys=True)
                os.replace(tmp, self.path)
            except OSError as e:  # a read-only or full disk only costs a check at the next load
                log.warning("Cannot remember the precision check in %s: %s", self.path, e)
                if tmp is not None:
                    Path(tmp).unlink(missing_ok=True)

    def _read(self) -> dict[str, object]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}


def file_key(path: Path) -> str:
    """Identifies a model file's content cheaply (a re-downloaded file gets a new check)."""
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
