"""`polyroute export`: a run written as a folder of Parquet files with a manifest, to share, to
publish, or to merge with runs traced elsewhere (`store.exchange`; `polyroute import` reads it)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from polyroute.cli.arguments import positive_int
from polyroute.cli.options import add_db


def add_parser(commands: Any) -> None:
    export = commands.add_parser("export", help="write a run as Parquet files with a manifest, to share or publish")
    export.add_argument("--run", type=positive_int, required=True, metavar="RUN_ID", help="the run to export")
    export.add_argument("--out", type=Path, required=True, metavar="DIR", help="a new or empty folder")
    add_db(export)
    export.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from store import open_store
    from store.exchange import MEMORY_LIMIT, export_run
    from store.upgrades import progress_bar

    with open_store(args.db, read_only=True, config={"memory_limit": MEMORY_LIMIT}) as store:
        manifest = export_run(store, args.run, args.out, progress=progress_bar(f"exporting run {args.run}", "table"))
    size = sum(file.bytes for file in manifest.files)
    print(
        f"exported run {args.run} ({manifest.run['n_sequences']} sequences, {manifest.run['n_decisions']} routing "
        f"decisions) to {args.out}: {size / 1e6:.1f} MB"
    )
    return 0
