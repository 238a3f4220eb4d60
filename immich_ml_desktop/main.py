"""The program's entry point: with a command, the headless CLI; without one, the desktop window.

It sits above both `cli` and `ui` so that neither has to import the other.
"""

from __future__ import annotations

import sys


def _open_window() -> int:
    from immich_ml_desktop.ui.app import run_app

    return run_app()


def main(argv: list[str] | None = None) -> int:
    from immich_ml_desktop.cli import main as cli_main

    return cli_main(sys.argv[1:] if argv is None else argv, open_window=_open_window)


if __name__ == "__main__":
    raise SystemExit(main())
