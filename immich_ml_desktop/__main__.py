"""`python -m immich_ml_desktop` is the same program as `immich-ml-desktop`."""

from immich_ml_desktop.main import main

raise SystemExit(main())
