"""One expert of a run (the expert browser): how often each language sends tokens to it, in its layer
and the layers around it (from the routing summaries), the tokens sent to it most and the experts
chosen with it (from a bounded sample of sequences, `store.expert_tokens`), and what the other
analyses, at their default parameters, call it. `ExpertResult` holds it typed (L languages, Y MoE
layers, E experts); its `build_tables` is the one place its display tables are made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moe_core.analysis import expert_usage as usage
from moe_core.errors import ParameterError
from polyroute.analyses.experts import RISE_BUDGET, analyze_experts, analyze_rise, analyze_shared
from polyroute.run_data import AnalysisResult, RunData, Table, rounded
from store import queries as q
from store.expert_tokens import ExpertSample, expert_sample

CONTEXT = 6  # tokens shown on each side of a token in its sentence
MAX_SEQUENCES = 500  # per language: the sample stays a few hundred sequences per language at most


@dataclass(frozen=True, kw_only=True)
class ExpertLabel:
    """What one analysis (or adaptation run) calls the expert: `label` for language `lang` ("" for
    all), by `measure` (its `value`), from `analysis` run with `settings`."""

    label: str
    lang: str
    measure: str
    value: float | int | None
    analysis: str
    settings: str


@dataclass(frozen=True, kw_only=True)
class TopToken:
    """A token the sample sends to the expert most, in one language: its `rank` there, the `routed`
    and `seen` counts (share = routed / seen), the mean routing weight on the expert where routed
    (None: an id-only run), and the occurrence that gave it the most weight: its sentence around it
    (`context`, the token in ⟦ ⟧), sequence and position."""

    lang: str
    rank: int
    token: str
    token_id: int
    routed: int
    seen: int
    mean_weight: float | None
    context: str
    seq_id: int
    pos: int


@dataclass(frozen=True, kw_only=True, eq=False)
class ExpertResult(AnalysisResult):
    """One expert of one layer, over every MoE layer of the run.

    langs: [L]; layers: [Y]; layer, expert: the one shown; frequency: [L, Y] each language's
    activation frequency of the expert (of index `expert`) in each layer; rank: [L, Y] its rank
    there by use (1: most); hits: [L] tokens sent to it in `layer`; tokens: [L] each language's
    tokens; uniform: the frequency of an expert under uniform routing (k / E); neighbourhood: [W]
    positions in layers of the layers around `layer` shown; coselected: [E] sampled tokens choosing
    each expert together with this one (its own entry: the tokens choosing it); layer_frequency: [E]
    each expert's frequency in `layer` over all languages; sampled, candidates: [L] sequences sampled
    and those that send the expert any token; labels: what the analyses call it; top_tokens: the
    tokens of the sample sent to it most, per language."""

    langs: list[str]
    layers: list[int]
    layer: int
    expert: int
    frequency: np.ndarray
    rank: np.ndarray
    hits: np.ndarray
    tokens: np.ndarray
    uniform: float
    neighbourhood: np.ndarray
    coselected: np.ndarray
    layer_frequency: np.ndarray
    sampled: np.ndarray
    candidates: np.ndarray
    labels: list[ExpertLabel]
    top_tokens: list[TopToken]

    def build_tables(self) -> list[Table]:
        y, expert, counts = self.layers.index(self.layer), self.expert, self.coselected
        return [
            Table(
                name="by_language",
                columns=("lang", "frequency", "hits", "tokens", "rank", "vs_uniform"),
                rows=[
                    (
                        lang,
                        rounded(self.frequency[i, y]),
                        int(self.hits[i]),
                        int(self.tokens[i]),
                        int(self.rank[i, y]),
                        rounded(self.frequency[i, y] / self.uniform, 3),
                    )
                    for i, lang in enumerate(self.langs)
                ],
            ),
            Table(
                name="neighbourhood",
                columns=("lang", "layer", "frequency", "rank"),
                rows=[
                    (lang, self.layers[w], rounded(self.frequency[i, w]), int(self.rank[i, w]))
                    for i, lang in enumerate(self.langs)
                    for w in self.neighbourhood
                ],
            ),
            Table(
                name="labels",
                columns=("label", "lang", "measure", "value", "analysis", "params"),
                rows=[(t.label, t.lang, t.measure, t.value, t.analysis, t.settings) for t in self.labels],
            ),
            Table(
                name="top_tokens",
                columns=(
                    "lang",
                    "rank",
                    "token",
                    "token_id",
                    "routed",
                    "seen",
                    "share",
                    "mean_weight",
                    "context",
                    "seq_id",
                    "pos",
                ),
                rows=[
                    (
                        t.lang,
                        t.rank,
                        t.token,
                        t.token_id,
                        t.routed,
                        t.seen,
                        rounded(t.routed / t.seen, 3),
                        rounded(t.mean_weight),
                        t.context,
                        t.seq_id,
                        t.pos,
                    )
                    for t in self.top_tokens
                ],
            ),
            Table(
                name="coselected",
                columns=("expert", "tokens", "share", "frequency"),
                rows=[
                    (int(e), int(counts[e]), rounded(counts[e] / counts[expert]), rounded(self.layer_frequency[e]))
                    for e in np.argsort(-counts, kind="stable")
                    if e != expert and counts[e] > 0
                ],
            ),
            Table(
                name="sample",
                columns=("lang", "sequences", "candidates"),
                rows=[(lang, int(self.sampled[i]), int(self.candidates[i])) for i, lang in enumerate(self.langs)],
            ),
        ]


def analyze_expert(
    data: RunData,
    *,
    layer: int,
    expert: int,
    sequences: int = 20,
    top_tokens: int = 10,
    reference: RunData | None = None,
) -> ExpertResult:
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
    shown = (
        usage.layer_window(np.asarray(whole.layers), layer)
        if data.selection.layers is None
        else np.searchsorted(whole.layers, data.layers)
    )
    sample = expert_sample(
        data.store, layout.run_id, layer, expert, per_lang=sequences, langs=whole.langs, top_k=layout.top_k
    )
    if reference is not None and reference.selection.layers is not None:
        reference = reference.narrowed(_whole_range(reference.layout.layers))
    labels, notes = _labels(whole, layer, expert, reference)
    routed = usage.holds(sample.experts, expert)
    notes.append(
        f"tokens and co-selection come from {len(sample.seq_ids)} sequences ({len(routed)} tokens, {int(routed.sum())} "
        f"sent to expert {expert}): up to {sequences} per language, those that send it the most tokens"
    )
    return ExpertResult(
        analysis="expert",
        params={
            **whole.params(),
            "layer": layer,
            "expert": expert,
            "neighbourhood": f"{whole.layers[shown[0]]}-{whole.layers[shown[-1]]}",
            "sequences": sequences,
            "top_tokens": top_tokens,
        },
        summary={
            "labels": ",".join(sorted({found.label for found in labels})) or "none",
            "sampled_sequences": len(sample.seq_ids),
            "sampled_tokens": len(routed),
            "routed_tokens": int(routed.sum()),
        },
        notes=notes,
        langs=whole.langs,
        layers=whole.layers,
        layer=layer,
        expert=expert,
        frequency=freq[:, :, expert],
        rank=usage.usage_rank(freq, expert),
        hits=hits[:, y, expert],
        tokens=tokens,
        uniform=layout.top_k / layout.n_experts,
        neighbourhood=shown,
        coselected=usage.coselection(sample.experts, expert, layout.n_experts),
        layer_frequency=hits[:, y].sum(axis=0) / max(int(tokens.sum()), 1),
        sampled=np.array([sample.seq_langs.count(lang) for lang in whole.langs], dtype=np.int64),
        candidates=np.array([sample.candidates.get(lang, 0) for lang in whole.langs], dtype=np.int64),
        labels=labels,
        top_tokens=_top_tokens(sample, routed, expert, top_tokens),
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


def _labels(data: RunData, layer: int, expert: int, reference: RunData | None) -> tuple[list[ExpertLabel], list[str]]:
    """What the analyses call the expert at their default parameters, over all the run's layers."""
    y = data.layers.index(layer)
    found: list[ExpertLabel] = []
    notes: list[str] = []

    def label(label: str, lang: str, measure: str, value: float | int | None, analysis: str, settings: str) -> None:
        found.append(ExpertLabel(label=label, lang=lang, measure=measure, value=value, analysis=analysis,
                                 settings=settings))  # fmt: skip

    shared = analyze_shared(data)
    settings = _settings(shared, data)
    notes += shared.notes
    if shared.shared[y, expert]:
        label("shared", "", "max_share", rounded(shared.shares[:, y, expert].max()), "shared", settings)
    for i in np.flatnonzero(shared.exclusive[:, y, expert]):
        label("exclusive", data.langs[i], "share", rounded(shared.shares[i, y, expert]), "shared", settings)
    if data.selection.ref in data.langs:
        specific = analyze_experts(data)
        for i in np.flatnonzero(specific.specialised[:, y, expert]):
            label("language-specific", data.langs[i], "delta", rounded(specific.delta[i, y, expert]), "experts",
                  _settings(specific, data))  # fmt: skip
    else:
        notes.append(f"language-specific experts need the reference language {data.selection.ref} among the languages")
    if len(data.layers) * data.layout.n_experts > RISE_BUDGET:
        for lang in data.langs:
            picked = analyze_rise(data, target=lang)
            for rank in np.flatnonzero((picked.selected == (y, expert)).all(axis=1)):
                label("RISE subnetwork", lang, "rank", int(rank) + 1, "rise", _settings(picked, data))
    else:
        notes.append(f"RISE's default budget ({RISE_BUDGET}) takes every expert of this model: no RISE label")
    if reference is not None:
        task = analyze_experts(data, reference=reference)
        if task.specialised[y, expert]:
            label("task expert", data.selection.ref, "delta", rounded(task.delta[y, expert]), "experts",
                  _settings(task, data))  # fmt: skip
    for run in q.adaptation_runs(data.store):
        if run.trace_run != data.layout.run_id:
            continue
        for chosen in q.adaptation_experts(data.store, run.run_id):
            if chosen.layer == layer and chosen.expert == expert:
                label("trained (adaptation)", run.target, "rank", chosen.rank, f"adaptation run {run.run_id}",
                      f"budget={run.budget}, alpha={run.params.get('alpha')}")  # fmt: skip
    return found, notes


