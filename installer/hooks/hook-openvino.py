"""PyInstaller hook for OpenVINO: its device plugins, TBB and the ONNX/IR readers are loaded by name at run
time from `openvino/libs`, so import analysis cannot see them (and `collect_dynamic_libs` misses the
versioned `.so.NNNN` names). Readers for other frameworks' formats stay out, with their Python wrappers
(excluded in the spec)."""

from pathlib import Path

from PyInstaller.utils.hooks import get_package_paths

# We read .onnx (onnx frontend) and OpenVINO's own IR (ir frontend, used by compiled-model caches).
UNUSED_FRONTENDS = ("paddle", "pytorch", "tensorflow", "jax", "gguf")
SHARED_LIBRARY = (".so", ".dll", ".dylib")

_, package_dir = get_package_paths("openvino")
libs = Path(package_dir) / "libs"
binaries = [
    (str(lib), "openvino/libs")
    for lib in sorted(libs.iterdir())
    if any(s in lib.name for s in SHARED_LIBRARY) and not any(f"openvino_{f}" in lib.name for f in UNUSED_FRONTENDS)
]
# The Intel GPU plugin's kernel tuning cache, read from the plugin's own folder.
datas = [(str(lib), "openvino/libs") for lib in libs.glob("cache.json")]
