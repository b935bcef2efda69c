"""Per-language scores for `analyze_correlation`: one metric and variant of an evaluation run of the
store, or a column of a CSV, TSV or JSON file with a `lang` column.
"""

from __future__ import annotations

from pathlib import Path

from moe_core.errors import PolyrouteError
from moe_core.languages import normalise_lang
from store import Store
from store import queries as q


def stored_scores(store: Store, run_id: int, metric: str | None, variant: str | None) -> tuple[dict[str, float], str]:
    """Per-language scores of one metric and variant of evaluation run `run_id` -> ({lang: score}, name)."""
    results = q.eval_results(store, run_id)
    if not results:
        raise PolyrouteError(f"run {run_id} holds no scores: give an evaluation run (`polyroute runs` lists them)")
    metrics = sorted({row.metric for row in results})
    variants = sorted({row.variant for row in results})
    if metric is None and len(metrics) > 1:
        raise PolyrouteError(f"run {run_id} scores {', '.join(metrics)}: choose one with {{metric}}")
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
            raise PolyrouteError(f"{path} has numeric columns {numeric}: choose one with {{score_column}}")
        column = numeric[0]
    if column not in numeric:
        raise PolyrouteError(f"{path} has no numeric column {column!r}; numeric columns: {', '.join(numeric)}")
    return {
        normalise_lang(str(lang)): float(value) for lang, value in zip(frame["lang"], frame[column], strict=True)
    }, column
