"""Runtimes behind one small interface: ONNX Runtime (CPU, CUDA, DirectML, CoreML) and OpenVINO.

A `Session` looks like an `onnxruntime.InferenceSession` (`get_inputs`, `get_outputs`, `run`), so
insightface's `RetinaFace` and `ArcFaceONNX` run unchanged on either runtime, as in Immich.
Device discovery reports what this machine really has; `auto` picks the fastest that works, and a
device that fails to load a model falls back to the CPU with a logged warning, never silently.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from functools import lru_cache, cache
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Sequence

import numpy as np

from immich_ml_desktop.errors import DeviceUnavailableError, ModelDamagedError
from immich_ml_desktop.models.precision import CHECK_COSINE, Calibration, Verdict, VerdictCache, file_key, min_row_cosine

log = logging.getLogger(__name__)

# ONNX Runtime execution providers we know, with the device id users type.
_ORT_PROVIDERS = {
    "cuda": "CUDAExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
# Fastest first: what `auto` tries. On CPUs with AVX-512/AMX OpenVINO is about twice as fast as
# ONNX Runtime's CPU provider for CLIP (see bench/), so it comes before `cpu`.
_AUTO_ORDER = ("cuda", "openvino:GPU", "directml", "coreml", "openvino:NPU", "openvino:CPU", "cpu")


@dataclass(frozen=True)
class Device:
    """An execution device: `id` is what `--device` takes (cpu, cuda, openvino:CPU, ...)."""

    id: str
    runtime: str  # "onnxruntime" or "openvino"
    name: str  # provider or OpenVINO device name
    description: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class RuntimeOptions:
    """How sessions are made.

    `precision`: OpenVINO inference precision; `auto` runs a model in the device's faster precision only
    where its vectors stay interchangeable with f32 (see `precision.py`). `parallel`: how many calls the
    caller makes at once (the server's and the index job's workers); above 1 a session is built for
    throughput (OpenVINO streams, fewer ONNX Runtime threads per call) rather than for one call's latency.
    """

    threads: int = 0  # threads per call; 0 = chosen from `parallel` and the cores
    precision: str = "auto"
    parallel: int = 1
    cache_dir: Path | None = None  # OpenVINO compiled-blob cache (never inside a model pack)


def default_parallel() -> int:
    """How many calls to run at once by default: one per core (at most 4; beyond that streams only
    split the same cores finer)."""
    return max(1, min(4, os.cpu_count() or 1))


@lru_cache(maxsize=1)
def _ov_core() -> Any:
    import openvino as ov

    return ov.Core()


def openvino_available() -> bool:
    try:
        _ov_core()
        return True
    except Exception:  # noqa: BLE001 - any import or plugin failure means "not available"
        return False


def discover_devices() -> list[Device]:
    """Every runtime/device pair that exists on this machine, in `auto` preference order."""
    found: dict[str, Device] = {}
    try:
        import onnxruntime as ort

        version = ort.__version__
        available = set(ort.get_available_providers())
        for dev_id, provider in _ORT_PROVIDERS.items():
            if provider in available:
                found[dev_id] = Device(dev_id, "onnxruntime", provider, f"ONNX Runtime {version} {provider}")
    except ImportError:
        log.info("onnxruntime is not installed")
    if openvino_available():
        import openvino as ov

        core = _ov_core()
        for name in core.available_devices:
            try:
                full = core.get_property(name, "FULL_DEVICE_NAME")
            except Exception:  # noqa: BLE001
                full = name
            dev_id = f"openvino:{name}"
            found[dev_id] = Device(dev_id, "openvino", name, f"OpenVINO {ov.get_version().split('-')[0]} {full}")

    def rank(dev: Device) -> int:
        generic = dev.id.split(".")[0]  # openvino:GPU.1 ranks like openvino:GPU
        return _AUTO_ORDER.index(generic) if generic in _AUTO_ORDER else len(_AUTO_ORDER)

    return sorted(found.values(), key=rank)


def resolve_device(spec: str) -> Device:
    """Turn `--device` into a Device. `auto` is the first discovered; an unknown id is an error."""
    devices = discover_devices()
    if not devices:
        raise DeviceUnavailableError("No inference runtime found: install onnxruntime or openvino.")
    spec = (spec or "auto").strip()
    if spec == "auto":
        return devices[0]
    if spec == "openvino":
        spec = "openvino:CPU"
    for dev in devices:
        if dev.id.lower() == spec.lower():
            return dev
    known = ", ".join(["auto"] + [d.id for d in devices])
    raise DeviceUnavailableError(f"Device {spec!r} is not available on this machine. Available: {known}.")


class NodeInfo:
    """What `get_inputs()` / `get_outputs()` return: ONNX Runtime's NodeArg shape (name, shape, type)."""

    def __init__(self, name: str, shape: list[int | str | None], type: str = "tensor(float)") -> None:
        self.name = name
        self.shape = shape
        self.type = type

    def __repr__(self) -> str:
        return f"NodeInfo({self.name!r}, {self.shape!r})"


