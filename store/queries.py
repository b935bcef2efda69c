"""Typed reads of the store: each function runs one parameterised query and returns plain values,
or numpy arrays. The analyses read the routing summaries (`store.summaries`); per-token rows are
streamed only for consistency at other than the default pairs, token entropy and the upgrade."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from store.connection import Store
from store.errors import StoreError
from store.writer import AdaptedExpert

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class RunRow:
    """A run and how far it got: `n_stored` of `n_planned` sequences (a trace) or generated answers
    (an evaluation) are in the store."""

    run_id: int
    kind: str
    model_id: str
    corpus_id: str | None
    backend: str
    params: dict[str, Any]
    status: str
    n_planned: int
    n_stored: int
    n_tokens: int
    created_at: datetime
    name: str | None = None  # the user's name for the run, if any
    note: str | None = None  # the user's note on the run, if any
    plan: str | None = None  # the steering plan's JSON of a steered run (runs.plan)

    @property
    def steered(self) -> bool:
        return self.plan is not None


# What a run holds: traced sequences (trace runs), generated answers (evaluation runs) or trained
# experts (adaptation runs).
_RUNS = """
SELECT r.run_id, r.kind, r.model_id, r.corpus_id, r.backend, r.params, r.status, r.n_planned,
       coalesce(s.n, 0) + coalesce(g.n, 0) + coalesce(a.n, 0) AS n_stored, coalesce(s.tokens, 0) AS n_tokens,
       r.created_at, r.name, r.note, r.plan
FROM runs AS r
LEFT JOIN (SELECT run_id, count(*) AS n, sum(n_tokens) AS tokens FROM sequences GROUP BY run_id) AS s USING (run_id)
LEFT JOIN (SELECT run_id, count(*) AS n FROM generations GROUP BY run_id) AS g USING (run_id)
LEFT JOIN (SELECT run_id, count(*) AS n FROM adaptation_experts GROUP BY run_id) AS a USING (run_id)
{where}
ORDER BY r.run_id
"""


def _run_row(row: tuple[Any, ...]) -> RunRow:
    return RunRow(
        run_id=row[0],
        kind=row[1],
        model_id=row[2],
        corpus_id=row[3],
        backend=row[4],
        params=json.loads(row[5]),
        status=row[6],
        n_planned=row[7],
        n_stored=row[8],
        n_tokens=int(row[9]),
        created_at=row[10],
        name=row[11],
        note=row[12],
        plan=row[13],
    )


def list_runs(store: Store) -> list[RunRow]:
    return [_run_row(row) for row in store.con.execute(_RUNS.format(where="")).fetchall()]


def get_run(store: Store, run_id: int) -> RunRow | None:
    row = store.con.execute(_RUNS.format(where="WHERE r.run_id = ?"), [run_id]).fetchone()
    return _run_row(row) if row else None


def stored_seq_ids(store: Store, run_id: int) -> set[int]:
    rows = store.con.execute("SELECT seq_id FROM sequences WHERE run_id = ?", [run_id]).fetchall()
    return {row[0] for row in rows}


def corpus_texts(store: Store, corpus_id: str) -> list[tuple[str, str, str, str | None, dict[str, Any] | None]]:
    """(item_id, lang, text, split, fields) of a stored corpus, in corpus order."""
    rows = store.con.execute(
        "SELECT item_id, lang, text, split, fields FROM texts WHERE corpus_id = ? ORDER BY item_index, lang",
        [corpus_id],
    ).fetchall()
    return [(row[0], row[1], row[2], row[3], None if row[4] is None else json.loads(row[4])) for row in rows]


@dataclass(frozen=True, kw_only=True)
class CorpusRow:
    corpus_id: str
    name: str | None
    source: str
    n_items: int
    langs: list[str]
    template: str | None
    added_at: datetime


def list_corpora(store: Store) -> list[CorpusRow]:
    """Every corpus in the store, newest first."""
    rows = store.con.execute(
        "SELECT corpus_id, name, source, n_items, langs, template, added_at FROM corpora ORDER BY added_at DESC"
    ).fetchall()
    return [
        CorpusRow(corpus_id=r[0], name=r[1], source=r[2], n_items=r[3], langs=list(r[4]), template=r[5], added_at=r[6])
        for r in rows
    ]


def corpus_source(store: Store, corpus_id: str) -> tuple[str, str] | None:
    """(source, format) a stored corpus was read from."""
    row = store.con.execute("SELECT source, format FROM corpora WHERE corpus_id = ?", [corpus_id]).fetchone()
    return (row[0], row[1]) if row else None


def model_config_hash(store: Store, model_id: str) -> str | None:
    row = store.con.execute("SELECT config_hash FROM models WHERE model_id = ?", [model_id]).fetchone()
    return row[0] if row else None


def _as(row_type: type[T], rows: list[tuple[Any, ...]]) -> list[T]:
    """Rows whose columns come in the order of `row_type`'s fields, as that dataclass."""
    names = [field.name for field in fields(row_type)]  # type: ignore[arg-type]
    return [row_type(**dict(zip(names, row, strict=True))) for row in rows]


