"""`python -m netoproc` runs the command-line entry point."""

from netoproc.cli import main

raise SystemExit(main())
