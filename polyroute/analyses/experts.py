"""Analyses of which experts serve what: Delta-tau specialised experts, shared and exclusive
experts, the RISE subnetwork and routing isolation by resource class (docs/methods.md)."""

from __future__ import annotations

import numpy as np

from moe_core.analysis import experts, rise
from moe_core.errors import ParameterError
from polyroute.run_data import AnalysisResult, RunData, Table, lang_facts, rounded


def analyze_experts(data: RunData, *, tau: float = 0.3, reference: RunData | None = None) -> AnalysisResult:
    """Delta-tau specialised experts: each language against the reference language of the run, or,
    with a reference run (generic text), the task experts of the run's reference language."""
    if not 0 <= tau <= 1:
        raise ParameterError(f"{{tau}} must lie in [0, 1], not {tau}")
    target = data.sequence_mean_frequencies
    if reference is not None:
        return _task_experts(data, reference, tau)
    ref = data.ref_position()
    deltas = experts.delta(target, target[ref])
    rows = [
        (lang, layer, int(e), rounded(deltas[i, y, e]), rounded(target[i, y, e]), rounded(target[ref, y, e]))
        for i, lang in enumerate(data.langs)
        if i != ref
        for y, layer in enumerate(data.layers)
        for e in np.flatnonzero(deltas[i, y] > tau)
    ]
    multilingual = np.asarray((np.delete(deltas, ref, axis=0) > tau).any(axis=0), dtype=bool)
    return AnalysisResult(
        analysis="experts",
        params={**data.params(), "kind": "language experts", "ref": data.selection.ref, "tau": tau},
        tables=[
            Table(
                name="specialised",
                columns=("lang", "layer", "expert", "delta", "target_freq", "ref_freq"),
                rows=rows,
            ),
            Table(
                name="multilingual_per_layer",
                columns=("layer", "experts"),
                rows=[(layer, int(multilingual[y].sum())) for y, layer in enumerate(data.layers)],
            ),
        ],
        summary={"specialised": len(rows), "multilingual": int(multilingual.sum())},
    )


def _task_experts(data: RunData, reference: RunData, tau: float) -> AnalysisResult:
    lang = data.selection.ref
    if lang not in reference.langs:
        raise ParameterError(f"reference run {reference.layout.run_id} has no {lang}: choose {{ref}} from both runs")
    if data.layout.model_id != reference.layout.model_id or data.layers != reference.layers:
        raise ParameterError("task experts compare two runs of the same model: {ref_run} traced another model")
    target = data.sequence_mean_frequencies[data.ref_position()]
    generic = reference.sequence_mean_frequencies[reference.ref_position()]
    deltas = experts.delta(target, generic)
    rows = [
        (layer, int(e), rounded(deltas[y, e]), rounded(target[y, e]), rounded(generic[y, e]))
        for y, layer in enumerate(data.layers)
        for e in np.flatnonzero(deltas[y] > tau)
    ]
    return AnalysisResult(
        analysis="experts",
        params={**data.params(), "kind": "task experts", "lang": lang, "ref_run": reference.layout.run_id, "tau": tau},
        tables=[
            Table(name="specialised", columns=("layer", "expert", "delta", "task_freq", "generic_freq"), rows=rows)
        ],
        summary={"specialised": len(rows)},
    )


