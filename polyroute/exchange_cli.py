"""`polyroute export` and `polyroute import`: a run as a folder of Parquet files with a manifest,
and such a folder added to a store, as a new run or merged into a trace run of the same model and
corpus (`store.exchange`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polyroute.arguments import positive_int


def add_parser(commands: Any, add_db: Callable[[argparse.ArgumentParser], None]) -> None:
    export = commands.add_parser("export", help="write a run as Parquet files with a manifest, to share or publish")
    export.add_argument("--run", type=positive_int, required=True, metavar="RUN_ID", help="the run to export")
    export.add_argument("--out", type=Path, required=True, metavar="DIR", help="a new or empty folder")
    add_db(export)

    imported = commands.add_parser("import", help="add an exported run to a store (all or nothing)")
    imported.add_argument("folder", type=Path, metavar="DIR", help="the folder `polyroute export` wrote")
    imported.add_argument(
        "--merge-into",
        type=positive_int,
        metavar="RUN_ID",
        help="add its sequences to this trace run of the same model and corpus (e.g. other languages)",
    )
    add_db(imported)


def run(args: argparse.Namespace) -> int:
    return _export(args) if args.command == "export" else _import(args)


def _export(args: argparse.Namespace) -> int:
    from store import open_store
    from store.exchange import MEMORY_LIMIT, export_run
    from store.upgrades import progress_bar

    with open_store(args.db, read_only=True, config={"memory_limit": MEMORY_LIMIT}) as store:
        manifest = export_run(store, args.run, args.out, progress=progress_bar(f"exporting run {args.run}", "table"))
    size = sum(file.bytes for file in manifest.files)
    run = manifest.run
    print(
        f"exported run {args.run} ({run['n_sequences']} sequences, {run['n_decisions']} routing decisions) to "
        f"{args.out}: {size / 1e6:.1f} MB"
    )
    return 0


def _import(args: argparse.Namespace) -> int:
    from store import open_store
    from store.exchange import MEMORY_LIMIT, import_run, verify_export
    from store.upgrades import progress_bar

    export = verify_export(args.folder)  # before the store is opened: a bad folder creates no store
    with open_store(args.db, config={"memory_limit": MEMORY_LIMIT}) as store:
        run_id = import_run(store, export, merge_into=args.merge_into, progress=progress_bar("importing", "step"))
    n = export.manifest.run["n_sequences"]
    if args.merge_into is None:
        print(f"imported run {export.manifest.run['run_id']} of {args.folder} as run {run_id} of {args.db}")
    else:
        print(f"merged {n} sequences of {args.folder} into run {run_id} of {args.db}")
    return 0
