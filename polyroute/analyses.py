"""The analyses of a stored run, from store to tables: the one facade the CLI and the app call.

Each function takes a `RunData` (the run, the selected languages and layers, read lazily) and
returns an `AnalysisResult` whose params name every setting that produced it (METHODS.md gives
the formulas; `moe_core.analysis` computes them).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from moe_core.analysis import correlation, divergence, experts, rise, routing, similarity
from moe_core.errors import PolyrouteError
from polyroute.run_data import AnalysisResult, RunData, Table, lang_facts, mean_by_group, rounded
from store import queries as q


def _source_notes(data: RunData) -> list[str]:
    if data.source == "activation_frequencies":
        return [
            "no router probabilities are stored for this run (an id-only trace) or --source hard was chosen: "
            "distributions are activation frequencies / k"
        ]
    return []


def analyze_divergence(data: RunData) -> AnalysisResult:
    """Per-layer divergence of each language from the reference over aligned pairs (and raw JS)."""
    probs = data.distributions
    ref = data.ref_position()
    normalised, raw = divergence.divergence_curves(probs, ref)
    present = ~np.isnan(probs[:, :, 0, 0])
    pairs = (present & present[ref]).sum(axis=1)
    band = data.middle_band()
    rows = [
        (lang, layer, rounded(normalised[i, y]), rounded(raw[i, y]), int(pairs[i]))
        for i, lang in enumerate(data.langs)
        for y, layer in enumerate(data.layers)
    ]
    by_lang = [
        (lang, *lang_facts(lang).values(), rounded(np.nanmean(normalised[i, band])) if pairs[i] else None)
        for i, lang in enumerate(data.langs)
    ]
    return AnalysisResult(
        analysis="divergence",
        params={**data.params(), "ref": data.selection.ref, "source": data.source, "band": _band(data)},
        tables=[
            Table(name="by_layer", columns=("lang", "layer", "divergence", "js", "pairs"), rows=rows),
            Table(
                name="band_mean",
                columns=("lang", "family", "script", "resource_class", "divergence"),
                rows=by_lang,
            ),
        ],
        notes=_source_notes(data),
    )


def _band(data: RunData) -> str:
    layers = [layer for layer, keep in zip(data.layers, data.middle_band(), strict=True) if keep]
    return f"{layers[0]}-{layers[-1]}" if layers else "none"


def analyze_entropy(data: RunData, *, token_level: bool = False) -> AnalysisResult:
    """Routing entropy per layer: of each sequence's mean distribution, and per token from logits."""
    sequence_level = routing.routing_entropy(data.distributions)
    columns = ["lang", "layer", "entropy", "normalised"]
    token_level_entropy = _token_entropy(data) if token_level else None
    if token_level_entropy is not None:
        columns.append("token_entropy")
    max_entropy = np.log(data.layout.n_experts)
    rows = []
    for i, lang in enumerate(data.langs):
        for y, layer in enumerate(data.layers):
            row = [lang, layer, rounded(sequence_level[i, y]), rounded(sequence_level[i, y] / max_entropy)]
            if token_level_entropy is not None:
                row.append(rounded(token_level_entropy[i, y]))
            rows.append(tuple(row))
    notes = _source_notes(data)
    if token_level and token_level_entropy is None:
        notes.append("token-level entropy needs router logits: trace with --save-logits")
    return AnalysisResult(
        analysis="entropy",
        params={
            **data.params(),
            "source": data.source,
            "max_entropy": rounded(max_entropy),
            "token_level": token_level,
        },
        tables=[Table(name="by_layer", columns=tuple(columns), rows=rows)],
        notes=notes,
    )


def _token_entropy(data: RunData) -> np.ndarray | None:
    """[L, Y'] mean per-token entropy from stored router logits, or None when none are stored."""
    position = data.sequence_positions()
    totals = np.zeros((len(data.langs), len(data.layout.layers)))
    counts = np.zeros_like(totals)
    sigmoid = data.layout.soft_rule != "softmax"
    for seq_rows, layer_rows, logits in q.router_logit_batches(data.store, data.layout):
        groups = position[seq_rows]
        keep = groups >= 0
        values = routing.token_entropy(logits[keep], sigmoid=sigmoid)
        np.add.at(totals, (groups[keep], layer_rows[keep]), values)
        np.add.at(counts, (groups[keep], layer_rows[keep]), 1)
    if not counts.any():
        return None
    with np.errstate(invalid="ignore"):
        return (totals / counts)[:, data.layer_index]


