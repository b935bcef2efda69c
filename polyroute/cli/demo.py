"""`polyroute demo`: build the demo store the app opens on (see polyroute/workflows/demo.py).

Kept apart from polyroute/workflows/demo.py so that `polyroute --help` does not load torch.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from polyroute.cli.options import add_db


def add_parser(commands: Any) -> None:
    """Register `demo` on the `polyroute` sub-command set."""
    demo = commands.add_parser(
        "demo", help="build the demo store: the shipped tiny MoE traced over every built-in language"
    )
    add_db(demo)
    demo.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Build (or find) the demo run in `args.db` and say what was done."""
    from tqdm import tqdm

    from polyroute.workflows.common import quiet_libraries
    from polyroute.workflows.demo import build_demo_store

    quiet_libraries()
    bars: list[tqdm[Any]] = []

    def progress(run_id: int, n_sequences: int, n_tokens: int) -> Any:
        bar = tqdm(total=n_sequences, unit="seq", desc="demo trace", dynamic_ncols=True, file=sys.stderr)
        bars.append(bar)
        return lambda sequences, tokens: bar.update(sequences)

    print(f"demo store {args.db}: the shipped demo model over every built-in language", file=sys.stderr)
    try:
        outcome = build_demo_store(args.db, progress)
    except KeyboardInterrupt:
        print(f"\npolyroute: interrupted; {args.db} was left as it was", file=sys.stderr)
        return 130
    finally:
        for bar in bars:
            bar.close()
    what = (
        f"run {outcome.run_id}: {outcome.n_sequences} sequences in {outcome.n_langs} languages, "
        f"{outcome.n_tokens} tokens"
    )
    if outcome.built:
        print(f"built the demo store {args.db} in {outcome.seconds:.0f} s: {what}")
    else:
        print(f"{args.db} already holds the demo {what}; nothing to do (delete the file to rebuild it)")
    return 0
