import sys

if len(sys.argv) > 1 and sys.argv[1] in ("serve", "proxy"):
    from .processes import main as processes_main

    sys.exit(processes_main(sys.argv[1:]))

from .bench import main

sys.exit(main())
