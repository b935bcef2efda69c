"""`polyroute upgrade`: bring a store written by an earlier Polyroute to this version's schema, in
place (each migration all or nothing, with a progress bar for the ones that compute data), or
rebuild a run's routing summaries after its rows were edited by hand."""

from __future__ import annotations

import argparse
from typing import Any

from moe_core.errors import PolyrouteError
from polyroute.cli.options import add_db


def add_parser(commands: Any) -> None:
    upgrade = commands.add_parser("upgrade", help="upgrade a store written by an earlier Polyroute, in place")
    upgrade.add_argument(
        "--rebuild-run", type=int, metavar="RUN_ID", help="also rebuild this run's routing summaries from its rows"
    )
    add_db(upgrade)
    upgrade.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import duckdb

    from store import migrations, open_store, upgrades
    from store import queries as q

    before = []
    if args.db.is_file():
        with duckdb.connect(str(args.db), read_only=True) as con:
            before = migrations.applied(con)
    elif args.rebuild_run is None:
        raise PolyrouteError(f"no store at {args.db}: pass --db the store to upgrade")
    with open_store(args.db) as store:
        after = migrations.applied(store.con)
        if args.rebuild_run is not None:
            if q.get_run(store, args.rebuild_run) is None:
                raise PolyrouteError(f"run {args.rebuild_run} is not in {args.db}: list runs with `polyroute runs`")
            upgrades.rebuild_summaries(store, args.rebuild_run)
            print(f"rebuilt the routing summaries of run {args.rebuild_run}")
    if before == after:
        print(f"{args.db} is up to date (schema {after[-1]})")
    else:
        print(f"{args.db} upgraded from schema {max(before, default=0)} to {after[-1]}")
    return 0