def _top_tokens(sample: ExpertSample, routed: np.ndarray, expert: int, top_n: int) -> list[TopToken]:
    """Per language, the tokens of the sample sent to the expert most (special tokens left out), each
    with the occurrence that gave it the most weight (the first, for an id-only run) in its sentence."""
    weight = (
        usage.weight_on(sample.experts, sample.weights, expert)
        if sample.weights is not None
        else routed.astype(np.float64)
    )
    langs = np.asarray(sample.seq_langs, dtype=object)[sample.token_seq] if len(sample.token_seq) else np.array([])
    found = []
    for lang in sorted(set(sample.seq_langs)):
        mine = np.flatnonzero((langs == lang) & ~sample.special)
        ids, hit_counts, seen = usage.token_tally(sample.token_ids[mine], routed[mine])
        for rank, (token, n_routed, n_seen) in enumerate(zip(ids[:top_n], hit_counts, seen, strict=False)):
            places = mine[(sample.token_ids[mine] == token) & routed[mine]]
            best = places[int(np.argmax(weight[places]))]
            found.append(
                TopToken(
                    lang=lang,
                    rank=rank + 1,
                    token=sample.pieces[best],
                    token_id=int(token),
                    routed=int(n_routed),
                    seen=int(n_seen),
                    mean_weight=float(weight[places].mean()) if sample.weights is not None else None,
                    context=_context(sample, best),
                    seq_id=int(sample.seq_ids[sample.token_seq[best]]),
                    pos=int(sample.pos[best]),
                )
            )
    return found


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
