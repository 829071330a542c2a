"""``python -m devkit``: the development commands (see ``devkit.cli``)."""

import sys

from devkit.cli import main

sys.exit(main())
