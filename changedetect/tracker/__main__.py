"""``python -m changedetect.tracker``: the tracker commands without the main CLI."""

import sys

from .cli import main

sys.exit(main())