def analyze_consistency(data: RunData, *, max_pairs: int = 128, seed: int = 0) -> AnalysisResult:
    """Within-sequence consistency: mean Jaccard of token pairs' top-k sets, per language and layer."""
    if max_pairs < 1:
        raise PolyrouteError("--max-pairs must be at least 1")
    layout = data.layout
    per_sequence = data.over_sequences(
        lambda experts, lengths, index: routing.within_sequence_consistency(
            experts, lengths, layout.n_experts, max_pairs=max_pairs, seed=seed, keys=layout.seq_ids[index]
        ),
        (len(data.layers),),
    )
    position = data.sequence_positions()
    means = mean_by_group(per_sequence, position, len(data.langs))
    n_seqs = np.bincount(position[position >= 0], minlength=len(data.langs))
    rows = [
        (lang, layer, rounded(means[i, y]), int(n_seqs[i]))
        for i, lang in enumerate(data.langs)
        for y, layer in enumerate(data.layers)
    ]
    return AnalysisResult(
        analysis="consistency",
        params={**data.params(), "max_pairs": max_pairs, "seed": seed, "top_k": layout.top_k},
        tables=[Table(name="by_layer", columns=("lang", "layer", "consistency", "sequences"), rows=rows)],
    )


def analyze_experts(data: RunData, *, tau: float = 0.3, reference: RunData | None = None) -> AnalysisResult:
    """Delta-tau specialised experts: each language against the reference language of the run, or,
    with a reference run (generic text), the task experts of the run's reference language."""
    if not 0 <= tau <= 1:
        raise PolyrouteError(f"--tau must lie in [0, 1], not {tau}")
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
        raise PolyrouteError(f"reference run {reference.layout.run_id} has no {lang}: choose --ref from both runs")
    if data.layout.model_id != reference.layout.model_id or data.layers != reference.layers:
        raise PolyrouteError("task experts compare two runs of the same model: --ref-run traced another model")
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
        raise PolyrouteError(f"--k must be at least 1 and --thr in (0, 1]; got k={k}, thr={thr}")
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
            raise PolyrouteError(f"--group names {', '.join(missing)}, which the analysed languages lack")
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


def analyze_rise(
    data: RunData,
    *,
    target: str,
    budget: int,
    ratios: tuple[float, float, float] = rise.DEFAULT_RATIOS,
    alpha: float = 10.0,
) -> AnalysisResult:
    """The RISE subnetwork of a target language: scores, zones and the K experts it would train."""
    if target not in data.langs:
        raise PolyrouteError(f"--target {target} is not among the analysed languages: {', '.join(data.langs)}")
    if budget < 1:
        raise PolyrouteError("--budget must be at least 1")
    if len(ratios) != 3 or min(ratios) < 0 or not np.isclose(sum(ratios), 1):
        raise PolyrouteError(f"--ratios must be three non-negative shares that sum to 1, not {ratios}")
    freq = data.frequencies
    index = data.langs.index(target)
    scores = rise.rise_scores(freq, index, alpha=alpha)
    zones = rise.depth_zones(np.asarray(data.layers), data.layout.n_layers)
    chosen = rise.select_subnetwork(scores, zones, budget, ratios)
    rows = [
        (
            rank + 1,
            rise.ZONES[zones[y]],
            data.layers[y],
            e,
            rounded(scores.ovlp[y, e] if zones[y] == 1 else scores.spec[y, e]),
            rounded(scores.specificity[y, e]),
            rounded(scores.overlap[y, e]),
            rounded(freq[index, y, e]),
            rounded(freq[:, y, e].mean()),
        )
        for rank, (y, e) in enumerate(chosen)
    ]
    return AnalysisResult(
        analysis="rise",
        params={
            **data.params(),
            "target": target,
            "budget": budget,
            "ratios": ",".join(map(str, ratios)),
            "alpha": alpha,
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
                    (layer, rise.ZONES[zones[y]], sum(1 for yy, _ in chosen if yy == y))
                    for y, layer in enumerate(data.layers)
                ],
            ),
        ],
        summary={"selected": len(chosen), "zone_budgets": ",".join(map(str, rise.zone_budgets(budget, ratios)))},
    )


