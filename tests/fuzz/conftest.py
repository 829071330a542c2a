"""Property-based fuzzing of the body parser and the whole Check handler (hypothesis), and a
short coverage-guided run of the ``atheris`` target. The ``fuzz`` package lives at the
repository root (it is dev tooling, not part of the installed ``extauthz``)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
