"""Polyroute's front ends and the jobs that join the engine (`moe_core`) to the store (`store`), one
package per role: `cli` (the `polyroute` command), `workflows` (whole jobs: trace, evaluate, adapt,
demo), `background` (the app's background jobs), `analyses` (the analyses facade and its registry)
and `ui` (the pages' helpers); docs/design.md draws the house.

One store is the default everywhere, so the app and the command see the same runs.

The Python API (`polyroute/api.py`) is re-exported here for notebooks (`import polyroute as pr;
pr.open(path).run(1).divergence()`); it loads on first use, so `import polyroute` stays light.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DEFAULT_DB = Path("data/demo.duckdb")


def default_db() -> Path:
    """The store to use when none is named: $POLYROUTE_DB, else data/demo.duckdb."""
    return Path(os.environ.get("POLYROUTE_DB", DEFAULT_DB))


# The Python API's public names (polyroute/api.py), imported on first use.
API = ("open", "demo", "trace", "plan", "steer", "evaluate", "StoreHandle", "Run", "Result", "ANALYSES")


def __getattr__(name: str) -> Any:
    if name in API:
        from polyroute import api

        return api.ANALYSES if name == "ANALYSES" else getattr(api, name)
    raise AttributeError(f"module 'polyroute' has no attribute {name!r}")
