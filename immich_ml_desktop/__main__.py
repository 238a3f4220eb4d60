"""`python -m immich_ml_desktop` is the same program as `immich-ml-desktop`."""

from immich_ml_desktop.cli import main

raise SystemExit(main())
