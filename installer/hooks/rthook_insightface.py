"""Runtime hook: lets `import insightface.model_zoo` work without insightface's demo parts.

insightface 0.7.3's `__init__` eagerly imports `insightface.app` (mask renderer: albumentations) and
`insightface.thirdparty` (3D face mesh: matplotlib). The app only uses `model_zoo` and
`utils.face_align`, so the build leaves those two out (~60 MB) and registers them here as empty modules.
"""

import sys
import types

for _name in ("insightface.app", "insightface.thirdparty"):
    sys.modules.setdefault(_name, types.ModuleType(_name))
