"""`polyroute runs`: the runs of a store, with a hint to resume the interrupted ones."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from polyroute.cli.options import add_db, add_format
from polyroute.cli.output import emit_rows


def add_parser(commands: Any) -> None:
    runs = commands.add_parser("runs", help="list the runs in the store")
    add_db(runs)
    add_format(runs)
    runs.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from polyroute.run_status import INTERRUPTED, interrupted_note, shown_status
    from store import open_store
    from store.queries import list_runs

    with open_store(args.db, read_only=True) as store:
        runs = list_runs(store)
    statuses = {run.run_id: shown_status(run) for run in runs}
    columns = [
        *("run_id", "kind", "model_id", "corpus_id", "langs", "steered"),
        *("status", "sequences", "tokens", "created_at"),
    ]
    rows = [
        (
            run.run_id,
            run.kind,
            run.model_id,
            run.corpus_id,
            ",".join(run.params.get("langs", [])),
            "yes" if run.steered else "no",
            statuses[run.run_id],
            f"{run.n_stored}/{run.n_planned}",
            run.n_tokens,
            run.created_at.strftime("%Y-%m-%d %H:%M"),
        )
        for run in runs
    ]
    emit_rows(columns, rows, args.format)
    for run in runs:
        status = statuses[run.run_id]
        if run.kind == "trace" and status in (INTERRUPTED, "failed"):
            why = interrupted_note(run) if status == INTERRUPTED else "it stopped on an error"
            print(
                f"run {run.run_id} is {status} ({why}): finish it with `polyroute trace --resume {run.run_id} "
                f"--db {args.db}`",
                file=sys.stderr,
            )
    return 0
