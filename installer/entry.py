"""The frozen app's entry point: the same `main()` as the `immich-ml-desktop` console script (CLI with a command,
window without), plus, on Linux, a check of the system libraries before the window opens (system_libraries.py):
a build without its system's libraries says in one line what to install instead of failing in Qt."""

import multiprocessing
import sys

import immich_ml_desktop.main as app_main
from immich_ml_desktop.cli import main as cli_main

import system_libraries


def open_window() -> int:
    problem = system_libraries.window_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 3
    # the console script's own window opener (immich_ml_desktop.main), whatever it does before the window
    return app_main._open_window()


if __name__ == "__main__":
    # Frozen Windows/macOS builds re-run this file for every child process; this makes children do their job.
    multiprocessing.freeze_support()
    raise SystemExit(cli_main(sys.argv[1:], open_window=open_window))
