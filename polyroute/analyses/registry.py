"""The one table of analyses: name -> function, its parameters and its help. `polyroute analyze`
builds a subcommand and its flags from each entry (and `--help` shows the help), and the app's
cached reads (`polyroute.ui.data.analysis`) call the function by name.

A parameter is a keyword of the function, except the `input`s: what `run_analysis` resolves into the
function's arguments (another run as `reference`, per-language scores from a run or a file). The CLI
and the Python API (`polyroute.api`) both call `run_analysis`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moe_core.analysis.rise import DEFAULT_RATIOS, ZONE_RULES
from moe_core.errors import ParameterError
from moe_core.languages import normalise_lang
from polyroute.analyses.expert import analyze_expert
from polyroute.analyses.experts import (
    RISE_BUDGET,
    analyze_experts,
    analyze_isolation,
    analyze_rise,
    analyze_shared,
)
from polyroute.analyses.routing import (
    analyze_consistency,
    analyze_correlation,
    analyze_divergence,
    analyze_entropy,
    analyze_similarity,
    compare_divergence,
)
from polyroute.analyses.scores import read_scores, stored_scores
from polyroute.run_data import AnalysisResult, RunData, Selection
from store import Store

# What a parameter's text means: int, float, str, flag (on when given), seed (0 .. 2**63-1), lang (one
# FLORES-200 code), langs (comma-separated codes), ratios (three comma-separated shares), path, run (id).
KINDS = ("int", "float", "str", "flag", "seed", "lang", "langs", "ratios", "path", "run")


@dataclass(frozen=True, kw_only=True)
class Param:
    """One parameter of an analysis; the CLI's flag is `--name` with `-` for `_`."""

    name: str
    kind: str = "str"
    default: Any = None
    help: str | None = None
    choices: tuple[Any, ...] | None = None
    required: bool = False
    metavar: str | None = None
    input: bool = False  # resolved by the caller, not passed to the function under this name

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True, kw_only=True)
class Analysis:
    name: str
    function: Callable[..., AnalysisResult]
    help: str
    params: tuple[Param, ...] = ()
    # Whether it reads a routing distribution, so that the run's selection names one (`Selection.source`:
    # soft, weight, hard or auto); the others read activation frequencies or top-k sets, whatever the source.
    source: bool = False
    # Several runs side by side (`--runs A,B,...`, the Compare runs page): (store, run ids, selection) -> result.
    compare: Callable[[Store, Sequence[int], Selection], AnalysisResult] | None = None


_TOP_N = Param(name="top_n", kind="int", help="top experts per language and layer compared (default 2k)")

