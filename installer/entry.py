"""The frozen app's entry point: the same `main()` as the `immich-ml-desktop` console script (CLI with a command, window without)."""

import multiprocessing

from immich_ml_desktop.main import main

if __name__ == "__main__":
    # Frozen Windows/macOS builds re-run this file for every child process; this makes children do their job.
    multiprocessing.freeze_support()
    raise SystemExit(main())