def analyze_isolation(data: RunData, *, high: int = 4, low: int = 2, top_n: int | None = None) -> AnalysisResult:
    """Per layer, how far the experts of low-resource languages are from those of high-resource ones."""
    classes = np.array([lang_facts(lang)["resource_class"] for lang in data.langs], dtype=object)
    is_high = np.array([c is not None and c >= high for c in classes])
    is_low = np.array([c is not None and c <= low for c in classes])
    if not is_high.any() or not is_low.any():
        raise PolyrouteError(
            f"isolation needs languages of resource class >= {high} and <= {low} (Joshi et al.); the run's are "
            + ", ".join(f"{lang} ({c})" for lang, c in zip(data.langs, classes, strict=True))
            + ": change --high/--low"
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


def analyze_similarity(
    data: RunData, *, measure: str = "divergence", clusters: int | None = None, top_n: int | None = None
) -> AnalysisResult:
    """Language similarity in the band, its clustering against families, and the expert-sharing graph."""
    if len(data.langs) < 2:
        raise PolyrouteError("similarity compares languages: analyse at least two")
    if measure not in ("divergence", "cosine"):
        raise PolyrouteError(f"unknown --measure {measure!r}: use divergence or cosine")
    band_layers = [layer for layer, keep in zip(data.layers, data.middle_band(), strict=True) if keep]
    if not band_layers:
        raise PolyrouteError("the middle zone holds no MoE layer of this model: choose the band with --layers A-B")
    # Read only the band's layers: the rest would cost time and memory and change nothing.
    in_band = data if data.selection.layers else data.narrowed((band_layers[0], band_layers[-1]))
    band = np.ones(len(in_band.layers), dtype=bool)
    if measure == "divergence":
        matrix = similarity.divergence_similarity(in_band.distributions, band)
    else:
        matrix = similarity.cosine_similarity(in_band.frequencies, band)
    families = [lang_facts(lang)["family"] or lang for lang in data.langs]
    scripts = [lang_facts(lang)["script"] or lang for lang in data.langs]
    n_clusters = clusters or len(set(families))
    labels = similarity.cluster(np.nan_to_num(matrix), n_clusters)
    n = top_n or 2 * data.layout.top_k
    graph = similarity.sharing_graph(in_band.frequencies, data.langs, band, n)
    groups = similarity.communities(graph)
    community_of = {lang: index + 1 for index, group in enumerate(groups) for lang in group}
    return AnalysisResult(
        analysis="similarity",
        params={**data.params(), "band": _band(data), "measure": measure, "clusters": n_clusters, "top_n": n},
        tables=[
            Table(
                name="similarity",
                columns=("lang_a", "lang_b", "similarity"),
                rows=[
                    (a, b, rounded(matrix[i, j])) for i, a in enumerate(data.langs) for j, b in enumerate(data.langs)
                ],
            ),
            Table(
                name="clusters",
                columns=("lang", "family", "cluster", "community"),
                rows=[(lang, families[i], int(labels[i]), community_of[lang]) for i, lang in enumerate(data.langs)],
            ),
            Table(
                name="graph",
                columns=("lang_a", "lang_b", "shared_experts"),
                rows=[(a, b, attrs["shared"]) for a, b, attrs in graph.edges(data=True)],
            ),
        ],
        summary={
            "ari_clusters_vs_families": rounded(similarity.adjusted_rand_index(labels, families), 4),
            # Small or young models often split by script before family (the demo model does).
            "ari_clusters_vs_scripts": rounded(similarity.adjusted_rand_index(labels, scripts), 4),
            "ari_communities_vs_families": rounded(
                similarity.adjusted_rand_index([community_of[lang] for lang in data.langs], families), 4
            ),
            "communities": len(groups),
        },
    )


def analyze_correlation(data: RunData, scores: Mapping[str, float], *, score_name: str = "score") -> AnalysisResult:
    """Pearson and Spearman correlation between middle-band divergence and a per-language score."""
    div = analyze_divergence(data)
    band_mean = {row[0]: row[-1] for row in div.table("band_mean").rows}
    langs = [lang for lang in data.langs if lang != data.selection.ref and lang in scores]
    x = np.array([np.nan if band_mean[lang] is None else band_mean[lang] for lang in langs], dtype=float)
    y = np.array([scores[lang] for lang in langs], dtype=float)
    try:
        found = correlation.divergence_score_correlation(x, y)
    except ValueError as error:
        raise PolyrouteError(f"{error}; scores cover {', '.join(sorted(scores)) or 'no language'}") from None
    return AnalysisResult(
        analysis="correlation",
        params={**div.params, "score": score_name},
        tables=[
            Table(
                name="by_language",
                columns=("lang", "divergence", score_name),
                rows=[(lang, rounded(x[i]), rounded(y[i])) for i, lang in enumerate(langs)],
            )
        ],
        summary={
            "n": found.n,
            "pearson_r": rounded(found.pearson_r, 4),
            "pearson_p": rounded(found.pearson_p, 6),
            "spearman_rho": rounded(found.spearman_rho, 4),
            "spearman_p": rounded(found.spearman_p, 6),
        },
        notes=div.notes,
    )
