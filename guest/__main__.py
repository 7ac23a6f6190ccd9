"""``python -m guest``: see guest.cli."""

from guest.cli import main

raise SystemExit(main())