def analyze_shared(data: RunData, *, k: int = 15, thr: float = 0.4, group: list[str] | None = None) -> AnalysisResult:
    """Shared and exclusive experts over the selected languages, and each language's reliance on them."""
    if k < 1 or not 0 < thr <= 1:
        raise ParameterError(f"{{k}} must be at least 1 and {{thr}} in (0, 1]; got k={k}, thr={thr}")
    freq = data.frequencies
    shares = experts.expert_shares(freq, k)
    common = experts.shared(shares, thr)
    own = experts.exclusive_per_language(shares, thr)
    on_shared = experts.reliance(freq, common)
    on_own = experts.reliance(freq, own)
    tables = [
        Table(
            name="shared",
            columns=("layer", "expert", "languages_using", "max_share"),
            rows=[
                (layer, int(e), int((shares[:, y, e] > 0).sum()), rounded(shares[:, y, e].max()))
                for y, layer in enumerate(data.layers)
                for e in np.flatnonzero(common[y])
            ],
        ),
        Table(
            name="exclusive",
            columns=("lang", "layer", "expert", "share"),
            rows=[
                (lang, layer, int(e), rounded(shares[i, y, e]))
                for i, lang in enumerate(data.langs)
                for y, layer in enumerate(data.layers)
                for e in np.flatnonzero(own[i, y])
            ],
        ),
        Table(
            name="reliance",
            columns=("lang", "layer", "on_shared", "on_exclusive"),
            rows=[
                (lang, layer, rounded(on_shared[i, y]), rounded(on_own[i, y]))
                for i, lang in enumerate(data.langs)
                for y, layer in enumerate(data.layers)
            ],
        ),
    ]
    params = {**data.params(), "k": k, "thr": thr}
    if group:
        missing = [lang for lang in group if lang not in data.langs]
        if missing:
            raise ParameterError(f"{{group}} names {', '.join(missing)}, which the analysed languages lack")
        in_group = np.isin(data.langs, group)
        for_group = experts.exclusive_to(shares, in_group, thr)
        tables.append(
            Table(
                name="group_exclusive",
                columns=("layer", "expert", "group_share"),
                rows=[
                    (layer, int(e), rounded(shares[in_group, y, e].sum()))
                    for y, layer in enumerate(data.layers)
                    for e in np.flatnonzero(for_group[y])
                ],
            )
        )
        params["group"] = ",".join(group)
    if len(data.langs) == 2 and thr <= 0.5:
        notes = ["with two languages no expert can be shared unless --thr > 0.5 (the published run used k=20, thr=0.7)"]
    else:
        notes = []
    return AnalysisResult(
        analysis="shared",
        params=params,
        tables=tables,
        summary={"shared": int(common.sum()), "exclusive": int(own.sum())},
        notes=notes,
    )


RISE_BUDGET = 32  # experts selected when no budget is given (`polyroute analyze rise`, the expert browser)


def analyze_rise(
    data: RunData,
    *,
    target: str,
    budget: int = RISE_BUDGET,
    ratios: tuple[float, float, float] = rise.DEFAULT_RATIOS,
    alpha: float = 10.0,
    zones: rise.ZoneRule = "reference",
) -> AnalysisResult:
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
    scores, layer_zones = found.scores, found.layer_zones
    rows = [
        (
            rank + 1,
            rise.ZONES[layer_zones[y]],
            data.layers[y],
            e,
            rounded(scores.ovlp[y, e] if layer_zones[y] == 1 else scores.spec[y, e]),
            rounded(scores.specificity[y, e]),
            rounded(scores.overlap[y, e]),
            rounded(freq[index, y, e]),
            rounded(freq[:, y, e].mean()),
        )
        for rank, (y, e) in enumerate(found.experts)
    ]
    return AnalysisResult(
        analysis="rise",
        params={
            **data.params(),
            "target": target,
            "budget": budget,
            "ratios": ",".join(map(str, ratios)),
            "alpha": alpha,
            "zones": zones,
        },
        tables=[
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
                    (layer, rise.ZONES[layer_zones[y]], sum(1 for yy, _ in found.experts if yy == y))
                    for y, layer in enumerate(data.layers)
                ],
            ),
        ],
        summary={
            "selected": len(found.experts),
            "zone_budgets": ",".join(map(str, rise.zone_budgets(budget, ratios))),
            "zone_quotas": ",".join(map(str, found.quotas)),
            "zone_bounds": ",".join(map(str, found.bounds)),
        },
    )


def analyze_isolation(data: RunData, *, high: int = 4, low: int = 2, top_n: int | None = None) -> AnalysisResult:
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
    depth = np.asarray(data.layers) / data.layout.n_layers
    return AnalysisResult(
        analysis="isolation",
        params={**data.params(), "high": f">= {high}", "low": f"<= {low}", "top_n": n},
        tables=[
            Table(
                name="by_layer",
                columns=("layer", "depth", "overlap"),
                rows=[(layer, rounded(depth[y], 3), rounded(overall[y])) for y, layer in enumerate(data.layers)],
            ),
            Table(
                name="by_language",
                columns=("lang", "resource_class", "layer", "overlap"),
                rows=[
                    (data.langs[i], classes[i], layer, rounded(per_language[row, y]))
                    for row, i in enumerate(np.flatnonzero(is_low))
                    for y, layer in enumerate(data.layers)
                ],
            ),
        ],
        summary={
            "high_resource": ",".join(np.asarray(data.langs)[is_high]),
            "low_resource": ",".join(np.asarray(data.langs)[is_low]),
            "least_overlap_layer": data.layers[int(np.argmin(overall))],
        },
    )