class Session:
    """One loaded model on one device; safe to call from several threads at once."""

    device: Device
    path: Path
    precision: str = "f32"  # what it really computes in

    def get_inputs(self) -> list[NodeInfo]:
        raise NotImplementedError

    def get_outputs(self) -> list[NodeInfo]:
        raise NotImplementedError

    def run(self, output_names: Sequence[str] | None, input_feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def set_providers(self, providers: Iterable[str]) -> None:
        """insightface calls this for ctx_id < 0; we choose devices ourselves."""


class OrtSession(Session):
    def __init__(self, path: Path, device: Device, options: RuntimeOptions) -> None:
        import onnxruntime as ort

        self.path = path
        self.device = device
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.inter_op_num_threads = 1
        if options.threads:
            so.intra_op_num_threads = options.threads
        elif options.parallel > 1:  # several calls at once: one thread pool each would fight over the cores
            so.intra_op_num_threads = max(1, (os.cpu_count() or 1) // options.parallel)
        so.log_severity_level = 4  # failures reach us as exceptions; ORT's own log would repeat them on stderr
        providers: list[Any] = [device.name]
        if device.name != "CPUExecutionProvider":
            providers.append("CPUExecutionProvider")
        self._session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        self._inputs = [NodeInfo(i.name, list(i.shape), i.type) for i in self._session.get_inputs()]
        self._outputs = [NodeInfo(o.name, list(o.shape), o.type) for o in self._session.get_outputs()]

    def get_inputs(self) -> list[NodeInfo]:
        return self._inputs

    def get_outputs(self) -> list[NodeInfo]:
        return self._outputs

    def run(self, output_names: Sequence[str] | None, input_feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._session.run(output_names, input_feed)


_OV_PRECISION = {"f32": "f32", "bf16": "bf16", "f16": "f16"}


def _ov_dim(dim: Any) -> int | str:
    return dim.get_length() if dim.is_static else "?"


@cache
def _supports(device_name: str, prop: str) -> bool:
    try:
        return prop in _ov_core().get_property(device_name, "SUPPORTED_PROPERTIES")
    except Exception:  # noqa: BLE001
        return False


def native_low_precision(device: Device) -> str:
    """The precision an OpenVINO device computes fastest in (bf16 on CPUs with AMX or AVX-512 bf16,
    f16 on GPUs), or f32 where it has nothing faster."""
    if device.runtime != "openvino":
        return "f32"
    try:
        name = _ov_core().get_property(device.name, "INFERENCE_PRECISION_HINT").to_string()
    except Exception:  # noqa: BLE001 - a device without the property computes in f32
        return "f32"
    return {"bf16": "bf16", "f16": "f16"}.get(name, "f32")


class OpenVinoSession(Session):
    """OpenVINO reading the same ONNX file. Each call borrows an idle infer request (made when none is
    idle), so there are as many as calls ever ran at once.

    Requests are not kept per thread: a thread-local request is destroyed when its thread's Python state
    is, and for a Qt pool thread that happens inside shiboken's GIL release, where OpenVINO's destructor
    crashes the process (every GUI indexing run on OpenVINO crashed when the job's thread ended).
    """

    def __init__(
        self,
        path: Path,
        device: Device,
        options: RuntimeOptions,
        input_shapes: dict[str, list[int]] | None = None,
        precision: str = "f32",
    ) -> None:
        self.path = path
        self.device = device
        self.precision = precision
        core = _ov_core()
        model = core.read_model(str(path))
        if input_shapes:
            model.reshape({name: shape for name, shape in input_shapes.items()})
        config: dict[str, Any] = {}
        if _supports(device.name, "INFERENCE_PRECISION_HINT"):
            config["INFERENCE_PRECISION_HINT"] = _OV_PRECISION[precision]
        elif precision != "f32":
            raise DeviceUnavailableError(f"{device.id} has no setting for the inference precision ({precision}).")
        if options.parallel > 1:
            # Streams: each call runs on its own share of the cores (77 against 66 ViT-B-32 images/s at bf16
            # with 2 calls at once on 2 cores, where one call spread over both cores waits for the other).
            config["PERFORMANCE_HINT"] = "THROUGHPUT"
            config["PERFORMANCE_HINT_NUM_REQUESTS"] = options.parallel
            if _supports(device.name, "ENABLE_CPU_PINNING"):
                # Streams pinned to cores fight our own threads (decoding, face alignment) for them: the face
                # pipeline at 2 calls ran 10-14 requests/s from run to run pinned, a steady 13.6 unpinned.
                config["ENABLE_CPU_PINNING"] = False
        else:
            config["PERFORMANCE_HINT"] = "LATENCY"
        if device.name.startswith("CPU") and options.threads:
            config["INFERENCE_NUM_THREADS"] = options.threads
        if options.cache_dir is not None:
            options.cache_dir.mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(options.cache_dir)
        self._compiled = core.compile_model(model, device.name, config)
        del model  # the compiled model has what it needs; the graph's own copy of the weights can go
        self.precision = compiled_precision(self._compiled, precision)
        self._idle: list[Any] = []
        self._idle_lock = threading.Lock()
        self._inputs = [
            NodeInfo(p.any_name, [_ov_dim(d) for d in p.get_partial_shape()]) for p in self._compiled.inputs
        ]
        self._outputs = [
            NodeInfo(p.any_name, [_ov_dim(d) for d in p.get_partial_shape()]) for p in self._compiled.outputs
        ]
        self._out_index = {o.name: i for i, o in enumerate(self._outputs)}
        _ready_numpy_views(self._compiled)

    def get_inputs(self) -> list[NodeInfo]:
        return self._inputs

    def get_outputs(self) -> list[NodeInfo]:
        return self._outputs

    def run(self, output_names: Sequence[str] | None, input_feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._idle_lock:
            request = self._idle.pop() if self._idle else None
        if request is None:
            request = self._compiled.create_infer_request()
        try:
            values = list(request.infer(input_feed).values())
            wanted = range(len(values)) if output_names is None else [self._out_index[n] for n in output_names]
            return [np.array(values[i], copy=True) for i in wanted]  # copied before the request is reused
        finally:
            with self._idle_lock:
                self._idle.append(request)


_numpy_views_lock = threading.Lock()
_numpy_views_ready = False


def _ready_numpy_views(compiled: Any) -> None:
    """Make OpenVINO's bindings set up their numpy views once, on one thread, before any call.

    The first `Tensor.data` of the process (which `InferRequest.infer` uses to copy inputs in) initialises
    a function-local static in the bindings whose initialiser lets go of the GIL inside pybind11's
    `gil_safe_call_once` and then waits for it again. A second thread reaching the same static then
    holds the GIL while waiting for that static's guard: both wait forever. Seen as the window hanging
    with two calls at once (both Qt pool threads stuck in `infer`, in `__cxa_guard_acquire` and in
    `pthread_cond_timedwait` under `npy_api`), about one run in three when two idle requests start
    together (tests/test_ui_openvino_threads.py). Once initialised, the static is never waited on again."""
    global _numpy_views_ready
    if _numpy_views_ready:
        return
    with _numpy_views_lock:  # Lock.acquire lets go of the GIL while it waits: no second deadlock here
        if not _numpy_views_ready:
            request = compiled.create_infer_request()
            for i in range(len(compiled.inputs)):
                _ = request.get_input_tensor(i).data
            _numpy_views_ready = True


def compiled_precision(compiled: Any, requested: str) -> str:
    """What an OpenVINO compiled model really computes in, read back from its runtime graph (the lowest
    float precision its operations run in), not the precision that was asked for: a CPU without f16 runs
    an f16 request in bf16 where it has bf16 (AVX-512 bf16, AMX), else in f32."""
    try:
        found = {
            str(op.get_rt_info()["runtimePrecision"].astype(str))
            for op in compiled.get_runtime_model().get_ops()
            if "runtimePrecision" in op.get_rt_info()
            and str(op.get_rt_info()["layerType"].astype(str) if "layerType" in op.get_rt_info() else "") != "Const"
        }
    except Exception:  # noqa: BLE001 - a plugin without a runtime graph: ask its setting instead
        try:
            found = {str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower().replace("float", "f")}
        except Exception:  # noqa: BLE001
            return requested
    caps = _capabilities(compiled)
    for name in ("bf16", "f16"):
        if any(name in p for p in found):
            # f16 weights on a device without f16 or bf16 arithmetic are widened and computed in f32
            if caps is not None and name.upper().replace("F", "FP") not in caps and "BF16" not in caps:
                return "f32"
            return name
    return "f32"


def _capabilities(compiled: Any) -> set[str] | None:
    """The OPTIMIZATION_CAPABILITIES of the devices a compiled model runs on (None where unknown)."""
    try:
        return {str(c) for d in compiled.get_property("EXECUTION_DEVICES")
                for c in _ov_core().get_property(str(d), "OPTIMIZATION_CAPABILITIES")}
    except Exception:  # noqa: BLE001
        return None


def computes_below_f32(device: Device, precision: str) -> bool:
    """Whether the OpenVINO device has arithmetic for `precision` (bf16, or f16, which a CPU runs in bf16):
    without it an explicit bf16/f16 request computes in f32, so it gets the exact weights, not f16 ones."""
    try:
        caps = {str(c) for c in _ov_core().get_property(device.name, "OPTIMIZATION_CAPABILITIES")}
    except Exception:  # noqa: BLE001
        return True  # a device that does not say: as asked
    return "BF16" in caps or (precision == "f16" and "FP16" in caps)


def ir_file(path: Path, options: RuntimeOptions, *, f16_weights: bool) -> Path:
    """An OpenVINO IR copy of the ONNX file `path`, written once into the app's own cache (never the pack),
    with its weights stored in f16 for a session that computes in bf16 or f16 anyway.

    Memory: OpenVINO keeps the graph's weights beside the copies it repacks for the device. Read from an
    ONNX file they sit in the process's own memory; read from an IR they are mapped from its `.bin` file,
    and `release_mapped_weights` then hands those pages back (ViT-B-32's image tower in bf16: 730 MB
    resident from the ONNX file, 265 MB from the f16 copy). A lower precision's vectors are checked against
    the f32 copy (the very same weights as the file), so the f16 copy is covered (`precision.py`). Returns `path` where there is no
    cache or the copy cannot be written."""
    if options.cache_dir is None or path.suffix != ".onnx":
        return path
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    kind = "f16-weights" if f16_weights else "ir"
    dst = options.cache_dir / kind / f"{path.parent.parent.name}-{path.parent.name}-{key}.xml"
    if dst.is_file() and dst.with_suffix(".bin").is_file():
        return dst
    import openvino as ov

    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
            part = Path(tmp) / dst.name
            ov.save_model(ov.convert_model(str(path)), str(part), compress_to_fp16=f16_weights)
            for written in (part.with_suffix(".bin"), part):
                _fsync(written)  # on disk before the .xml appears; clean pages are what the kernel can hand back
            os.replace(part.with_suffix(".bin"), dst.with_suffix(".bin"))
            os.replace(part, dst)  # the .xml last: its presence means the pair is complete
    except Exception as e:  # noqa: BLE001 - a full disk or a graph the converter refuses: use the file as it is
        log.warning("Cannot write an OpenVINO copy of %s (%s); compiling the original", path, _first_line(e))
        return path
    log.info("Wrote an OpenVINO copy of %s%s: %s", path, " with f16 weights" if f16_weights else "", dst)
    return dst


def _fsync(file: Path) -> None:
    fd = os.open(file, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_MADV_PAGEOUT = 21  # Linux >= 5.4: reclaim these pages now (clean file pages are simply dropped)


def release_mapped_weights(folder: Path | None) -> int:
    """Hand back the resident pages of read-only file mappings under `folder` (the IR `.bin` files and
    compiled blobs OpenVINO maps from the app's cache): after compiling, OpenVINO works from its own
    repacked copies and no longer reads them; a page read again later is simply read from the file again.
    Linux only (elsewhere, and on kernels without MADV_PAGEOUT, nothing happens); returns bytes advised."""
    if folder is None or not os.path.exists("/proc/self/maps"):
        return 0
    import ctypes

    root = str(Path(folder).resolve())
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            lines = maps.readlines()
    except (OSError, AttributeError):
        return 0
    advised = 0
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[1].startswith("r") or "w" in fields[1]:
            continue
        if not fields[5].strip().startswith(root + os.sep):
            continue
        low, high = (int(v, 16) for v in fields[0].split("-"))
        if madvise(low, high - low, _MADV_PAGEOUT) == 0:
            advised += high - low
    return advised


def make_session(
    path: Path,
    device: Device,
    options: RuntimeOptions,
    *,
    ov_input_shapes: dict[str, list[int]] | None = None,
    fallback: bool = True,
    calibration: Calibration | None = None,
    verdict_key: str | None = None,
) -> Session:
    """Load `path` on `device`; if that device fails, warn and use ONNX Runtime on the CPU.

    With precision `auto`, `calibration` (a function running a session on the model's sample inputs)
    decides whether the device's lower precision keeps the vectors interchangeable (`precision.py`);
    without one the model runs in f32. `verdict_key` names the model for the remembered verdict (the
    pack's file, when `path` is a derived copy of it)."""
    try:
        if device.runtime == "openvino":
            if options.precision == "auto":
                session = _auto_precision_session(path, device, options, ov_input_shapes, calibration, verdict_key)
                release_mapped_weights(options.cache_dir)
                return session
            file = ir_file(path, options, f16_weights=options.precision != "f32"
                           and computes_below_f32(device, options.precision))
            session = OpenVinoSession(file, device, options, ov_input_shapes, options.precision)
            release_mapped_weights(options.cache_dir)
            return session
        return OrtSession(path, device, options)
    except Exception as e:  # classify below
        damaged = _looks_damaged(e)
        if damaged or not fallback or device.id == "cpu":
            raise ModelDamagedError(
                f"Cannot load model file {path}: {_first_line(e)}. The file may be truncated or corrupt; "
                f"run `immich-ml-desktop models verify` and download the model again."
            ) from e
        log.warning("Device %s could not load %s (%s); falling back to cpu", device.id, path, _first_line(e))
        cpu = Device("cpu", "onnxruntime", "CPUExecutionProvider", "ONNX Runtime CPU (fallback)")
        return make_session(path, cpu, options, fallback=False)


def _auto_precision_session(
    path: Path,
    device: Device,
    options: RuntimeOptions,
    shapes: dict[str, list[int]] | None,
    calibration: Calibration | None,
    verdict_key: str | None,
) -> OpenVinoSession:
    candidate = native_low_precision(device)
    exact = ir_file(path, options, f16_weights=False)
    if candidate == "f32" or calibration is None:
        return OpenVinoSession(exact, device, options, shapes, "f32")
    import openvino as ov

    key = "|".join([verdict_key or file_key(path), device.name, candidate, "f16-weights", ov.get_version(), str(CHECK_COSINE)])
    cache = VerdictCache(options.cache_dir / "precision.json") if options.cache_dir is not None else None
    known = cache.get(key) if cache is not None else None
    if known is not None:
        chosen_file = exact if known.precision == "f32" else ir_file(path, options, f16_weights=True)
        return OpenVinoSession(chosen_file, device, options, shapes, known.precision)
    reference = OpenVinoSession(exact, device, options, shapes, "f32")
    low = OpenVinoSession(ir_file(path, options, f16_weights=True), device, options, shapes, candidate)
    try:
        cosine: float | None = min_row_cosine(calibration(reference), calibration(low))
    except Exception as e:  # noqa: BLE001 - a model the sample inputs do not fit: stay exact
        log.warning("Precision check of %s failed (%s); running it in f32", path, _first_line(e))
        cosine = None
    chosen = candidate if cosine is not None and cosine >= CHECK_COSINE else "f32"
    log.info(
        "%s on %s: %s (its %s vectors have cosine %s to f32; %s needed)",
        path, device.id, chosen, candidate, "n/a" if cosine is None else f"{cosine:.6f}", CHECK_COSINE,
    )
    if cache is not None and cosine is not None:
        cache.put(key, Verdict(chosen, candidate, cosine))
    return low if chosen == candidate else reference


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def _looks_damaged(e: BaseException) -> bool:
    text = str(e).lower()
    return any(
        s in text
        for s in ("protobuf parsing failed", "invalid_protobuf", "no_suchfile", "load model", "parse", "corrupt")
    )
