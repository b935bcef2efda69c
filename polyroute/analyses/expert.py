"""One expert of a run (the expert browser): how often each language sends tokens to it, in its layer
and the layers around it (from the routing summaries), the tokens sent to it most and the experts
chosen with it (from a bounded sample of sequences, `store.expert_tokens`), and what the other
analyses, at their default parameters, call it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from moe_core.analysis import expert_usage as usage
from moe_core.errors import ParameterError
from polyroute.analyses.experts import RISE_BUDGET, analyze_experts, analyze_rise, analyze_shared
from polyroute.run_data import AnalysisResult, RunData, Table, rounded
from store import queries as q
from store.expert_tokens import ExpertSample, expert_sample

CONTEXT = 6  # tokens shown on each side of a token in its sentence
MAX_SEQUENCES = 500  # per language: the sample stays a few hundred sequences per language at most


def analyze_expert(
    data: RunData,
    *,
    layer: int,
    expert: int,
    sequences: int = 20,
    top_tokens: int = 10,
    reference: RunData | None = None,
) -> AnalysisResult:
    """Expert `expert` of decoder layer `layer`: per-language activation frequency and rank, the
    frequencies in the layers around it (the selected band, default `layer` +- 2), the tokens the
    sampled sequences send to it most (up to `sequences` per language, those that send it the most
    tokens), the experts chosen with it, and its labels from the shared, experts and rise analyses
    (and task experts against `reference`, a generic-text run)."""
    layout = data.layout
    if layer not in layout.layers:
        raise ParameterError(
            f"{{layer}} must be one of the MoE layers of run {layout.run_id} ({_span(layout.layers)}), not {layer}"
        )
    if not 0 <= expert < layout.n_experts:
        raise ParameterError(
            f"{{expert}} must lie in 0-{layout.n_experts - 1} (the model has {layout.n_experts} experts), not {expert}"
        )
    if not 1 <= sequences <= MAX_SEQUENCES or top_tokens < 1:
        raise ParameterError(
            f"{{sequences}} must lie in 1-{MAX_SEQUENCES} and {{top_tokens}} be at least 1; "
            f"got {sequences} and {top_tokens}"
        )
    whole = data if data.selection.layers is None else data.narrowed(_whole_range(layout.layers))
    y = whole.layers.index(layer)
    freq = whole.frequencies  # [L, Y, E]
    hits = whole.hits  # [L, Y, E]
    tokens = layout.tokens_per_lang[whole.lang_index]  # [L]
    uniform = layout.top_k / layout.n_experts
    rank = usage.usage_rank(freq, expert)  # [L, Y]
    by_language = Table(
        name="by_language",
        columns=("lang", "frequency", "hits", "tokens", "rank", "vs_uniform"),
        rows=[
            (lang, rounded(freq[i, y, expert]), int(hits[i, y, expert]), int(tokens[i]), int(rank[i, y]),
             rounded(freq[i, y, expert] / uniform, 3))
            for i, lang in enumerate(whole.langs)
        ],
    )  # fmt: skip
    shown = (
        usage.layer_window(np.asarray(whole.layers), layer)
        if data.selection.layers is None
        else np.searchsorted(whole.layers, data.layers)
    )
    neighbourhood = Table(
        name="neighbourhood",
        columns=("lang", "layer", "frequency", "rank"),
        rows=[
            (lang, whole.layers[w], rounded(freq[i, w, expert]), int(rank[i, w]))
            for i, lang in enumerate(whole.langs)
            for w in shown
        ],
    )
    sample = expert_sample(
        data.store, layout.run_id, layer, expert, per_lang=sequences, langs=whole.langs, top_k=layout.top_k
    )
    if reference is not None and reference.selection.layers is not None:
        reference = reference.narrowed(_whole_range(reference.layout.layers))
    labels, notes = _labels(whole, layer, expert, reference)
    counts = usage.coselection(sample.experts, expert, layout.n_experts)
    overall = hits[:, y].sum(axis=0) / max(int(tokens.sum()), 1)  # [E] each expert's frequency in the layer
    coselected = Table(
        name="coselected",
        columns=("expert", "tokens", "share", "frequency"),
        rows=[
            (int(e), int(counts[e]), rounded(counts[e] / counts[expert]), rounded(overall[e]))
            for e in np.argsort(-counts, kind="stable")
            if e != expert and counts[e] > 0
        ],
    )
    routed = usage.holds(sample.experts, expert)
    notes.append(
        f"tokens and co-selection come from {len(sample.seq_ids)} sequences ({len(routed)} tokens, {int(routed.sum())} "
        f"sent to expert {expert}): up to {sequences} per language, those that send it the most tokens"
    )
    return AnalysisResult(
        analysis="expert",
        params={
            **whole.params(),
            "layer": layer,
            "expert": expert,
            "neighbourhood": f"{whole.layers[shown[0]]}-{whole.layers[shown[-1]]}",
            "sequences": sequences,
            "top_tokens": top_tokens,
        },
        tables=[
            by_language,
            neighbourhood,
            labels,
            _top_tokens(sample, routed, expert, top_tokens),
            coselected,
            Table(
                name="sample",
                columns=("lang", "sequences", "candidates"),
                rows=[(lang, sample.seq_langs.count(lang), sample.candidates.get(lang, 0)) for lang in whole.langs],
            ),
        ],
        summary={
            "labels": ",".join(sorted({row[0] for row in labels.rows})) or "none",
            "sampled_sequences": len(sample.seq_ids),
            "sampled_tokens": len(routed),
            "routed_tokens": int(routed.sum()),
        },
        notes=notes,
    )


def _span(layers: np.ndarray) -> str:
    first, last = int(layers.min()), int(layers.max())
    return f"{first}-{last}" if len(layers) == last - first + 1 else ",".join(map(str, layers.tolist()))


def _whole_range(layers: np.ndarray) -> tuple[int, int]:
    return int(layers.min()), int(layers.max())


def _settings(result: AnalysisResult, data: RunData) -> str:
    """The parameters of `result` beyond the run's selection, as `k=15, thr=0.4`."""
    common = data.params()
    return ", ".join(f"{key}={value}" for key, value in result.params.items() if key not in common and key != "kind")


