"""Analyses of how languages route: divergence from a reference, entropy, consistency, language
similarity and its structure, and the correlation of divergence with task scores (docs/methods.md)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from moe_core.analysis import correlation, divergence, routing, similarity, summaries
from moe_core.errors import ParameterError, PolyrouteError
from polyroute.run_data import AnalysisResult, RunData, Table, lang_facts, mean_by_group, rounded
from store import queries as q


def _source_notes(data: RunData) -> list[str]:
    if data.distribution == "hard":
        return [
            "no router probabilities are stored for this run (an id-only trace) or the hard source was chosen: "
            "distributions are activation frequencies / k"
        ]
    return []


def analyze_divergence(data: RunData) -> AnalysisResult:
    """Per-layer divergence of each language from the reference over aligned pairs (and raw JS)."""
    ref = data.ref_position()
    sums = data.pair_divergence
    normalised, raw, pairs = divergence.divergence_curves(
        sums.n, sums.js, sums.normalised, ref, int(data.n_sequences[ref])
    )
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
    sequence_level = data.mean_entropy
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
        raise ParameterError("{max_pairs} must be at least 1")
    layout = data.layout
    if (max_pairs, seed) == (summaries.CONSISTENCY_PAIRS, summaries.CONSISTENCY_SEED):
        means = data.mean_consistency  # kept by the writer
    else:  # other pairs: sampled afresh from every token's route, streamed
        per_sequence = data.over_sequences(
            lambda experts, lengths, index: routing.within_sequence_consistency(
                experts, lengths, layout.n_experts, max_pairs=max_pairs, seed=seed, keys=layout.seq_ids[index]
            ),
            (len(data.layers),),
        )
        means = mean_by_group(per_sequence, data.sequence_positions(), len(data.langs))
    n_seqs = data.n_sequences
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


def analyze_similarity(
    data: RunData, *, measure: str = "divergence", clusters: int | None = None, top_n: int | None = None
) -> AnalysisResult:
    """Language similarity in the band, its clustering against families, and the expert-sharing graph."""
    if len(data.langs) < 2:
        raise PolyrouteError("similarity compares languages: analyse at least two")
    if measure not in ("divergence", "cosine"):
        raise ParameterError(f"unknown {{measure}} {measure!r}: use divergence or cosine")
    band_layers = [layer for layer, keep in zip(data.layers, data.middle_band(), strict=True) if keep]
    if not band_layers:
        raise ParameterError("the middle zone holds no MoE layer of this model: choose the band with {layers} A-B")
    # Read only the band's layers: the rest would cost time and memory and change nothing.
    in_band = data if data.selection.layers else data.narrowed((band_layers[0], band_layers[-1]))
    band = np.ones(len(in_band.layers), dtype=bool)
    if measure == "divergence":
        sums = in_band.pair_divergence
        matrix = similarity.divergence_similarity(sums.n, sums.normalised, band)
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
        params={
            **data.params(),
            "band": _band(data),
            "measure": measure,
            **({"source": in_band.source} if measure == "divergence" else {}),
            "clusters": n_clusters,
            "top_n": n,
        },
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
    band_mean = {row["lang"]: row["divergence"] for row in div.table("band_mean").records()}
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
