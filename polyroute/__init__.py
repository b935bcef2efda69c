"""Polyroute's front ends and the jobs that join the engine (`moe_core`) to the store (`store`):
the `polyroute` command, trace runs, the demo store and the analyses facade.

One store is the default everywhere, so the app and the command see the same runs.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DB = Path("data/demo.duckdb")


def default_db() -> Path:
    """The store to use when none is named: $POLYROUTE_DB, else data/demo.duckdb."""
    return Path(os.environ.get("POLYROUTE_DB", DEFAULT_DB))
