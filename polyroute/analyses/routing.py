"""Analyses of how languages route: divergence from a reference, entropy, consistency, language
similarity and its structure, and the correlation of divergence with task scores (docs/methods.md).

Each returns a typed result (the dataclass above its function; L languages, Y MoE layers) whose
`build_tables` is the one place its display tables are made."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from moe_core.analysis import correlation, divergence, routing, similarity, summaries
from moe_core.errors import ParameterError, PolyrouteError
from polyroute.run_data import AnalysisResult, RunData, Selection, Table, lang_facts, mean_by_group, rounded
from store import Store
from store import queries as q


def _source_notes(data: RunData) -> list[str]:
    if data.distribution == "hard":
        return [
            "no router probabilities are stored for this run (an id-only trace) or the hard source was chosen: "
            "distributions are activation frequencies / k"
        ]
    return []


def _divergence_curves(data: RunData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normalised D [L', Y'], raw JS [L', Y'], pairs [L']) of the selected languages from the reference."""
    ref = data.ref_position()
    sums = data.pair_divergence
    return divergence.divergence_curves(sums.n, sums.js, sums.normalised, ref, int(data.n_sequences[ref]))


@dataclass(frozen=True, kw_only=True, eq=False)
class DivergenceResult(AnalysisResult):
    """Divergence of each language from the reference over aligned pairs.

    langs: [L]; layers: [Y] decoder indices; normalised: [L, Y] normalised D; js: [L, Y] raw JS
    (both NaN for a language sharing no item with the reference, 0 for the reference); pairs: [L]
    aligned items; band: [Y] bool, the layers of the band; band_mean: [L] the mean of normalised
    over the band (NaN without pairs or without a band layer)."""

    langs: list[str]
    layers: list[int]
    normalised: np.ndarray
    js: np.ndarray
    pairs: np.ndarray
    band: np.ndarray
    band_mean: np.ndarray

    def build_tables(self) -> list[Table]:
        rows = [
            (lang, layer, rounded(self.normalised[i, y]), rounded(self.js[i, y]), int(self.pairs[i]))
            for i, lang in enumerate(self.langs)
            for y, layer in enumerate(self.layers)
        ]
        by_lang = [(lang, *lang_facts(lang).values(), rounded(self.band_mean[i])) for i, lang in enumerate(self.langs)]
        return [
            Table(name="by_layer", columns=("lang", "layer", "divergence", "js", "pairs"), rows=rows),
            Table(name="band_mean", columns=("lang", "family", "script", "resource_class", "divergence"), rows=by_lang),
        ]


def analyze_divergence(data: RunData) -> DivergenceResult:
    """Per-layer divergence of each language from the reference over aligned pairs (and raw JS)."""
    normalised, raw, pairs = _divergence_curves(data)
    band = data.middle_band()
    # NaN for a language without pairs, and for all of them on a model too shallow for a middle-zone layer.
    band_mean = divergence.nan_mean(normalised[:, band], axis=1)
    return DivergenceResult(
        analysis="divergence",
        params={**data.params(), "ref": data.selection.ref, "source": data.source, "band": _band(data)},
        notes=_source_notes(data),
        langs=data.langs,
        layers=data.layers,
        normalised=normalised,
        js=raw,
        pairs=pairs,
        band=band,
        band_mean=band_mean,
    )


