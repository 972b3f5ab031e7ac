"""``python -m compose.run``: see ``compose.run.cli``."""

import sys

from .cli import main

sys.exit(main())