@dataclass(frozen=True, kw_only=True)
class ModelRow:
    model_id: str
    arch: str
    n_layers: int
    n_moe_layers: int
    n_experts: int
    top_k: int
    n_shared_experts: int
    scoring: str
    n_runs: int


def list_models(store: Store) -> list[ModelRow]:
    """Every model in the store with how many runs used it."""
    rows = store.con.execute(
        "SELECT m.model_id, m.arch, m.n_layers, len(m.moe_layers), m.n_experts, m.top_k, m.n_shared_experts, "
        "m.scoring, count(r.run_id) FROM models AS m LEFT JOIN runs AS r USING (model_id) GROUP BY ALL "
        "ORDER BY m.model_id"
    ).fetchall()
    return _as(ModelRow, rows)


@dataclass(frozen=True, kw_only=True)
class LanguageTotal:
    lang: str
    name: str | None
    family: str | None
    script: str | None
    resource_class: int | None
    n_runs: int
    n_sequences: int
    n_tokens: int


def language_totals(store: Store) -> list[LanguageTotal]:
    """Every traced language with its metadata and what the store holds of it, most tokens first."""
    rows = store.con.execute(
        "SELECT s.lang, l.name, l.family, l.script, l.resource_class, count(DISTINCT s.run_id), count(*), "
        "sum(s.n_tokens) FROM sequences AS s LEFT JOIN languages AS l USING (lang) GROUP BY ALL "
        "ORDER BY sum(s.n_tokens) DESC, s.lang"
    ).fetchall()
    return _as(LanguageTotal, rows)


@dataclass(frozen=True, kw_only=True)
class EvalResult:
    """A row of `eval_results` with its run's model."""

    run_id: int
    model_id: str
    task: str
    lang: str
    variant: str
    metric: str
    value: float
    n: int
    plan: str | None


def eval_results(store: Store, run_id: int | None = None) -> list[EvalResult]:
    """Every score of one evaluation run (or of all of them), by run, task, language, variant, metric."""
    rows = store.con.execute(
        "SELECT e.run_id, r.model_id, e.task, e.lang, e.variant, e.metric, e.value, e.n, e.plan "
        "FROM eval_results AS e JOIN runs AS r USING (run_id) WHERE ? IS NULL OR e.run_id = ? "
        "ORDER BY e.run_id, e.task, e.lang, e.variant, e.metric",
        [run_id, run_id],
    ).fetchall()
    return _as(EvalResult, rows)


def generated_answers(store: Store, run_id: int, lang: str, variant: str) -> list[tuple[str, str, str]]:
    """(item_id, prompt, output) of one language and variant of an evaluation run."""
    return store.con.execute(
        "SELECT item_id, prompt, output FROM generations WHERE run_id = ? AND lang = ? AND variant = ? "
        "ORDER BY item_id",
        [run_id, lang, variant],
    ).fetchall()


@dataclass(frozen=True, kw_only=True)
class Answer:
    """One generated answer of an evaluation (a row of `generations`)."""

    item_id: str
    lang: str
    variant: str
    prompt: str
    output: str


