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

from moe_core.analysis.rise import DEFAULT_RATIOS
from moe_core.errors import PolyrouteError
from moe_core.languages import normalise_lang, parse_langs
from polyroute import analyses
from polyroute.arguments import seed
from polyroute.output import print_table
from polyroute.run_data import SOURCES, AnalysisResult, RunData, Selection
from store import Store, open_store
from store import queries as q

ANALYSES = {
    "divergence": "per-layer divergence of each language from --ref over aligned pairs (the U-shape)",
    "entropy": "routing entropy per layer (sequence-level; token-level with --token-level)",
    "consistency": "within-sequence consistency: mean Jaccard of token pairs' top-k sets",
    "experts": "Delta-tau specialised experts: language experts, or task experts with --ref-run",
    "shared": "shared and exclusive experts over the languages (k, thr) and reliance on them",
    "rise": "RISE scores and the budgeted subnetwork of --target",
    "similarity": "language similarity in the band, clusters vs families, the expert-sharing graph",
    "isolation": "routing isolation between high- and low-resource languages by layer",
    "correlation": "correlation between middle-band divergence and per-language scores (--eval-run or --scores)",
}


def add_parser(commands: Any, add_db: Callable[[argparse.ArgumentParser], None]) -> None:
    analyze = commands.add_parser("analyze", help="analyse a stored run: divergence, entropy, experts, RISE ...")
    kinds = analyze.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    for name, help_text in ANALYSES.items():
        parser = kinds.add_parser(name, help=help_text, description=help_text)
        _add_common(parser)
        add_db(parser)
        _SPECIFIC.get(name, lambda _: None)(parser)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", type=int, required=True, metavar="RUN_ID", help="the trace run (`polyroute runs`)")
    parser.add_argument("--langs", help="analyse only these languages (default: every language of the run)")
    parser.add_argument(
        "--layers", metavar="A-B", help="decoder layers to analyse; for band analyses the band (default: middle zone)"
    )
    parser.add_argument("--ref", default="eng_Latn", help="reference language (default eng_Latn)")
    parser.add_argument(
        "--source",
        default="auto",
        choices=SOURCES,
        help="the routing distribution: soft (router probabilities), weight (applied top-k weights), hard "
        "(activation frequencies); auto: soft where stored, else hard",
    )
    parser.add_argument("--format", default="table", choices=["table", "csv", "json"], help="output format")
    parser.add_argument("--table", help="with --format csv: which table to print (default the first)")


