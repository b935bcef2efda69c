"""`polyroute runs`: the runs of a store, with a hint to resume the interrupted and cancelled ones;
`runs rename`, `runs note` and `runs delete` manage one run."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from moe_core.errors import PolyrouteError
from polyroute.cli.options import add_db, add_format
from polyroute.cli.output import emit_rows

RESUMABLE = ("failed", "cancelled")  # besides interrupted: a trace run that stopped early


def add_parser(commands: Any) -> None:
    runs = commands.add_parser("runs", help="list the runs in the store; rename, annotate or delete one")
    add_db(runs)
    add_format(runs)
    runs.set_defaults(handler=run)
    actions = runs.add_subparsers(dest="action", metavar="{rename,note,delete}")
    rename = actions.add_parser("rename", help="give a run a name (shown beside its id)")
    rename.add_argument("run_id", type=int, metavar="RUN", help="the run's id (see `polyroute runs`)")
    rename.add_argument("name", metavar="NAME")
    rename.set_defaults(handler=run_rename)
    note = actions.add_parser("note", help="keep a note with a run (an empty note removes it)")
    note.add_argument("run_id", type=int, metavar="RUN", help="the run's id (see `polyroute runs`)")
    note.add_argument("note", metavar="TEXT")
    note.set_defaults(handler=run_note)
    delete = actions.add_parser("delete", help="delete a run and every row it stored")
    delete.add_argument("run_id", type=int, metavar="RUN", help="the run's id (see `polyroute runs`)")
    delete.add_argument("--yes", action="store_true", help="delete without asking")
    delete.set_defaults(handler=run_delete)
    for action in (rename, note, delete):
        add_db(action, default=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from polyroute.run_status import INTERRUPTED, interrupted_note, shown_status
    from store import open_store
    from store.queries import list_runs

    with open_store(args.db, read_only=True) as store:
        runs = list_runs(store)
    statuses = {run.run_id: shown_status(run) for run in runs}
    columns = [
        *("run_id", "kind", "model_id", "corpus_id", "langs", "steered"),
        *("status", "sequences", "tokens", "created_at", "name", "note"),
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
            run.name or "",
            run.note or "",
        )
        for run in runs
    ]
    emit_rows(columns, rows, args.format)
    for run in runs:
        status = statuses[run.run_id]
        if run.kind == "trace" and (status == INTERRUPTED or status in RESUMABLE):
            why = {INTERRUPTED: interrupted_note(run), "cancelled": "it was cancelled"}.get(
                status, "it stopped on an error"
            )
            print(
                f"run {run.run_id} is {status} ({why}): finish it with `polyroute trace --resume {run.run_id} "
                f"--db {args.db}`",
                file=sys.stderr,
            )
    return 0


def run_rename(args: argparse.Namespace) -> int:
    from store import open_store
    from store.runs import rename_run

    with open_store(args.db) as store:
        rename_run(store, args.run_id, args.name)
    print(f"run {args.run_id} is now named {args.name.strip()!r}")
    return 0


def run_note(args: argparse.Namespace) -> int:
    from store import open_store
    from store.runs import annotate_run

    with open_store(args.db) as store:
        annotate_run(store, args.run_id, args.note)
    print(f"run {args.run_id}: note {'kept' if args.note.strip() else 'removed'}")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    from store import open_store
    from store.queries import get_run
    from store.runs import delete_run, no_such_run

    with open_store(args.db) as store:
        found = get_run(store, args.run_id)
        if found is None:
            raise no_such_run(store, args.run_id)
        what = f"run {found.run_id} ({found.kind}{f', {found.name}' if found.name else ''})"
        if not args.yes:
            if not sys.stdin.isatty():
                raise PolyrouteError(f"{what} was not deleted: add --yes to delete it without a question")
            answer = input(f"Delete {what} and everything it stored? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print(f"{what} was kept", file=sys.stderr)
                return 0
        deleted = delete_run(store, args.run_id)
    print(f"deleted {what}: {sum(deleted.values()):,} rows")
    return 0
