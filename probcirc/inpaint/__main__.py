"""``python -m probcirc.inpaint``."""

import sys

from .cli import main

sys.exit(main())
