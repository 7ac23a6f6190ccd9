"""`python -m attestation`: see attestation.cli."""

import sys

from .cli import main

sys.exit(main())
