"""The architecture contracts in pyproject.toml: only `ui` imports Qt, and layers point down."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("import-linter is not installed (it is in the dev group)")
    proc = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken" in proc.stdout


def test_core_imports_without_qt() -> None:
    """Importing the whole core (CLI included) loads no Qt module."""
    code = (
        "import sys, immich_ml_desktop.cli, immich_ml_desktop.models.engine;"
        "import immich_ml_desktop.cli as c; c.build_parser();"
        "bad=[m for m in sys.modules if m.startswith(('PySide6','shiboken6'))]; print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
