"""`polyroute import`: a folder `polyroute export` wrote added to a store, all or nothing, as a new
run or merged into a trace run of the same model and corpus (`store.exchange`). The module is
named for what it does, since `import` is a keyword."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from polyroute.cli.arguments import positive_int
from polyroute.cli.options import add_db


def add_parser(commands: Any) -> None:
    imported = commands.add_parser("import", help="add an exported run to a store (all or nothing)")
    imported.add_argument("folder", type=Path, metavar="DIR", help="the folder `polyroute export` wrote")
    imported.add_argument(
        "--merge-into",
        type=positive_int,
        metavar="RUN_ID",
        help="add its sequences to this trace run of the same model and corpus (e.g. other languages)",
    )
    add_db(imported)
    imported.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from store import open_store
    from store.exchange import MEMORY_LIMIT, import_run, verify_export
    from store.upgrades import progress_bar

    export = verify_export(args.folder)  # before the store is opened: a bad folder creates no store
    with open_store(args.db, config={"memory_limit": MEMORY_LIMIT}) as store:
        run_id = import_run(store, export, merge_into=args.merge_into, progress=progress_bar("importing", "step"))
    if args.merge_into is None:
        print(f"imported run {export.manifest.run['run_id']} of {args.folder} as run {run_id} of {args.db}")
    else:
        print(f"merged {export.manifest.run['n_sequences']} sequences of {args.folder} into run {run_id} of {args.db}")
    return 0