@dataclass(frozen=True, kw_only=True, eq=False)
class ComparisonResult(AnalysisResult):
    """Several runs' divergence side by side: R runs, L languages compared, Y_r MoE layers of run r.

    runs: [R] run ids; labels: [R] how tables and legends name them; models, steered, n_layers,
    bands (the middle band's layers, "A-B" or "none"), sources: [R] each run's; compared_with: [R]
    the id of the unsteered run each steered run is compared with (None: none); langs: [L];
    layers: R x [Y_r] decoder indices; curves: R x [L, Y_r] normalised D (NaN: the run lacks the
    language); comparison: depth, mean curves, band means [R, L] and the differences from
    `compared_with` (NaN without one), as `moe_core.analysis.divergence.compare_runs` gives them."""

    runs: list[int]
    labels: list[str]
    models: list[str]
    steered: list[bool]
    n_layers: list[int]
    bands: list[str]
    sources: list[str]
    compared_with: list[int | None]
    langs: list[str]
    layers: list[list[int]]
    curves: list[np.ndarray]
    comparison: divergence.RunComparison

    def build_tables(self) -> list[Table]:
        compared, runs = self.comparison, range(len(self.runs))
        by_layer = [
            (self.runs[r], self.labels[r], lang, layer, rounded(compared.depth[r][y]), rounded(self.curves[r][i, y]),
             rounded(compared.differences[r][i, y]))
            for r in runs
            for i, lang in enumerate(self.langs)
            for y, layer in enumerate(self.layers[r])
        ]  # fmt: skip
        mean_by_layer = [
            (self.runs[r], self.labels[r], layer, rounded(compared.depth[r][y]), rounded(compared.mean_curves[r][y]),
             rounded(compared.mean_differences[r][y]))
            for r in runs
            for y, layer in enumerate(self.layers[r])
        ]  # fmt: skip
        band_mean = [
            (self.runs[r], self.labels[r], lang, rounded(compared.band_means[r, i]))
            for r in runs
            for i, lang in enumerate(self.langs)
        ]
        described = [
            (self.runs[r], self.labels[r], self.models[r], self.steered[r], self.compared_with[r], self.n_layers[r],
             self.bands[r], self.sources[r])
            for r in runs
        ]  # fmt: skip
        return [
            Table(
                name="by_layer",
                columns=("run", "label", "lang", "layer", "depth", "divergence", "difference"),
                rows=by_layer,
            ),
            Table(
                name="mean_by_layer",
                columns=("run", "label", "layer", "depth", "divergence", "difference"),
                rows=mean_by_layer,
            ),
            Table(name="band_mean", columns=("run", "label", "lang", "divergence"), rows=band_mean),
            Table(
                name="runs",
                columns=("run", "label", "model", "steered", "compared_with", "n_layers", "band", "source"),
                rows=described,
            ),
        ]


def compare_divergence(store: Store, run_ids: Sequence[int], selection: Selection) -> ComparisonResult:
    """Several runs' per-layer divergence from one reference language on normalised depth, each
    steered run's difference from an unsteered run of the same model among them, and every
    language's middle-band mean per run; read from each run's summaries only."""
    ids = list(dict.fromkeys(run_ids))
    if len(ids) < 2:
        raise ParameterError("{runs} needs at least two runs to compare")
    rows = []
    for run_id in ids:
        row = q.get_run(store, run_id)
        if row is None or row.kind != "trace" or not row.n_stored:
            raise ParameterError(f"there is no traced run {run_id} in the store: give {{runs}} ids of trace runs")
        rows.append(row)
    runs = [RunData(store, run_id, replace(selection, langs=None)) for run_id in ids]
    ref = selection.ref
    lacking = [data.layout.run_id for data in runs if ref not in data.langs]
    if lacking:
        common = sorted(set.intersection(*(set(data.langs) for data in runs)))
        raise ParameterError(
            f"run {lacking[0]} did not trace the reference language {ref}: choose {{ref}} among the languages "
            f"every run of {{runs}} traced ({', '.join(common) or 'none'})"
        )
    langs = _compared_langs(runs, ref, selection.langs)
    curves = []
    for data in runs:
        normalised = _divergence_curves(data)[0]
        curve = np.full((len(langs), len(data.layers)), np.nan)
        for i, lang in enumerate(langs):
            if lang in data.langs:
                curve[i] = normalised[data.langs.index(lang)]
        curves.append(curve)
    baselines = [_unsteered_twin(rows, runs, position) for position in range(len(runs))]
    compared = divergence.compare_runs(
        curves,
        [np.asarray(data.layers) for data in runs],
        [data.layout.n_layers for data in runs],
        [data.middle_band() for data in runs],
        baselines,
    )
    return ComparisonResult(
        analysis="divergence",
        params={"runs": ",".join(map(str, ids)), "ref": ref, "langs": ",".join(langs), "source": selection.source},
        notes=list(dict.fromkeys(note for data in runs for note in _source_notes(data))),
        runs=ids,
        labels=[run_label(row) for row in rows],
        models=[data.layout.model_id for data in runs],
        steered=[row.steered for row in rows],
        n_layers=[data.layout.n_layers for data in runs],
        bands=[_band(data) for data in runs],
        sources=[data.source for data in runs],
        compared_with=[ids[base] if base >= 0 else None for base in baselines],
        langs=langs,
        layers=[data.layers for data in runs],
        curves=curves,
        comparison=compared,
    )


def run_label(run: q.RunRow) -> str:
    """How a run is named in a comparison's tables and legends."""
    return f"run {run.run_id} · {run.model_id}" + (" · steered" if run.steered else "")