ANALYSES: dict[str, Analysis] = {
    entry.name: entry
    for entry in (
        Analysis(
            name="divergence",
            function=analyze_divergence,
            source=True,
            help="per-layer divergence of each language from --ref over aligned pairs (the U-shape); "
            "--runs A,B,... compares runs on normalised depth",
            compare=compare_divergence,
        ),
        Analysis(
            name="entropy",
            function=analyze_entropy,
            source=True,
            help="routing entropy per layer (sequence-level; token-level with --token-level)",
            params=(Param(name="token_level", kind="flag", help="also per-token entropy (needs --save-logits)"),),
        ),
        Analysis(
            name="consistency",
            function=analyze_consistency,
            help="within-sequence consistency: mean Jaccard of token pairs' top-k sets",
            params=(
                Param(
                    name="max_pairs",
                    kind="int",
                    default=128,
                    help="pairs per sequence beyond which to sample (default 128)",
                ),
                Param(name="seed", kind="seed", default=0),
            ),
        ),
        Analysis(
            name="experts",
            function=analyze_experts,
            help="Delta-tau specialised experts: language experts, or task experts with --ref-run",
            params=(
                Param(name="tau", kind="float", default=0.3, help="Delta threshold (default 0.3)"),
                Param(
                    name="ref_run",
                    kind="run",
                    help="a run over generic text: find the task experts of --run",
                    input=True,
                ),
            ),
        ),
        Analysis(
            name="shared",
            function=analyze_shared,
            help="shared and exclusive experts over the languages (k, thr) and reliance on them",
            params=(
                Param(name="k", kind="int", default=15, help="experts kept per language and layer (default 15)"),
                Param(name="thr", kind="float", default=0.4, help="share threshold (default 0.4)"),
                Param(name="group", kind="langs", help="also list the experts exclusive to these languages together"),
            ),
        ),
        Analysis(
            name="rise",
            function=analyze_rise,
            help="RISE scores and the budgeted subnetwork of --target",
            params=(
                Param(name="target", kind="lang", required=True, help="the language to adapt, e.g. ben_Beng"),
                Param(
                    name="budget", kind="int", default=RISE_BUDGET, help=f"experts to select, K (default {RISE_BUDGET})"
                ),
                Param(
                    name="ratios",
                    kind="ratios",
                    default=",".join(map(str, DEFAULT_RATIOS)),
                    help="shallow,middle,deep shares of K",
                ),
                Param(name="alpha", kind="float", default=10.0, help="weight of the frequency terms (default 10)"),
                Param(
                    name="zones",
                    default="reference",
                    choices=ZONE_RULES,
                    help="the selection rules: reference (default; the authors' code: zone bounds round(0.375 n) "
                    "and round(0.625 n), overflow to the zone with most room) or fraction (zones by depth "
                    "fraction, overflow by ratio)",
                ),
            ),
        ),
        Analysis(
            name="expert",
            function=analyze_expert,
            help="one expert of --layer: its use per language and in the layers around (the band given with "
            "--layers), the tokens sent to it most, the experts chosen with it, and what the shared, experts "
            "and rise analyses call it",
            params=(
                Param(name="layer", kind="int", required=True, help="the decoder layer, an MoE layer of the run"),
                Param(name="expert", kind="int", required=True, help="the expert's index in that layer"),
                Param(
                    name="sequences",
                    kind="int",
                    default=20,
                    help="sequences read per language: those that send the expert the most tokens (default 20)",
                ),
                Param(name="top_tokens", kind="int", default=10, help="tokens listed per language (default 10)"),
                Param(
                    name="ref_run",
                    kind="run",
                    help="a run over generic text: also say whether it is a task expert of --run",
                    input=True,
                ),
            ),
        ),
        Analysis(
            name="similarity",
            function=analyze_similarity,
            source=True,
            help="language similarity in the band, clusters vs families, the expert-sharing graph",
            params=(
                Param(name="measure", default="divergence", choices=("divergence", "cosine")),
                Param(name="clusters", kind="int", help="clusters to cut (default: the number of families)"),
                _TOP_N,
            ),
        ),
        Analysis(
            name="isolation",
            function=analyze_isolation,
            help="routing isolation between high- and low-resource languages by layer",
            params=(
                Param(name="high", kind="int", default=4, help="resource classes >= this are high (default 4)"),
                Param(name="low", kind="int", default=2, help="resource classes <= this are low (default 2)"),
                _TOP_N,
            ),
        ),
        Analysis(
            name="correlation",
            function=analyze_correlation,
            source=True,
            help="correlation between middle-band divergence and per-language scores (--eval-run or --scores)",
            params=(
                Param(
                    name="eval_run",
                    kind="run",
                    metavar="RUN_ID",
                    help="an evaluation run of the store (`polyroute eval`)",
                    input=True,
                ),
                Param(name="metric", help="with --eval-run: the metric (default: the run's only one)", input=True),
                Param(
                    name="variant",
                    help="with --eval-run: unsteered (default), a plan, or a sweep point",
                    input=True,
                ),
                Param(
                    name="scores",
                    kind="path",
                    help="or a CSV/TSV/JSON file with a lang column and a score column",
                    input=True,
                ),
                Param(
                    name="score_column",
                    help="with --scores: the score column (default: the only numeric one)",
                    input=True,
                ),
            ),
        ),
    )
}


def run_analysis(name: str, data: RunData, values: Mapping[str, Any]) -> AnalysisResult:
    """The analysis `name` of `data` with its parameters' `values` (by parameter name, each already
    of its kind; a missing one takes the function's own default, `Param.default` being the CLI's
    text), its `input`s resolved in the run's store."""
    entry = ANALYSES[name]
    keywords = {p.name: values[p.name] for p in entry.params if not p.input and p.name in values}
    inputs = {p.name: values.get(p.name) for p in entry.params if p.input}
    return entry.function(data, **keywords, **_resolved_inputs(name, data, inputs))


def _resolved_inputs(name: str, data: RunData, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments an analysis's `input` parameters name: another run (`ref_run` -> `reference`),
    or per-language scores (`eval_run` or `scores`: an evaluation run's, a file's, or a {lang: score}
    mapping the caller holds)."""
    store = data.store
    if "ref_run" in inputs:
        ref_run = inputs["ref_run"]
        return {"reference": RunData(store, ref_run, data.selection) if ref_run is not None else None}
    if "eval_run" not in inputs:
        return {}
    eval_run, scores = inputs["eval_run"], inputs["scores"]
    if (eval_run is None) == (scores is None):
        raise ParameterError(f"{name} needs {{eval_run}} RUN_ID (scores in the store) or {{scores}} FILE, one of them")
    if eval_run is not None:
        found, column = stored_scores(store, eval_run, inputs["metric"], inputs["variant"])
    elif isinstance(scores, Mapping):
        found = {normalise_lang(str(lang)): float(value) for lang, value in scores.items()}
        column = inputs["score_column"] or "score"
    else:
        found, column = read_scores(Path(scores), inputs["score_column"])
    return {"scores": found, "score_name": column}
