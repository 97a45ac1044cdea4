"""``python -m modelshell`` is the same as the ``modelshell`` console script."""
from __future__ import annotations

import sys

from modelshell.cli import main

sys.exit(main())