_LABEL_COLUMNS = ("label", "lang", "measure", "value", "analysis", "params")


def _labels(data: RunData, layer: int, expert: int, reference: RunData | None) -> tuple[Table, list[str]]:
    """What the analyses call the expert at their default parameters, over all the run's layers."""
    rows: list[tuple[Any, ...]] = []
    notes: list[str] = []

    def here(record: dict[str, Any]) -> bool:
        return record["layer"] == layer and record["expert"] == expert

    shared = analyze_shared(data)
    settings = _settings(shared, data)
    notes += shared.notes
    for record in filter(here, shared.table("shared").records()):
        rows.append(("shared", "", "max_share", record["max_share"], "shared", settings))
    for record in filter(here, shared.table("exclusive").records()):
        rows.append(("exclusive", record["lang"], "share", record["share"], "shared", settings))
    if data.selection.ref in data.langs:
        specific = analyze_experts(data)
        for record in filter(here, specific.table("specialised").records()):
            rows.append(("language-specific", record["lang"], "delta", record["delta"], "experts",
                         _settings(specific, data)))  # fmt: skip
    else:
        notes.append(f"language-specific experts need the reference language {data.selection.ref} among the languages")
    if len(data.layers) * data.layout.n_experts > RISE_BUDGET:
        for lang in data.langs:
            picked = analyze_rise(data, target=lang)
            for record in filter(here, picked.table("selected").records()):
                rows.append(("RISE subnetwork", lang, "rank", record["rank"], "rise", _settings(picked, data)))
    else:
        notes.append(f"RISE's default budget ({RISE_BUDGET}) takes every expert of this model: no RISE label")
    if reference is not None:
        task = analyze_experts(data, reference=reference)
        for record in filter(here, task.table("specialised").records()):
            rows.append(("task expert", data.selection.ref, "delta", record["delta"], "experts", _settings(task, data)))
    for run in q.adaptation_runs(data.store):
        if run.trace_run != data.layout.run_id:
            continue
        for chosen in q.adaptation_experts(data.store, run.run_id):
            if chosen.layer == layer and chosen.expert == expert:
                rows.append(("trained (adaptation)", run.target, "rank", chosen.rank, f"adaptation run {run.run_id}",
                             f"budget={run.budget}, alpha={run.params.get('alpha')}"))  # fmt: skip
    return Table(name="labels", columns=_LABEL_COLUMNS, rows=rows), notes


def _top_tokens(sample: ExpertSample, routed: np.ndarray, expert: int, top_n: int) -> Table:
    """Per language, the tokens of the sample sent to the expert most (special tokens left out), each
    with the occurrence that gave it the most weight (the first, for an id-only run) in its sentence."""
    weight = (
        usage.weight_on(sample.experts, sample.weights, expert)
        if sample.weights is not None
        else routed.astype(np.float64)
    )
    langs = np.asarray(sample.seq_langs, dtype=object)[sample.token_seq] if len(sample.token_seq) else np.array([])
    rows = []
    for lang in sorted(set(sample.seq_langs)):
        mine = np.flatnonzero((langs == lang) & ~sample.special)
        ids, hit_counts, seen = usage.token_tally(sample.token_ids[mine], routed[mine])
        for rank, (token, n_routed, n_seen) in enumerate(zip(ids[:top_n], hit_counts, seen, strict=False)):
            places = mine[(sample.token_ids[mine] == token) & routed[mine]]
            best = places[int(np.argmax(weight[places]))]
            mean_weight = rounded(weight[places].mean()) if sample.weights is not None else None
            rows.append((lang, rank + 1, sample.pieces[best], int(token), int(n_routed), int(n_seen),
                         rounded(n_routed / n_seen, 3), mean_weight, _context(sample, best),
                         int(sample.seq_ids[sample.token_seq[best]]), int(sample.pos[best])))  # fmt: skip
    return Table(
        name="top_tokens",
        columns=("lang", "rank", "token", "token_id", "routed", "seen", "share", "mean_weight", "context", "seq_id",
                 "pos"),
        rows=rows,
    )  # fmt: skip


def _context(sample: ExpertSample, at: int) -> str:
    """The token at row `at` in its sentence: up to CONTEXT tokens each side, the token in ⟦ ⟧."""
    seq = sample.token_seq[at]
    first = max(at - CONTEXT, int(np.searchsorted(sample.token_seq, seq, side="left")))
    last = min(at + CONTEXT, int(np.searchsorted(sample.token_seq, seq, side="right")) - 1)
    before = "".join(sample.pieces[i] for i in range(first, at) if not sample.special[i])
    after = "".join(sample.pieces[i] for i in range(at + 1, last + 1) if not sample.special[i])
    more_before = bool(first > 0 and sample.token_seq[first - 1] == seq)
    more_after = bool(last + 1 < len(sample.token_seq) and sample.token_seq[last + 1] == seq)
    return f"{'…' * more_before}{before}⟦{sample.pieces[at]}⟧{after}{'…' * more_after}"