def _compared_langs(runs: Sequence[RunData], ref: str, wanted: Sequence[str] | None) -> list[str]:
    """The languages compared: those any run traced but the reference (or the `wanted` ones)."""
    traced = list(dict.fromkeys(lang for data in runs for lang in data.langs if lang != ref))
    if not wanted:
        return traced
    absent = [lang for lang in wanted if lang not in traced and lang != ref]
    if absent:
        raise ParameterError(f"no run traced {absent[0]}: choose {{langs}} among {', '.join(traced)}")
    return [lang for lang in traced if lang in wanted]


def _unsteered_twin(rows: Sequence[q.RunRow], runs: Sequence[RunData], position: int) -> int:
    """The position of the first unsteered run of the same model (and layers) as the steered run at
    `position`, its baseline layer by layer; -1 for an unsteered run or when there is none."""
    if not rows[position].steered:
        return -1
    layers = runs[position].layers
    for other, row in enumerate(rows):
        if not row.steered and row.model_id == rows[position].model_id and runs[other].layers == layers:
            return other
    return -1


def _band(data: RunData) -> str:
    layers = [layer for layer, keep in zip(data.layers, data.middle_band(), strict=True) if keep]
    return f"{layers[0]}-{layers[-1]}" if layers else "none"


@dataclass(frozen=True, kw_only=True, eq=False)
class EntropyResult(AnalysisResult):
    """Routing entropy per language and layer.

    langs: [L]; layers: [Y]; entropy: [L, Y] the mean over each language's sequences of H of the
    sequence's mean distribution, in nats; normalised: [L, Y] entropy / log E; token_entropy:
    [L, Y] the mean per-token entropy from router logits, or None (not asked, or no logits stored)."""

    langs: list[str]
    layers: list[int]
    entropy: np.ndarray
    normalised: np.ndarray
    token_entropy: np.ndarray | None

    def build_tables(self) -> list[Table]:
        columns = ["lang", "layer", "entropy", "normalised"]
        if self.token_entropy is not None:
            columns.append("token_entropy")
        rows = []
        for i, lang in enumerate(self.langs):
            for y, layer in enumerate(self.layers):
                row = [lang, layer, rounded(self.entropy[i, y]), rounded(self.normalised[i, y])]
                if self.token_entropy is not None:
                    row.append(rounded(self.token_entropy[i, y]))
                rows.append(tuple(row))
        return [Table(name="by_layer", columns=tuple(columns), rows=rows)]


