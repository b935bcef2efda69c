"""`python -m polyroute.cli ...`: the `polyroute` command."""

from polyroute.cli import main

raise SystemExit(main())
