"""Analyses of which experts serve what: Delta-tau specialised experts, shared and exclusive
experts, the RISE subnetwork and routing isolation by resource class (docs/methods.md).

Each returns a typed result (the dataclass above its function; L languages, Y MoE layers, E experts)
whose `build_tables` is the one place its display tables are made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import overload

import numpy as np

from moe_core.analysis import experts, rise
from moe_core.errors import ParameterError
from polyroute.run_data import AnalysisResult, RunData, Table, lang_facts, rounded


@dataclass(frozen=True, kw_only=True, eq=False)
class LanguageExpertsResult(AnalysisResult):
    """Delta-tau language experts: each language's experts against the reference language's.

    langs: [L]; layers: [Y]; ref: the reference's position in langs; frequency: [L, Y, E] the mean
    over each language's sequences of the per-sequence activation frequency; delta: [L, Y, E] its
    Delta against the reference; specialised: [L, Y, E] bool, Delta > tau (never the reference's);
    multilingual: [Y, E] bool, specialised for at least one language."""

    langs: list[str]
    layers: list[int]
    ref: int
    frequency: np.ndarray
    delta: np.ndarray
    specialised: np.ndarray
    multilingual: np.ndarray

    def build_tables(self) -> list[Table]:
        rows = [
            (lang, layer, int(e), rounded(self.delta[i, y, e]), rounded(self.frequency[i, y, e]),
             rounded(self.frequency[self.ref, y, e]))
            for i, lang in enumerate(self.langs)
            for y, layer in enumerate(self.layers)
            for e in np.flatnonzero(self.specialised[i, y])
        ]  # fmt: skip
        return [
            Table(
                name="specialised",
                columns=("lang", "layer", "expert", "delta", "target_freq", "ref_freq"),
                rows=rows,
            ),
            Table(
                name="multilingual_per_layer",
                columns=("layer", "experts"),
                rows=[(layer, int(self.multilingual[y].sum())) for y, layer in enumerate(self.layers)],
            ),
        ]


@dataclass(frozen=True, kw_only=True, eq=False)
class TaskExpertsResult(AnalysisResult):
    """Delta-tau task experts of one language: the run (task text) against a reference run (generic text).

    layers: [Y]; task_frequency, generic_frequency: [Y, E] the language's mean per-sequence
    activation frequency in the run and in the reference run; delta: [Y, E] their Delta;
    specialised: [Y, E] bool, Delta > tau."""

    layers: list[int]
    task_frequency: np.ndarray
    generic_frequency: np.ndarray
    delta: np.ndarray
    specialised: np.ndarray

    def build_tables(self) -> list[Table]:
        rows = [
            (layer, int(e), rounded(self.delta[y, e]), rounded(self.task_frequency[y, e]),
             rounded(self.generic_frequency[y, e]))
            for y, layer in enumerate(self.layers)
            for e in np.flatnonzero(self.specialised[y])
        ]  # fmt: skip
        return [Table(name="specialised", columns=("layer", "expert", "delta", "task_freq", "generic_freq"), rows=rows)]


@overload
def analyze_experts(data: RunData, *, tau: float = ..., reference: None = None) -> LanguageExpertsResult: ...
@overload
def analyze_experts(data: RunData, *, tau: float = ..., reference: RunData) -> TaskExpertsResult: ...
def analyze_experts(
    data: RunData, *, tau: float = 0.3, reference: RunData | None = None
) -> LanguageExpertsResult | TaskExpertsResult:
    """Delta-tau specialised experts: each language against the reference language of the run, or,
    with a reference run (generic text), the task experts of the run's reference language."""
    if not 0 <= tau <= 1:
        raise ParameterError(f"{{tau}} must lie in [0, 1], not {tau}")
    target = data.sequence_mean_frequencies
    if reference is not None:
        return _task_experts(data, reference, tau)
    ref = data.ref_position()
    deltas = experts.delta(target, target[ref])
    specialised = deltas > tau
    specialised[ref] = False
    multilingual = np.asarray(specialised.any(axis=0), dtype=bool)
    return LanguageExpertsResult(
        analysis="experts",
        params={**data.params(), "kind": "language experts", "ref": data.selection.ref, "tau": tau},
        summary={"specialised": int(specialised.sum()), "multilingual": int(multilingual.sum())},
        langs=data.langs,
        layers=data.layers,
        ref=ref,
        frequency=target,
        delta=deltas,
        specialised=specialised,
        multilingual=multilingual,
    )


def _task_experts(data: RunData, reference: RunData, tau: float) -> TaskExpertsResult:
    lang = data.selection.ref
    if lang not in reference.langs:
        raise ParameterError(f"reference run {reference.layout.run_id} has no {lang}: choose {{ref}} from both runs")
    if data.layout.model_id != reference.layout.model_id or data.layers != reference.layers:
        raise ParameterError("task experts compare two runs of the same model: {ref_run} traced another model")
    target = data.sequence_mean_frequencies[data.ref_position()]
    generic = reference.sequence_mean_frequencies[reference.ref_position()]
    deltas = experts.delta(target, generic)
    specialised = deltas > tau
    return TaskExpertsResult(
        analysis="experts",
        params={**data.params(), "kind": "task experts", "lang": lang, "ref_run": reference.layout.run_id, "tau": tau},
        summary={"specialised": int(specialised.sum())},
        layers=data.layers,
        task_frequency=target,
        generic_frequency=generic,
        delta=deltas,
        specialised=specialised,
    )


@dataclass(frozen=True, kw_only=True, eq=False)
class SharedResult(AnalysisResult):
    """Shared and exclusive experts over the languages and each language's reliance on them.

    langs: [L]; layers: [Y]; shares: [L, Y, E] each language's share s_L of an expert among the
    languages keeping it in their top k; shared: [Y, E] bool, some s_L > 0 and every s_L < thr;
    exclusive: [L, Y, E] bool, the language's own (s_L > thr); on_shared, on_exclusive: [L, Y] the
    fraction of each language's top-k hits on the shared and on its exclusive experts (NaN: a layer
    it never reaches); in_group: [L] bool, the languages of `group`, and group_exclusive: [Y, E] bool,
    the experts their summed share puts above thr (both None: no group asked)."""

    langs: list[str]
    layers: list[int]
    shares: np.ndarray
    shared: np.ndarray
    exclusive: np.ndarray
    on_shared: np.ndarray
    on_exclusive: np.ndarray
    in_group: np.ndarray | None = None
    group_exclusive: np.ndarray | None = None

    def build_tables(self) -> list[Table]:
        shares, layers = self.shares, self.layers
        tables = [
            Table(
                name="shared",
                columns=("layer", "expert", "languages_using", "max_share"),
                rows=[
                    (layer, int(e), int((shares[:, y, e] > 0).sum()), rounded(shares[:, y, e].max()))
                    for y, layer in enumerate(layers)
                    for e in np.flatnonzero(self.shared[y])
                ],
            ),
            Table(
                name="exclusive",
                columns=("lang", "layer", "expert", "share"),
                rows=[
                    (lang, layer, int(e), rounded(shares[i, y, e]))
                    for i, lang in enumerate(self.langs)
                    for y, layer in enumerate(layers)
                    for e in np.flatnonzero(self.exclusive[i, y])
                ],
            ),
            Table(
                name="reliance",
                columns=("lang", "layer", "on_shared", "on_exclusive"),
                rows=[
                    (lang, layer, rounded(self.on_shared[i, y]), rounded(self.on_exclusive[i, y]))
                    for i, lang in enumerate(self.langs)
                    for y, layer in enumerate(layers)
                ],
            ),
        ]
        if self.in_group is not None and self.group_exclusive is not None:
            tables.append(
                Table(
                    name="group_exclusive",
                    columns=("layer", "expert", "group_share"),
                    rows=[
                        (layer, int(e), rounded(shares[self.in_group, y, e].sum()))
                        for y, layer in enumerate(layers)
                        for e in np.flatnonzero(self.group_exclusive[y])
                    ],
                )
            )
        return tables


def analyze_shared(data: RunData, *, k: int = 15, thr: float = 0.4, group: list[str] | None = None) -> SharedResult:
    """Shared and exclusive experts over the selected languages, and each language's reliance on them."""
    if k < 1 or not 0 < thr <= 1:
        raise ParameterError(f"{{k}} must be at least 1 and {{thr}} in (0, 1]; got k={k}, thr={thr}")
    freq = data.frequencies
    shares = experts.expert_shares(freq, k)
    common = experts.shared(shares, thr)
    own = experts.exclusive_per_language(shares, thr)
    params = {**data.params(), "k": k, "thr": thr}
    in_group = for_group = None
    if group:
        missing = [lang for lang in group if lang not in data.langs]
        if missing:
            raise ParameterError(f"{{group}} names {', '.join(missing)}, which the analysed languages lack")
        in_group = np.isin(data.langs, group)
        for_group = experts.exclusive_to(shares, in_group, thr)
        params["group"] = ",".join(group)
    if len(data.langs) == 2 and thr <= 0.5:
        notes = ["with two languages no expert can be shared unless --thr > 0.5 (the published run used k=20, thr=0.7)"]
    else:
        notes = []
    return SharedResult(
        analysis="shared",
        params=params,
        summary={"shared": int(common.sum()), "exclusive": int(own.sum())},
        notes=notes,
        langs=data.langs,
        layers=data.layers,
        shares=shares,
        shared=common,
        exclusive=own,
        on_shared=experts.reliance(freq, common),
        on_exclusive=experts.reliance(freq, own),
        in_group=in_group,
        group_exclusive=for_group,
    )


RISE_BUDGET = 32  # experts selected when no budget is given (`polyroute analyze rise`, the expert browser)


@dataclass(frozen=True, kw_only=True, eq=False)
class RiseResult(AnalysisResult):
    """The RISE subnetwork of the target language; K the experts selected.

    langs: [L]; layers: [Y]; target: the language; layer_zones: [Y] 0 shallow, 1 middle, 2 deep;
    selected: [K, 2] (position in layers, expert) in selection order; score: [Y, E] the score that
    ranks each expert in its zone (overlap-weighted in the middle zone, specificity-weighted
    elsewhere); specificity, overlap: [Y, E] S and O; target_frequency: [Y, E] the target's
    activation frequency; mean_frequency: [Y, E] the mean over the languages."""

    langs: list[str]
    layers: list[int]
    target: str
    layer_zones: np.ndarray
    selected: np.ndarray
    score: np.ndarray
    specificity: np.ndarray
    overlap: np.ndarray
    target_frequency: np.ndarray
    mean_frequency: np.ndarray

    def build_tables(self) -> list[Table]:
        rows = [
            (rank + 1, rise.ZONES[self.layer_zones[y]], self.layers[y], int(e), rounded(self.score[y, e]),
             rounded(self.specificity[y, e]), rounded(self.overlap[y, e]), rounded(self.target_frequency[y, e]),
             rounded(self.mean_frequency[y, e]))
            for rank, (y, e) in enumerate(self.selected)
        ]  # fmt: skip
        per_layer = np.bincount(self.selected[:, 0], minlength=len(self.layers))
        return [
            Table(
                name="selected",
                columns=(
                    "rank",
                    "zone",
                    "layer",
                    "expert",
                    "score",
                    "specificity",
                    "overlap",
                    "target_freq",
                    "mean_freq",
                ),
                rows=rows,
            ),
            Table(
                name="zones",
                columns=("layer", "zone", "selected"),
                rows=[
                    (layer, rise.ZONES[self.layer_zones[y]], int(per_layer[y])) for y, layer in enumerate(self.layers)
                ],
            ),
        ]


def analyze_rise(
    data: RunData,
    *,
    target: str,
    budget: int = RISE_BUDGET,
    ratios: tuple[float, float, float] = rise.DEFAULT_RATIOS,
    alpha: float = 10.0,
    zones: rise.ZoneRule = "reference",
) -> RiseResult:
    """The RISE subnetwork of a target language: scores, zones and the K experts it would train,
    selected by the rule set `zones` ("reference": the authors' code; "fraction": by depth fraction).

    The default, "reference", is that of `polyroute analyze rise` and `polyroute adapt` too."""
    if target not in data.langs:
        raise ParameterError(f"{{target}} {target} is not among the analysed languages: {', '.join(data.langs)}")
    if budget < 1:
        raise ParameterError("{budget} must be at least 1")
    if len(ratios) != 3 or min(ratios) < 0 or not np.isclose(sum(ratios), 1):
        raise ParameterError(f"{{ratios}} must be three non-negative shares that sum to 1, not {ratios}")
    if zones not in rise.ZONE_RULES:
        raise ParameterError(f"unknown {{zones}} {zones!r}: use {' or '.join(rise.ZONE_RULES)}")
    freq = data.frequencies
    index = data.langs.index(target)
    found = rise.select_rise(
        freq, index, layers=data.layers, n_layers=data.layout.n_layers, budget=budget, ratios=ratios, alpha=alpha,
        zones=zones,
    )  # fmt: skip
    scores = found.scores
    middle = (found.layer_zones == 1)[:, None]
    return RiseResult(
        analysis="rise",
        params={
            **data.params(),
            "target": target,
            "budget": budget,
            "ratios": ",".join(map(str, ratios)),
            "alpha": alpha,
            "zones": zones,
        },
        summary={
            "selected": len(found.experts),
            "zone_budgets": ",".join(map(str, rise.zone_budgets(budget, ratios))),
            "zone_quotas": ",".join(map(str, found.quotas)),
            "zone_bounds": ",".join(map(str, found.bounds)),
        },
        langs=data.langs,
        layers=data.layers,
        target=target,
        layer_zones=found.layer_zones,
        selected=np.array(found.experts, dtype=np.int64).reshape(-1, 2),
        score=np.where(middle, scores.ovlp, scores.spec),
        specificity=scores.specificity,
        overlap=scores.overlap,
        target_frequency=freq[index],
        mean_frequency=freq.mean(axis=0),
    )


@dataclass(frozen=True, kw_only=True, eq=False)
class IsolationResult(AnalysisResult):
    """Routing isolation: how far low-resource languages' top experts are from high-resource ones'.

    langs: [L]; layers: [Y]; resource_classes: [L] each language's class (None: unknown); high, low:
    [L] bool, the high- and low-resource languages; depth: [Y] layer / n_layers; overlap: [Y] the
    Jaccard overlap of the two groups' top-N expert sets; low_overlap: [L_low, Y] the same for each
    low-resource language alone (in the order of langs) against the high-resource group."""

    langs: list[str]
    layers: list[int]
    resource_classes: list[int | None]
    high: np.ndarray
    low: np.ndarray
    depth: np.ndarray
    overlap: np.ndarray
    low_overlap: np.ndarray

    def build_tables(self) -> list[Table]:
        return [
            Table(
                name="by_layer",
                columns=("layer", "depth", "overlap"),
                rows=[
                    (layer, rounded(self.depth[y], 3), rounded(self.overlap[y])) for y, layer in enumerate(self.layers)
                ],
            ),
            Table(
                name="by_language",
                columns=("lang", "resource_class", "layer", "overlap"),
                rows=[
                    (self.langs[i], self.resource_classes[i], layer, rounded(self.low_overlap[row, y]))
                    for row, i in enumerate(np.flatnonzero(self.low))
                    for y, layer in enumerate(self.layers)
                ],
            ),
        ]


def analyze_isolation(data: RunData, *, high: int = 4, low: int = 2, top_n: int | None = None) -> IsolationResult:
    """Per layer, how far the experts of low-resource languages are from those of high-resource ones."""
    classes = np.array([lang_facts(lang)["resource_class"] for lang in data.langs], dtype=object)
    is_high = np.array([c is not None and c >= high for c in classes])
    is_low = np.array([c is not None and c <= low for c in classes])
    if not is_high.any() or not is_low.any():
        raise ParameterError(
            f"isolation needs languages of resource class >= {high} and <= {low} (Joshi et al.); the run's are "
            + ", ".join(f"{lang} ({c})" for lang, c in zip(data.langs, classes, strict=True))
            + ": change {high}/{low}"
        )
    n = top_n or 2 * data.layout.top_k
    freq = data.frequencies
    overall = rise.routing_isolation(freq, is_high, is_low, n)
    per_language = np.stack(
        [rise.routing_isolation(freq, is_high, np.arange(len(data.langs)) == i, n) for i in np.flatnonzero(is_low)]
    )
    return IsolationResult(
        analysis="isolation",
        params={**data.params(), "high": f">= {high}", "low": f"<= {low}", "top_n": n},
        summary={
            "high_resource": ",".join(np.asarray(data.langs)[is_high]),
            "low_resource": ",".join(np.asarray(data.langs)[is_low]),
            "least_overlap_layer": data.layers[int(np.argmin(overall))],
        },
        langs=data.langs,
        layers=data.layers,
        resource_classes=list(classes),
        high=is_high,
        low=is_low,
        depth=np.asarray(data.layers) / data.layout.n_layers,
        overlap=overall,
        low_overlap=per_language,
    )
