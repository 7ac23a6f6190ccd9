"""``python -m image.verity <format|verify|dump|table> ...`` (same as ``python -m image verity``)."""

import sys

from .cli import main

sys.exit(main())
