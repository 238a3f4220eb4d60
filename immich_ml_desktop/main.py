"""The program's entry point: with a command, the headless CLI; without one, the desktop window.

It sits above both `cli` and `ui` so that neither has to import the other.
"""

from __future__ import annotations

import sys

# `immich-ml-desktop --tray` (what "start at login" runs) opens the window hidden in the system tray.
TRAY_FLAG = "--tray"


def keep_openvino_telemetry_off() -> None:
    """`import openvino` imports its converter (openvino.tools.ovc), which starts Intel's telemetry:
    with no consent file it counts as consent, writes `~/intel/openvino_ga_cid` and `~/intel/stats` into
    the user's home and tries to send usage events. The converter imports `openvino_telemetry` inside
    `try/except ImportError` and uses its own no-op stub without it; a None entry in `sys.modules` makes
    that import fail (Python's documented way to block one), so nothing is written or sent. Runs before
    anything imports OpenVINO; a no-op once the real package is loaded."""
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]  # None blocks the import


keep_openvino_telemetry_off()  # at import: the installed app's entry point imports this module, then the CLI


def _open_window(tray: bool | None = None) -> int:
    """The window; `tray` None reads `--tray` from the command line (the installed app's entry point
    calls this with no arguments)."""
    from immich_ml_desktop.ui.preflight import window_problem

    if tray is None:
        tray = TRAY_FLAG in sys.argv[1:]
    problem = window_problem()
    if problem is not None:  # Qt would abort (exit 134) with a misleading message
        print(f"error: {problem.message}", file=sys.stderr)
        return 2
    from immich_ml_desktop.ui.app import run_app

    return run_app(start_in_tray=tray)


def main(argv: list[str] | None = None) -> int:
    keep_openvino_telemetry_off()
    from immich_ml_desktop.cli import main as cli_main

    argv = list(sys.argv[1:] if argv is None else argv)
    return cli_main(argv, open_window=lambda: _open_window(TRAY_FLAG in argv))


if __name__ == "__main__":
    raise SystemExit(main())
