"""``python -m provenafs``: the same as the ``provenafs`` command."""

from provenafs.cli import main

raise SystemExit(main())