def analyze_entropy(data: RunData, *, token_level: bool = False) -> EntropyResult:
    """Routing entropy per layer: of each sequence's mean distribution, and per token from logits."""
    sequence_level = data.mean_entropy
    token_level_entropy = _token_entropy(data) if token_level else None
    max_entropy = np.log(data.layout.n_experts)
    notes = _source_notes(data)
    if token_level and token_level_entropy is None:
        notes.append("token-level entropy needs router logits: trace with --save-logits")
    return EntropyResult(
        analysis="entropy",
        params={
            **data.params(),
            "source": data.source,
            "max_entropy": rounded(max_entropy),
            "token_level": token_level,
        },
        notes=notes,
        langs=data.langs,
        layers=data.layers,
        entropy=sequence_level,
        normalised=sequence_level / max_entropy,
        token_entropy=token_level_entropy,
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


@dataclass(frozen=True, kw_only=True, eq=False)
class ConsistencyResult(AnalysisResult):
    """Within-sequence consistency per language and layer.

    langs: [L]; layers: [Y]; consistency: [L, Y] the mean over each language's sequences of the mean
    Jaccard of token pairs' top-k sets (NaN: no sequence of two tokens); sequences: [L] sequences."""

    langs: list[str]
    layers: list[int]
    consistency: np.ndarray
    sequences: np.ndarray

    def build_tables(self) -> list[Table]:
        rows = [
            (lang, layer, rounded(self.consistency[i, y]), int(self.sequences[i]))
            for i, lang in enumerate(self.langs)
            for y, layer in enumerate(self.layers)
        ]
        return [Table(name="by_layer", columns=("lang", "layer", "consistency", "sequences"), rows=rows)]


def analyze_consistency(data: RunData, *, max_pairs: int = 128, seed: int = 0) -> ConsistencyResult:
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
    return ConsistencyResult(
        analysis="consistency",
        params={**data.params(), "max_pairs": max_pairs, "seed": seed, "top_k": layout.top_k},
        langs=data.langs,
        layers=data.layers,
        consistency=means,
        sequences=data.n_sequences,
    )


@dataclass(frozen=True, kw_only=True, eq=False)
class SimilarityResult(AnalysisResult):
    """Language similarity in the band, its clusters and the expert-sharing graph; G its edges.

    langs: [L]; families: [L] each language's family (its code when unknown); similarity: [L, L];
    clusters: [L] each language's cluster label; communities: [L] its community in the graph
    (1: the largest); edges: [G, 2] positions in langs of the languages each edge links;
    shared: [G] the top-N experts the two share."""

    langs: list[str]
    families: list[str]
    similarity: np.ndarray
    clusters: np.ndarray
    communities: np.ndarray
    edges: np.ndarray
    shared: np.ndarray

    def build_tables(self) -> list[Table]:
        langs = self.langs
        return [
            Table(
                name="similarity",
                columns=("lang_a", "lang_b", "similarity"),
                rows=[(a, b, rounded(self.similarity[i, j])) for i, a in enumerate(langs) for j, b in enumerate(langs)],
            ),
            Table(
                name="clusters",
                columns=("lang", "family", "cluster", "community"),
                rows=[
                    (lang, self.families[i], int(self.clusters[i]), int(self.communities[i]))
                    for i, lang in enumerate(langs)
                ],
            ),
            Table(
                name="graph",
                columns=("lang_a", "lang_b", "shared_experts"),
                rows=[(langs[a], langs[b], int(n)) for (a, b), n in zip(self.edges, self.shared, strict=True)],
            ),
        ]


def analyze_similarity(
    data: RunData, *, measure: str = "divergence", clusters: int | None = None, top_n: int | None = None
) -> SimilarityResult:
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
    edges = [(data.langs.index(a), data.langs.index(b), attrs["shared"]) for a, b, attrs in graph.edges(data=True)]
    return SimilarityResult(
        analysis="similarity",
        params={
            **data.params(),
            "band": _band(data),
            "measure": measure,
            **({"source": in_band.source} if measure == "divergence" else {}),
            "clusters": n_clusters,
            "top_n": n,
        },
        langs=data.langs,
        families=families,
        similarity=matrix,
        clusters=np.asarray(labels),
        communities=np.array([community_of[lang] for lang in data.langs]),
        edges=np.array([edge[:2] for edge in edges], dtype=np.int64).reshape(-1, 2),
        shared=np.array([edge[2] for edge in edges], dtype=np.int64),
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


@dataclass(frozen=True, kw_only=True, eq=False)
class CorrelationResult(AnalysisResult):
    """Middle-band divergence against a per-language score; N the languages with both.

    langs: [N] (the reference and unscored languages left out); divergence: [N] the band mean of
    normalised D (NaN: none); scores: [N]; score_name: what the scores are (the table's column)."""

    langs: list[str]
    divergence: np.ndarray
    scores: np.ndarray
    score_name: str

    def build_tables(self) -> list[Table]:
        return [
            Table(
                name="by_language",
                columns=("lang", "divergence", self.score_name),
                rows=[
                    (lang, rounded(self.divergence[i]), rounded(self.scores[i])) for i, lang in enumerate(self.langs)
                ],
            )
        ]


def analyze_correlation(data: RunData, scores: Mapping[str, float], *, score_name: str = "score") -> CorrelationResult:
    """Pearson and Spearman correlation between middle-band divergence and a per-language score."""
    div = analyze_divergence(data)
    langs = [lang for lang in data.langs if lang != data.selection.ref and lang in scores]
    # The band means at the 6 decimals the divergence table shows, as the correlation has always read them.
    band_mean = {lang: rounded(value) for lang, value in zip(div.langs, div.band_mean, strict=True)}
    x = np.array([np.nan if band_mean[lang] is None else band_mean[lang] for lang in langs], dtype=float)
    y = np.array([scores[lang] for lang in langs], dtype=float)
    try:
        found = correlation.divergence_score_correlation(x, y)
    except ValueError as error:
        raise PolyrouteError(f"{error}; scores cover {', '.join(sorted(scores)) or 'no language'}") from None
    return CorrelationResult(
        analysis="correlation",
        params={**div.params, "score": score_name},
        summary={
            "n": found.n,
            "pearson_r": rounded(found.pearson_r, 4),
            "pearson_p": rounded(found.pearson_p, 6),
            "spearman_rho": rounded(found.spearman_rho, 4),
            "spearman_p": rounded(found.spearman_p, 6),
        },
        notes=div.notes,
        langs=langs,
        divergence=x,
        scores=y,
        score_name=score_name,
    )