def run_answers(store: Store, run_id: int) -> list[Answer]:
    """Every answer of evaluation run `run_id`, by item, language and variant."""
    rows = store.con.execute(
        "SELECT item_id, lang, variant, prompt, output FROM generations WHERE run_id = ? "
        "ORDER BY item_id, lang, variant",
        [run_id],
    ).fetchall()
    return _as(Answer, rows)


# Adaptation runs (RISE): what each trained and how each language's held-out loss moved. ---------

ADAPTATION_TASK = "causal_lm"  # eval_results.task of an adaptation's before/after scores


@dataclass(frozen=True, kw_only=True)
class AdaptationRun:
    """An adaptation run: the trace run that chose its experts, its target and budget, and where its
    adapter (the trained slices) was saved."""

    run_id: int
    model_id: str
    status: str
    trace_run: int
    target: str
    budget: int
    n_experts: int  # experts stored for it
    adapter_dir: str | None
    params: dict[str, Any]
    created_at: datetime


def adaptation_runs(store: Store) -> list[AdaptationRun]:
    """Every adaptation run, oldest first."""
    rows = store.con.execute(
        "SELECT r.run_id, r.model_id, r.status, r.params, count(a.expert), r.created_at FROM runs AS r "
        "LEFT JOIN adaptation_experts AS a USING (run_id) WHERE r.kind = 'adaptation' GROUP BY ALL ORDER BY r.run_id"
    ).fetchall()
    result = []
    for run_id, model_id, status, params_json, n_experts, created_at in rows:
        params = json.loads(params_json)
        result.append(
            AdaptationRun(
                run_id=run_id,
                model_id=model_id,
                status=status,
                trace_run=params["trace_run"],
                target=params["target"],
                budget=params["budget"],
                n_experts=n_experts,
                adapter_dir=params.get("adapter_dir"),
                params=params,
                created_at=created_at,
            )
        )
    return result


def adaptation_experts(store: Store, run_id: int) -> list[AdaptedExpert]:
    """The experts adaptation run `run_id` trained, in selection order."""
    rows = store.con.execute(
        "SELECT rank, zone, layer, expert, score, specificity, overlap, target_freq, mean_freq "
        "FROM adaptation_experts WHERE run_id = ? ORDER BY rank",
        [run_id],
    ).fetchall()
    return _as(AdaptedExpert, rows)


@dataclass(frozen=True, kw_only=True)
class AdaptationScore:
    """One language's score before and after an adaptation (`change` = after - before): its held-out
    loss and perplexity (task `causal_lm`) or, when a task corpus was given, that task's metrics."""

    lang: str
    metric: str  # loss | perplexity, or the task's: accuracy | chrf++ | language_consistency | exact_match | f1
    before: float
    after: float
    change: float
    n: int  # tokens predicted (causal_lm), items scored (a task)
    task: str = ADAPTATION_TASK


def adaptation_scores(store: Store, run_id: int) -> list[AdaptationScore]:
    """Before/after scores of adaptation run `run_id`, per task, language and metric: the held-out
    losses first (by language, metric), then the task's scores (by task, language, metric)."""
    rows = store.con.execute(
        "SELECT lang, metric, max(value) FILTER (WHERE variant = 'before') AS before, "
        "max(value) FILTER (WHERE variant = 'after') AS after, after - before, max(n), task "
        "FROM eval_results WHERE run_id = ? GROUP BY task, lang, metric ORDER BY task <> ?, task, lang, metric",
        [run_id, ADAPTATION_TASK],
    ).fetchall()
    return _as(AdaptationScore, rows)


@dataclass(frozen=True, kw_only=True)
class StoredLoss:
    """A language's held-out loss before an adaptation, as an earlier run measured it."""

    lang: str
    loss: float
    n_tokens: int
    run_id: int  # the adaptation run that measured it


