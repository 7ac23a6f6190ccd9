"""``python -m image.measure``: the same commands as ``python -m image measure|reference-values``."""

import sys

from image.measure.cli import main

sys.exit(main())
