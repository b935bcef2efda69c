"""The `polyroute` command: trace a corpus into the store, list runs, query the store with SQL.

Bad input ends with one line, `polyroute: error: <problem>: <fix>`, and exit code 2; nothing
already stored is changed by a failed command.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moe_core.errors import PolyrouteError
from moe_core.languages import parse_langs
from store import StoreError

DEFAULT_DB = "polyroute.duckdb"
EXIT_USAGE = 2


def _db_default() -> Path:
    return Path(os.environ.get("POLYROUTE_DB", DEFAULT_DB))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polyroute", description="Capture and explore how Mixture-of-Experts models route languages."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    trace = commands.add_parser("trace", help="run a model over a parallel corpus and store its routing")
    trace.add_argument("--model", type=Path, help="folder of a transformers MoE checkpoint")
    trace.add_argument(
        "--corpus", type=Path, help="parallel corpus: .jsonl, .csv, .tsv or .parquet (item_id, lang, text)"
    )
    trace.add_argument("--langs", help="comma-separated FLORES-200 codes, e.g. eng_Latn,deu_Latn")
    trace.add_argument("--limit", type=int, help="trace only the first N items of the corpus")
    trace.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default 8)")
    trace.add_argument("--save-logits", action="store_true", help="also store every token's router logits")
    trace.add_argument("--resume", type=int, metavar="RUN_ID", help="finish an interrupted run with its own settings")
    trace.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    trace.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16 (default auto)")
    trace.add_argument("--max-tokens", type=int, default=512, help="truncate longer texts (default 512)")
    trace.add_argument("--template", default="plain", choices=["plain", "chat"], help="wrap texts in the chat template")
    trace.add_argument("--model-id", help="name of the model in the store (default: the folder name)")
    _add_db(trace)

    runs = commands.add_parser("runs", help="list the runs in the store")
    _add_db(runs)
    _add_format(runs)

    sql = commands.add_parser("sql", help="run one read-only SQL query on the store")
    sql.add_argument("query", help='for example "SELECT lang, count(*) FROM sequences GROUP BY lang"')
    sql.add_argument("--max-rows", type=int, default=1000, help="show at most this many rows (default 1000)")
    _add_db(sql)
    _add_format(sql)
    return parser


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, default=None, help=f"store file (default $POLYROUTE_DB or {DEFAULT_DB})")


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", default="table", choices=["table", "csv", "json"], help="output format")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.db = args.db or _db_default()
    try:
        if args.command == "trace":
            return _trace(args)
        if args.command == "runs":
            return _runs(args)
        return _sql(args)
    except (PolyrouteError, StoreError) as error:
        print(f"polyroute: error: {error}", file=sys.stderr)
        return EXIT_USAGE


def _trace(args: argparse.Namespace) -> int:
    _quiet_transformers()
    from tqdm import tqdm

    from moe_core.backends.hf import HFOptions
    from polyroute.tracing import TraceRequest, resume_trace, start_trace

    bars: list[tqdm[Any]] = []
    started: list[int] = []

    def progress(run_id: int, n_sequences: int, n_tokens: int) -> Any:
        started.append(run_id)
        bar = tqdm(total=n_sequences, unit="seq", desc=f"run {run_id}", dynamic_ncols=True, file=sys.stderr)
        bars.append(bar)
        return lambda sequences, tokens: bar.update(sequences)

    try:
        if args.resume is not None:
            ignored = [f"--{name}" for name in ("model", "corpus", "langs") if getattr(args, name) is not None]
            if ignored:
                print(
                    f"note: {', '.join(ignored)} ignored: run {args.resume} resumes with its own settings",
                    file=sys.stderr,
                )
            outcome = resume_trace(args.db, args.resume, progress)
        else:
            missing = [name for name in ("model", "corpus", "langs") if getattr(args, name) is None]
            if missing:
                raise PolyrouteError(f"trace needs --{', --'.join(missing)} (or --resume RUN_ID)")
            options = HFOptions(
                device=args.device,
                dtype=args.dtype,
                max_tokens=args.max_tokens,
                template=args.template,
                model_id=args.model_id,
            )
            request = TraceRequest(
                db=args.db,
                model=args.model,
                corpus=args.corpus,
                langs=parse_langs(args.langs),
                limit=args.limit,
                batch_size=args.batch_size,
                save_logits=args.save_logits,
                options=options,
            )
            outcome = start_trace(request, progress)
    except KeyboardInterrupt:
        hint = f": finish it with `polyroute trace --resume {started[0]} --db {args.db}`" if started else ""
        print(f"\npolyroute: interrupted{hint}", file=sys.stderr)
        return 130
    finally:
        for bar in bars:
            bar.close()
    if outcome.already_complete:
        print(f"run {outcome.run_id} is already complete; nothing to do")
        return 0
    if outcome.n_truncated:
        print(f"warning: {outcome.n_truncated} texts were longer than --max-tokens and were truncated", file=sys.stderr)
    if outcome.missing:
        item, lang = outcome.missing[0]
        print(
            f"warning: {len(outcome.missing)} (item, language) pairs are missing from the corpus "
            f"(first: item {item} in {lang}); those items were traced in the languages they have",
            file=sys.stderr,
        )
    print(f"run {outcome.run_id}: stored {outcome.n_sequences} sequences, {outcome.n_tokens} tokens in {args.db}")
    return 0


def _runs(args: argparse.Namespace) -> int:
    from store import open_store
    from store.queries import list_runs

    with open_store(args.db, read_only=True) as store:
        runs = list_runs(store)
    columns = ["run_id", "kind", "model_id", "corpus_id", "langs", "status", "sequences", "tokens", "created_at"]
    rows = [
        (
            run.run_id,
            run.kind,
            run.model_id,
            run.corpus_id,
            ",".join(run.params.get("langs", [])),
            run.status,
            f"{run.n_stored}/{run.n_planned}",
            run.n_tokens,
            run.created_at.strftime("%Y-%m-%d %H:%M"),
        )
        for run in runs
    ]
    _emit(columns, rows, args.format)
    return 0


def _sql(args: argparse.Namespace) -> int:
    from store.sandbox import run_sql

    result = run_sql(args.db, args.query, max_rows=args.max_rows)
    _emit(result.columns, result.rows, args.format)
    if result.truncated:
        print(f"(showing the first {args.max_rows} rows; raise --max-rows for more)", file=sys.stderr)
    return 0


def _emit(columns: list[str], rows: Sequence[Sequence[Any]], fmt: str) -> None:
    if fmt == "csv":
        out = csv.writer(sys.stdout)
        out.writerow(columns)
        out.writerows(rows)
    elif fmt == "json":
        print(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], default=str, ensure_ascii=False))
    else:
        cells = [[str(v) for v in row] for row in rows]
        widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
        for line in [columns, ["-" * width for width in widths], *cells]:
            print("  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True)).rstrip())


def _quiet_transformers() -> None:
    """transformers' own loading bars and notices would bury ours."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


if __name__ == "__main__":
    raise SystemExit(main())
