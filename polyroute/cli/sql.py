"""`polyroute sql`: one read-only SQL query on the store (`store.sandbox`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from polyroute.cli.arguments import positive_int
from polyroute.cli.options import add_db, add_format
from polyroute.cli.output import emit_rows


def add_parser(commands: Any) -> None:
    sql = commands.add_parser("sql", help="run one read-only SQL query on the store")
    sql.add_argument("query", help='for example "SELECT lang, count(*) FROM sequences GROUP BY lang"')
    sql.add_argument("--max-rows", type=positive_int, default=1000, help="show at most this many rows (default 1000)")
    add_db(sql)
    add_format(sql)
    sql.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from store.sandbox import run_sql

    result = run_sql(args.db, args.query, max_rows=args.max_rows)
    emit_rows(result.columns, result.rows, args.format)
    if result.truncated:
        print(f"(showing the first {args.max_rows} rows; raise --max-rows for more)", file=sys.stderr)
    return 0
