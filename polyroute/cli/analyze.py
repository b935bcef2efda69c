"""`polyroute analyze ANALYSIS --run RUN_ID`: the analyses of a stored run, as tables, CSV or JSON.

Every output names its parameters: a header line (table), `# key=value` lines before the CSV
(read it with `pandas.read_csv(..., comment="#")`), or a `params` object (JSON).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moe_core.errors import PolyrouteError
from moe_core.languages import normalise_lang, parse_langs
from polyroute.analyses.registry import ANALYSES, Param, run_analysis
from polyroute.cli.arguments import parse_layers, parse_ratios, run_ids, seed
from polyroute.cli.options import add_db
from polyroute.cli.output import print_table
from polyroute.run_data import SOURCES, AnalysisResult, RunData, Selection
from store import open_store


def add_parser(commands: Any) -> None:
    analyze = commands.add_parser("analyze", help="analyse a stored run: divergence, entropy, experts, RISE ...")
    kinds = analyze.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    for entry in ANALYSES.values():
        parser = kinds.add_parser(entry.name, help=entry.help, description=entry.help)
        _add_common(parser, comparable=entry.compare is not None)
        _add_source(parser, entry.name, shown=entry.source)
        add_db(parser)
        for param in entry.params:
            _add_param(parser, param)
    analyze.set_defaults(handler=run)


def _add_common(parser: argparse.ArgumentParser, *, comparable: bool) -> None:
    parser.add_argument(
        "--run", type=int, required=not comparable, metavar="RUN_ID", help="the trace run (`polyroute runs`)"
    )
    if comparable:
        parser.add_argument(
            "--runs",
            type=run_ids,
            metavar="A,B,...",
            help="compare these trace runs instead (steered ones against an unsteered run of the same model)",
        )
    parser.add_argument("--langs", help="analyse only these languages (default: every language of the run)")
    parser.add_argument(
        "--layers", metavar="A-B", help="decoder layers to analyse; for band analyses the band (default: middle zone)"
    )
    parser.add_argument("--ref", default="eng_Latn", help="reference language (default eng_Latn)")
    parser.add_argument("--format", default="table", choices=["table", "csv", "json"], help="output format")
    parser.add_argument("--table", help="with --format csv: which table to print (default the first)")


def _add_source(parser: argparse.ArgumentParser, analysis: str, *, shown: bool) -> None:
    """--source on the analyses that read a routing distribution; the others take it only to refuse it
    with a reason (`_source_of`)."""
    if not shown:
        parser.add_argument("--source", choices=SOURCES, help=argparse.SUPPRESS)
        return
    only = " (with --measure divergence; cosine compares activation frequencies)" if analysis == "similarity" else ""
    parser.add_argument(
        "--source",
        default="auto",
        choices=SOURCES,
        help="the routing distribution" + only + ": soft (mean router probabilities), weight (applied top-k "
        "weights normalised per token, the 2510.04694 authors' default), hard (activation frequencies / k); "
        "auto (default): soft where the run stored it, else hard. An id-only trace gives hard only",
    )


def _source_of(args: argparse.Namespace) -> str:
    if ANALYSES[args.analysis].source:
        return str(args.source)
    if args.source is not None:
        takers = ", ".join(entry.name for entry in ANALYSES.values() if entry.source)
        raise PolyrouteError(
            f"{args.analysis} counts the experts each token chose, the same for every routing distribution: "
            f"leave out --source (it is for {takers})"
        )
    return "auto"


# How each kind of parameter is read from the command line (polyroute.analyses.registry.KINDS).
_TYPES: dict[str, Callable[[str], Any] | None] = {
    "int": int,
    "float": float,
    "str": None,
    "seed": seed,
    "lang": None,
    "langs": None,
    "ratios": None,
    "path": Path,
    "run": int,
}


def _add_param(parser: argparse.ArgumentParser, param: Param) -> None:
    if param.kind == "flag":
        parser.add_argument(param.flag, action="store_true", help=param.help)
        return
    options: dict[str, Any] = {"type": _TYPES[param.kind], "default": param.default, "help": param.help}
    if param.choices is not None:
        options["choices"] = list(param.choices)
    if param.required:
        options["required"] = True
    if param.metavar is not None:
        options["metavar"] = param.metavar
    parser.add_argument(param.flag, **options)


def _value(param: Param, value: Any) -> Any:
    """A flag's parsed value as the analysis takes it."""
    if value is None:
        return None
    if param.kind == "lang":
        return normalise_lang(value)
    if param.kind == "langs":
        return parse_langs(value)
    if param.kind == "ratios":
        return parse_ratios(value)
    return value


def run(args: argparse.Namespace) -> int:
    selection = Selection(
        langs=parse_langs(args.langs) if args.langs else None,
        layers=parse_layers(args.layers) if args.layers else None,
        ref=normalise_lang(args.ref),
        source=_source_of(args),
    )
    runs = getattr(args, "runs", None)
    if runs is not None and args.run is not None:
        raise PolyrouteError(f"give --run RUN_ID or --runs A,B,..., not both: --runs compares {args.analysis} of runs")
    if runs is None and args.run is None:
        raise PolyrouteError(f"{args.analysis} needs --run RUN_ID (or --runs A,B,... to compare runs)")
    with open_store(args.db, read_only=True) as store:
        compare = ANALYSES[args.analysis].compare
        if runs is not None and compare is not None:
            result = compare(store, runs, selection)
        else:
            result = _analyse(args, RunData(store, args.run, selection))
    emit(result, args.format, args.table)
    return 0


def _analyse(args: argparse.Namespace, data: RunData) -> AnalysisResult:
    values = {p.name: _value(p, getattr(args, p.name)) for p in ANALYSES[args.analysis].params}
    return run_analysis(args.analysis, data, values)


def emit(result: AnalysisResult, fmt: str, table_name: str | None = None) -> None:
    if fmt == "json":
        payload = {
            "analysis": result.analysis,
            "params": result.params,
            "summary": result.summary,
            "notes": result.notes,
            "tables": {table.name: table.records() for table in result.tables},
        }
        print(json.dumps(payload, ensure_ascii=False, default=str))
        return
    if fmt == "csv":
        try:
            table = result.table(table_name) if table_name else result.tables[0]
        except KeyError:
            names = ", ".join(t.name for t in result.tables)
            raise PolyrouteError(f"{result.analysis} has no table {table_name!r}; its tables: {names}") from None
        out = csv.writer(sys.stdout)
        for key, value in {"analysis": result.analysis, **result.params, "table": table.name}.items():
            sys.stdout.write(f"# {key}={value}\n")
        out.writerow(table.columns)
        out.writerows(table.rows)
        return
    print(f"{result.analysis}: " + "  ".join(f"{key}={_short(value)}" for key, value in result.params.items()))
    for table in result.tables:
        print(f"\n{table.name} ({len(table.rows)} rows)")
        print_table(table.columns, table.rows)
    if result.summary:
        print("\n" + "  ".join(f"{key}={value}" for key, value in result.summary.items()))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)


def _short(value: Any) -> str:
    """A long list of languages in the header of a text table: the first few and how many in all."""
    parts = str(value).split(",")
    return str(value) if len(parts) <= 6 else f"{','.join(parts[:4])},... ({len(parts)})"
