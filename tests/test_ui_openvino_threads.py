"""OpenVINO inference from the window's worker threads: when a Qt pool thread that ran a model ends, the
app must not crash (it did: OpenVINO infer requests kept per thread were destroyed inside shiboken's GIL
release when the thread's Python state went away, and every GUI indexing run on OpenVINO died).

Runs in a child process, so a crash fails this test instead of taking pytest down with it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from immich_ml_desktop.models.runtime import openvino_available

from conftest import CLIP_PACK

CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from PySide6.QtCore import QThreadPool
    from PySide6.QtWidgets import QApplication
    from immich_ml_desktop.models.runtime import RuntimeOptions, make_session, resolve_device
    from immich_ml_desktop.ui.workers import job_pool, run_task

    app = QApplication([])
    for pool in (QThreadPool.globalInstance(), job_pool()):
        pool.setExpiryTimeout(50)  # idle pool threads end (and drop their Python state) quickly
    session = make_session(sys.argv[1], resolve_device("openvino:CPU"), RuntimeOptions(precision="f32", parallel=2))
    x = np.zeros((1, 3, 224, 224), np.float32)
    results = []
    for round in range(6):
        for long_job in (False, True):
            run_task(lambda: session.run(None, {"image": x})[0], on_done=results.append, long_job=long_job)
        deadline = time.monotonic() + 10
        while len(results) < 2 * (round + 1) and time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.01)
        time.sleep(0.3)  # the threads expire here
        app.processEvents()
    print(len(results), results[0].shape)
    """
)


@pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed on this machine")
def test_openvino_calls_from_qt_pool_threads_that_then_end(models_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    model = models_dir / "clip" / CLIP_PACK / "visual" / "model.onnx"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, str(script), str(model)], capture_output=True, text=True, env=env, timeout=90)
    assert done.returncode == 0, f"child died with {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.split()[:1] == ["12"]


RACE = textwrap.dedent(
    """
    import sys, threading, time
    import numpy as np
    from PySide6.QtWidgets import QApplication
    from immich_ml_desktop.models.runtime import RuntimeOptions, make_session, resolve_device
    from immich_ml_desktop.ui.workers import run_task

    app = QApplication([])
    session = make_session(sys.argv[1], resolve_device("openvino:CPU"), RuntimeOptions(precision="f32", parallel=2))
    # Two idle requests made beforehand: both calls skip making one and reach `infer` together, the widest
    # window for the first-use race in OpenVINO's bindings (it hung 5 of 8 such runs before the fix).
    session._idle = [session._compiled.create_infer_request() for _ in range(2)]
    x = np.zeros((1, 3, 224, 224), np.float32)
    start = threading.Barrier(2)
    results = []

    def call():
        start.wait(10)
        return session.run(None, {"image": x})[0]

    for long_job in (False, True):
        run_task(call, on_done=results.append, long_job=long_job)
    deadline = time.monotonic() + 30
    while len(results) < 2 and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    print(len(results))
    """
)


@pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed on this machine")
def test_two_first_calls_at_once_from_qt_pool_threads_do_not_hang(models_dir: Path, tmp_path: Path) -> None:
    """The window's default path: an engine for two calls at once on OpenVINO, two pool threads making
    the process's first calls together. Each child runs the race once; several make a hang near certain
    to show if the bindings' first use is not made safe (runtime._ready_numpy_views)."""
    script = tmp_path / "race.py"
    script.write_text(RACE)
    model = models_dir / "clip" / CLIP_PACK / "visual" / "model.onnx"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    for run in range(4):
        try:
            done = subprocess.run([sys.executable, str(script), str(model)], capture_output=True, text=True, env=env,
                                  timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run {run + 1}: two OpenVINO calls from Qt pool threads hung")
        assert done.returncode == 0 and done.stdout.split()[-1:] == ["2"], done.stderr[-2000:]
