"""Polyroute's front ends and the jobs that join the engine (`moe_core`) to the store (`store`), one
package per role: `cli` (the `polyroute` command), `workflows` (whole jobs: trace, evaluate, adapt,
demo), `background` (the app's background jobs), `analyses` (the analyses facade and its registry)
and `ui` (the pages' helpers); docs/design.md draws the house.

One store is the default everywhere, so the app and the command see the same runs.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DB = Path("data/demo.duckdb")


def default_db() -> Path:
    """The store to use when none is named: $POLYROUTE_DB, else data/demo.duckdb."""
    return Path(os.environ.get("POLYROUTE_DB", DEFAULT_DB))
