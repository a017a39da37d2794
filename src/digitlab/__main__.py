"""Lets `python -m digitlab ...` work like the `digitlab` command."""

from digitlab.cli import main

raise SystemExit(main())
