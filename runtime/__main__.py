"""``python -m runtime``: the containerd shim (see runtime.shim)."""

import sys

from runtime.shim import main

if __name__ == "__main__":
    sys.exit(main())
