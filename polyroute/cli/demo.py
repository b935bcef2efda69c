"""`polyroute demo`: build the demo store the app opens on (see polyroute/workflows/demo.py);
`polyroute demo --steer` then shows the steering demo (polyroute/workflows/steer.py, `DEMO_STEERING`).

Kept apart from polyroute/workflows/demo.py so that `polyroute --help` does not load torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from polyroute.cli.options import add_db


def add_parser(commands: Any) -> None:
    """Register `demo` on the `polyroute` sub-command set."""
    demo = commands.add_parser(
        "demo", help="build the demo store: the shipped tiny MoE traced over every built-in language"
    )
    add_db(demo)
    demo.add_argument(
        "--steer",
        action="store_true",
        help="then steer the demo prompt with the demo plan (a language's experts pushed) and print both texts",
    )
    demo.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Build (or find) the demo run in `args.db` and say what was done; with --steer, steer the demo prompt."""
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
    if args.steer:
        steer_demo(args.db, outcome.run_id)
    return 0


def steer_demo(db: Path, run_id: int) -> None:
    """The demo prompt, without and with the demo plan built from the demo run."""
    from moe_core.backends.options import HFOptions
    from moe_core.demo import DEMO_MODEL_DIR
    from polyroute.cli.steer import print_comparison
    from polyroute.workflows.common import hf_backend
    from polyroute.workflows.steer import DEMO_STEERING, demo_plan, steer_prompt
    from store import open_store

    with open_store(db, read_only=True) as store:
        plan = demo_plan(store, run_id)
    backend = hf_backend(DEMO_MODEL_DIR, HFOptions())
    print()
    print(f"steering demo: prompt {DEMO_STEERING.prompt!r}; {plan.source}")
    done = steer_prompt(backend, DEMO_STEERING.prompt, plan, DEMO_STEERING.max_new_tokens)
    print_comparison(plan, done, backend.info().n_experts)