def stored_before_losses(store: Store, model_id: str, before_key: str) -> dict[str, StoredLoss]:
    """Each language's latest "before" loss among the complete adaptations of `model_id` whose
    params name `before_key` (the same weights, texts and settings: `workflows.adapt._before_key`)."""
    rows = store.con.execute(
        "SELECT e.lang, e.value, e.n, e.run_id FROM eval_results AS e JOIN runs AS r USING (run_id) "
        "WHERE r.kind = 'adaptation' AND r.status = 'complete' AND r.model_id = ? "
        "AND json_extract_string(r.params, '$.before_key') = ? AND e.task = ? AND e.variant = 'before' "
        "AND e.metric = 'loss' QUALIFY row_number() OVER (PARTITION BY e.lang ORDER BY e.run_id DESC) = 1",
        [model_id, before_key, ADAPTATION_TASK],
    ).fetchall()
    return {row.lang: row for row in _as(StoredLoss, rows)}


def adaptation_timing(store: Store, model_id: str) -> dict[str, float | None] | None:
    """What the latest complete adaptation of `model_id` measured (seconds to load, per training step,
    per held-out batch: `params.timing`), for the next one's estimate; None when none recorded it."""
    row = store.con.execute(
        "SELECT json_extract(params, '$.timing') FROM runs WHERE kind = 'adaptation' AND status = 'complete' "
        "AND model_id = ? AND json_extract(params, '$.timing') IS NOT NULL ORDER BY run_id DESC LIMIT 1",
        [model_id],
    ).fetchone()
    return None if row is None else json.loads(row[0])


# The inputs of the analyses: every array is arranged by the run's `RunLayout`. -----------------


@dataclass(frozen=True, kw_only=True)
class RunLayout:
    """A run's model shape and its sequences, indexed for arrays.

    Sequence s (in `seq_ids` order, ascending) is item `items[seq_item[s]]` in language
    `langs[seq_lang[s]]` with `seq_tokens[s]` tokens; `layers` are the model's MoE layers.
    """

    run_id: int
    model_id: str
    n_layers: int
    layers: np.ndarray  # [Y] decoder-layer indices with a router
    n_experts: int
    top_k: int
    soft_rule: str
    langs: list[str]  # [L] sorted
    items: list[str]  # [I] sorted
    seq_ids: np.ndarray  # [S] int64
    seq_lang: np.ndarray  # [S] index into langs
    seq_item: np.ndarray  # [S] index into items
    seq_tokens: np.ndarray  # [S] int64

    @property
    def tokens_per_lang(self) -> np.ndarray:
        """[L] tokens of each language."""
        return np.bincount(self.seq_lang, weights=self.seq_tokens, minlength=len(self.langs)).astype(np.int64)


def run_layout(store: Store, run_id: int) -> RunLayout | None:
    """The layout of a run, or None when the store has no such run."""
    model = store.con.execute(
        "SELECT m.model_id, m.n_layers, m.moe_layers, m.n_experts, m.top_k, m.soft_rule "
        "FROM runs AS r JOIN models AS m USING (model_id) WHERE r.run_id = ?",
        [run_id],
    ).fetchone()
    if model is None:
        return None
    columns = store.con.execute(
        "SELECT seq_id, lang, item_id, n_tokens FROM sequences WHERE run_id = ? ORDER BY seq_id", [run_id]
    ).fetchnumpy()
    langs, seq_lang = np.unique(np.asarray(columns["lang"], dtype=str), return_inverse=True)
    items, seq_item = np.unique(np.asarray(columns["item_id"], dtype=str), return_inverse=True)
    return RunLayout(
        run_id=run_id,
        model_id=model[0],
        n_layers=model[1],
        layers=np.asarray(model[2], dtype=np.int64),
        n_experts=model[3],
        top_k=model[4],
        soft_rule=model[5],
        langs=langs.tolist(),
        items=items.tolist(),
        seq_ids=np.asarray(columns["seq_id"], dtype=np.int64),
        seq_lang=seq_lang.astype(np.int64),
        seq_item=seq_item.astype(np.int64),
        seq_tokens=np.asarray(columns["n_tokens"], dtype=np.int64),
    )