def _experts(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tau", type=float, default=0.3, help="Delta threshold (default 0.3)")
    parser.add_argument("--ref-run", type=int, help="a run over generic text: find the task experts of --run")


def _shared(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--k", type=int, default=15, help="experts kept per language and layer (default 15)")
    parser.add_argument("--thr", type=float, default=0.4, help="share threshold (default 0.4)")
    parser.add_argument("--group", help="also list the experts exclusive to these languages together")


def _rise(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", required=True, help="the language to adapt, e.g. ben_Beng")
    parser.add_argument("--budget", type=int, default=32, help="experts to select, K (default 32)")
    parser.add_argument("--ratios", default=",".join(map(str, DEFAULT_RATIOS)), help="shallow,middle,deep shares of K")
    parser.add_argument("--alpha", type=float, default=10.0, help="weight of the frequency terms (default 10)")


def _top_n(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--top-n", type=int, help="top experts per language and layer compared (default 2k)")


def _similarity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--measure", default="divergence", choices=["divergence", "cosine"])
    parser.add_argument("--clusters", type=int, help="clusters to cut (default: the number of families)")
    _top_n(parser)


def _isolation(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--high", type=int, default=4, help="resource classes >= this are high (default 4)")
    parser.add_argument("--low", type=int, default=2, help="resource classes <= this are low (default 2)")
    _top_n(parser)


def _entropy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token-level", action="store_true", help="also per-token entropy (needs --save-logits)")


def _consistency(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-pairs", type=int, default=128, help="pairs per sequence beyond which to sample (default 128)"
    )
    parser.add_argument("--seed", type=seed, default=0)


def _correlation(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--eval-run", type=int, metavar="RUN_ID", help="an evaluation run of the store (`polyroute eval`)"
    )
    parser.add_argument("--metric", help="with --eval-run: the metric (default: the run's only one)")
    parser.add_argument("--variant", help="with --eval-run: unsteered (default), a plan, or a sweep point")
    parser.add_argument("--scores", type=Path, help="or a CSV/TSV/JSON file with a lang column and a score column")
    parser.add_argument("--score-column", help="with --scores: the score column (default: the only numeric one)")


_SPECIFIC: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "experts": _experts,
    "shared": _shared,
    "rise": _rise,
    "similarity": _similarity,
    "isolation": _isolation,
    "entropy": _entropy,
    "consistency": _consistency,
    "correlation": _correlation,
}


def run(args: argparse.Namespace) -> int:
    selection = Selection(
        langs=parse_langs(args.langs) if args.langs else None,
        layers=parse_layers(args.layers) if args.layers else None,
        ref=normalise_lang(args.ref),
        source=args.source,
    )
    with open_store(args.db, read_only=True) as store:
        result = _analyse(store, args, RunData(store, args.run, selection))
    emit(result, args.format, args.table)
    return 0


def _analyse(store: Store, args: argparse.Namespace, data: RunData) -> AnalysisResult:
    name = args.analysis
    if name == "divergence":
        return analyses.analyze_divergence(data)
    if name == "entropy":
        return analyses.analyze_entropy(data, token_level=args.token_level)
    if name == "consistency":
        return analyses.analyze_consistency(data, max_pairs=args.max_pairs, seed=args.seed)
    if name == "experts":
        reference = RunData(store, args.ref_run, data.selection) if args.ref_run is not None else None
        return analyses.analyze_experts(data, tau=args.tau, reference=reference)
    if name == "shared":
        group = parse_langs(args.group) if args.group else None
        return analyses.analyze_shared(data, k=args.k, thr=args.thr, group=group)
    if name == "rise":
        return analyses.analyze_rise(
            data,
            target=normalise_lang(args.target),
            budget=args.budget,
            ratios=parse_ratios(args.ratios),
            alpha=args.alpha,
        )
    if name == "similarity":
        return analyses.analyze_similarity(data, measure=args.measure, clusters=args.clusters, top_n=args.top_n)
    if name == "isolation":
        return analyses.analyze_isolation(data, high=args.high, low=args.low, top_n=args.top_n)
    if (args.eval_run is None) == (args.scores is None):
        raise PolyrouteError("correlation needs --eval-run RUN_ID (scores in the store) or --scores FILE, one of them")
    if args.eval_run is not None:
        scores, column = stored_scores(store, args.eval_run, args.metric, args.variant)
    else:
        scores, column = read_scores(args.scores, args.score_column)
    return analyses.analyze_correlation(data, scores, score_name=column)


def parse_layers(text: str) -> tuple[int, int]:
    """`8-35` or `12` -> an inclusive range of decoder-layer indices."""
    first, _, last = text.partition("-")
    try:
        band = (int(first), int(last or first))
    except ValueError:
        raise PolyrouteError(f"--layers takes A-B or one layer, e.g. 8-35, not {text!r}") from None
    if band[0] > band[1]:
        raise PolyrouteError(f"--layers {text}: the first layer must not come after the last")
    return band


def parse_ratios(text: str) -> tuple[float, float, float]:
    """The shallow,middle,deep shares of K that `--ratios` gives (`analyze rise` and `adapt`)."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise PolyrouteError(f"--ratios takes three shares, e.g. 0.35,0.25,0.40, not {text!r}")
    return values[0], values[1], values[2]


def stored_scores(store: Store, run_id: int, metric: str | None, variant: str | None) -> tuple[dict[str, float], str]:
    """Per-language scores of one metric and variant of evaluation run `run_id` -> ({lang: score}, name)."""
    results = q.eval_results(store, run_id)
    if not results:
        raise PolyrouteError(f"run {run_id} holds no scores: give an evaluation run (`polyroute runs` lists them)")
    metrics = sorted({row.metric for row in results})
    variants = sorted({row.variant for row in results})
    if metric is None and len(metrics) > 1:
        raise PolyrouteError(f"run {run_id} scores {', '.join(metrics)}: choose one with --metric")
    metric = metric or metrics[0]
    variant = variant or ("unsteered" if "unsteered" in variants else variants[0])
    if metric not in metrics or variant not in variants:
        raise PolyrouteError(
            f"run {run_id} has no {metric!r} of variant {variant!r}: its metrics are {', '.join(metrics)}, "
            f"its variants {', '.join(variants)}"
        )
    chosen = [row for row in results if row.metric == metric and row.variant == variant]
    return {row.lang: row.value for row in chosen}, f"{chosen[0].task} {metric} ({variant})"


def read_scores(path: Path, column: str | None) -> tuple[dict[str, float], str]:
    """Per-language scores from a CSV, TSV or JSON file with a `lang` column -> ({lang: score}, column)."""
    import pandas as pd

    if not path.is_file():
        raise PolyrouteError(f"no scores file at {path}: give a CSV with columns lang and a score")
    suffix = path.suffix.lower()
    frame = pd.read_json(path) if suffix == ".json" else pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    if "lang" not in frame.columns:
        raise PolyrouteError(f"{path} has no `lang` column (it has {', '.join(map(str, frame.columns))})")
    numeric = [str(name) for name in frame.select_dtypes("number").columns]
    if column is None:
        if len(numeric) != 1:
            raise PolyrouteError(f"{path} has numeric columns {numeric}: choose one with --score-column")
        column = numeric[0]
    if column not in numeric:
        raise PolyrouteError(f"{path} has no numeric column {column!r}; numeric columns: {', '.join(numeric)}")
    return {
        normalise_lang(str(lang)): float(value) for lang, value in zip(frame["lang"], frame[column], strict=True)
    }, column


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