def sequence_router_probs(store: Store, layout: RunLayout, seq_ids: np.ndarray) -> np.ndarray | None:
    """[S, Y, E] float32 mean router probabilities of the sequences `seq_ids` (in that order), or
    None when the run stored none of theirs (an id-only backend)."""
    table = store.con.execute(
        "SELECT seq_id, layer, probs FROM router_probs WHERE run_id = ? AND seq_id IN (SELECT unnest(?)) "
        "ORDER BY seq_id, layer",
        [layout.run_id, np.asarray(seq_ids).tolist()],
    ).to_arrow_table()
    if table.num_rows == 0:
        return None
    shape = (len(seq_ids), len(layout.layers), layout.n_experts)
    if table.num_rows != shape[0] * shape[1]:
        raise StoreError(f"run {layout.run_id} has sequences without router probabilities beside ones with")
    probs = table.column("probs").combine_chunks().flatten().to_numpy().reshape(shape)
    found = table.column("seq_id").to_numpy()[:: shape[1]]
    order = np.argsort(np.asarray(seq_ids), kind="stable")
    result = np.empty_like(probs)
    result[order] = probs  # rows came sorted by seq_id
    if not np.array_equal(found, np.asarray(seq_ids)[order]):
        raise StoreError(f"run {layout.run_id}: router probabilities do not match its sequences")
    return result


def _layer_range(layout: RunLayout, layers: tuple[int, int] | None) -> tuple[int, int]:
    return layers or (int(layout.layers.min()), int(layout.layers.max()))


class _OutOfOrder(Exception):
    """The routing rows of a run are not in the writer's order (someone rewrote the table)."""


def token_expert_batches(
    store: Store,
    layout: RunLayout,
    layers: tuple[int, int] | None = None,
    rows_per_batch: int = 1 << 14,
    *,
    with_weights: bool = False,
    ordered: bool = False,
    seq_range: tuple[int, int] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """Every token's top-k experts in the MoE layers within the inclusive range `layers` (default
    all), streamed in batches of whole sequences: (sequence indices [s] into `layout.seq_ids`,
    experts [n, Y', k] uint16, weights [n, Y', k] float32 or None), the tokens of those sequences
    one sequence after another. Weights come `with_weights`, when the run stored them.
    `rows_per_batch` counts `route_lists` rows (one per sequence and layer); `seq_range` keeps the
    sequences whose seq_id lies in that inclusive range.

    Rows stream in the order the writer inserted them, (seq, layer) per sequence, which is checked
    as they come; should the check fail, the stream starts again from a sorted read, so a sequence
    may come twice: key results by sequence index, and the later one wins. `ordered` reads sorted
    from the start, each sequence once.
    """
    first, last = _layer_range(layout, layers)
    selected = layout.layers[(layout.layers >= first) & (layout.layers <= last)]
    codes = ", weight_codes" if with_weights else ""
    query = (
        f"SELECT seq_id, layer, experts{codes} FROM route_lists "
        "WHERE run_id = ? AND layer BETWEEN ? AND ? AND seq_id BETWEEN ? AND ?"
    )
    low, high = seq_range or (int(layout.seq_ids.min(initial=0)), int(layout.seq_ids.max(initial=0)))
    params = [layout.run_id, first, last, low, high]
    unit = store.con.execute("SELECT weight_unit FROM runs WHERE run_id = ?", [layout.run_id]).fetchone()
    expected = (layout.seq_ids >= low) & (layout.seq_ids <= high)
    blocks = _SequenceBlocks(layout, selected, float(unit[0]) if unit else 0.0, expected)
    sorted_query = query + " ORDER BY seq_id, layer"
    if ordered:
        yield from blocks.read(store, sorted_query, params, rows_per_batch)
        return
    try:
        yield from blocks.read(store, query, params, rows_per_batch)
    except _OutOfOrder:
        again = _SequenceBlocks(layout, selected, blocks.unit, expected)
        yield from again.read(store, sorted_query, params, rows_per_batch)


@dataclass
class _SequenceBlocks:
    """`route_lists` rows put back together as whole sequences of [tokens, layers, k] arrays."""

    layout: RunLayout
    layers: np.ndarray  # [Y'] the selected MoE layers
    unit: float  # runs.weight_unit
    expected: np.ndarray  # [S] bool: the sequences the read must give

    def read(
        self, store: Store, query: str, params: list[Any], rows_per_batch: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        seen = ~self.expected  # a sequence outside the range counts as met: it must not come
        pending: list[pa.RecordBatch] = []
        for batch in store.con.execute(query, params).to_arrow_reader(rows_per_batch):
            pending.append(batch)
            rows = pa.Table.from_batches(pending).combine_chunks()
            seq_ids = rows.column("seq_id").to_numpy()
            done = 0 if (seq_ids == seq_ids[-1]).all() else int(np.flatnonzero(seq_ids != seq_ids[-1])[-1]) + 1
            if done:  # the last sequence may go on in the next batch
                yield self._block(seen, rows.slice(0, done))
            pending = rows.slice(done).to_batches()
        if pending:
            yield self._block(seen, pa.Table.from_batches(pending).combine_chunks())
        if not seen.all():
            raise StoreError(f"run {self.layout.run_id} has sequences without routing rows: the store is incomplete")

    def _block(self, seen: np.ndarray, rows: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The sequences of `rows`, after checking each is whole, known and met for the first time."""
        layout, n_layers, top_k = self.layout, len(self.layers), self.layout.top_k
        seq_ids = rows.column("seq_id").to_numpy()
        experts = rows.column("experts").combine_chunks()
        lengths = np.diff(experts.offsets.to_numpy())
        starts = np.flatnonzero(np.r_[True, seq_ids[1:] != seq_ids[:-1]])
        index = np.searchsorted(layout.seq_ids, seq_ids[starts])
        whole = len(seq_ids) == len(starts) * n_layers and bool((index < len(seen)).all())
        if whole:
            tokens = layout.seq_tokens[index]
            whole = (
                np.array_equal(layout.seq_ids[index], seq_ids[starts])
                and not seen[index].any()
                and (rows.column("layer").to_numpy().reshape(-1, n_layers) == self.layers).all()
                and (lengths.reshape(-1, n_layers) == (tokens * top_k)[:, None]).all()
            )
        if not whole:
            raise _OutOfOrder
        seen[index] = True
        # Values run (sequence, layer, pos, rank); the analyses want (sequence, pos, layer, rank).
        offsets = experts.offsets.to_numpy()
        row_start = (offsets[:-1] - offsets[0]).reshape(-1, n_layers)
        token_row = np.repeat(row_start, tokens, axis=0)  # [n, Y'] each token's sequence's rows
        pos = np.arange(int(tokens.sum())) - np.repeat(np.cumsum(tokens) - tokens, tokens)
        gather = (token_row + (pos * top_k)[:, None])[:, :, None] + np.arange(top_k)
        weights = None
        if "weight_codes" in rows.column_names:
            codes = rows.column("weight_codes").combine_chunks()
            if codes.null_count == 0:  # an id-only run stores none
                if not np.array_equal(np.diff(codes.offsets.to_numpy()), lengths):
                    raise StoreError(f"run {layout.run_id}: weight codes unlike its experts; the store is damaged")
                weights = (codes.flatten().to_numpy()[gather].astype(np.float64) * self.unit).astype(np.float32)
        return index, experts.flatten().to_numpy()[gather], weights


def router_logit_batches(
    store: Store, layout: RunLayout, rows_per_batch: int = 65536
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Stored router logits in batches: (sequence index [n], layer index [n], logits [n, E]).

    Empty for a run traced without --save-logits.
    """
    reader = store.con.execute(
        "SELECT seq_id, layer, logits FROM router_logits WHERE run_id = ?", [layout.run_id]
    ).to_arrow_reader(rows_per_batch)
    for batch in reader:
        logits = np.asarray(batch.column("logits").flatten(), dtype=np.float32).reshape(-1, layout.n_experts)
        yield (
            np.searchsorted(layout.seq_ids, batch.column("seq_id").to_numpy()),
            np.searchsorted(layout.layers, batch.column("layer").to_numpy()),
            logits,
        )
