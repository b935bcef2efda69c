"""The bulk writer: models, languages, corpora and runs, and traced batches through Arrow.

Traced batches (their sequences, tokens, routing decisions, soft distributions and, on request,
logits) go in as one transaction with the routing summaries they add to (`store.summaries`):
after a crash the store holds whole sequences or none, and summaries of exactly those.
`sequences` has a primary key on (run_id, seq_id), so a sequence can never be stored twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from moe_core.analysis.summaries import SequenceSummary, summarise_sequences
from moe_core.records import GeneratedAnswer, ModelInfo, RoutingBatch, TaskScore
from store import summaries
from store.connection import Store, translate
from store.errors import StoreError

WEIGHT_LEVELS = 65535  # weights are stored as 16-bit fixed point: code * (bound / 65535)


@dataclass(frozen=True)
class SequenceKey:
    """Where a traced sequence belongs: its run-wide id and the aligned text it came from."""

    seq_id: int
    item_id: str
    lang: str


def ensure_model(store: Store, info: ModelInfo) -> str:
    """Record `info` and return its model_id; a different model under a taken name gets `name@hash`."""
    for candidate in (info.model_id, f"{info.model_id}@{info.config_hash[:8]}"):
        row = store.con.execute("SELECT config_hash FROM models WHERE model_id = ?", [candidate]).fetchone()
        if row is None:
            values = {**asdict(info), "model_id": candidate, "moe_layers": list(info.moe_layers)}
            with store.transaction() as con:
                columns = ", ".join(values)
                con.execute(
                    f"INSERT INTO models ({columns}) VALUES ({', '.join('?' * len(values))})", list(values.values())
                )
            return candidate
        if row[0] == info.config_hash:
            return candidate
    raise StoreError(f"the store holds other models named {info.model_id}: pass {{model_id}} to name this one")


LANGUAGE_COLUMNS = ("lang", "name", "iso639_3", "iso639_1", "script", "family", "branch", "resource_class")


def ensure_languages(store: Store, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert language rows (LANGUAGE_COLUMNS), or refresh their metadata where they are already there."""
    table = pa.table({column: [row[column] for row in rows] for column in LANGUAGE_COLUMNS})
    updates = ", ".join(f"{column} = excluded.{column}" for column in LANGUAGE_COLUMNS[1:])
    with store.transaction() as con:
        con.register("new_languages", table)
        try:
            con.execute(
                f"INSERT INTO languages ({', '.join(LANGUAGE_COLUMNS)}) "
                f"SELECT {', '.join(LANGUAGE_COLUMNS)} FROM new_languages ON CONFLICT (lang) DO UPDATE SET {updates}"
            )
        finally:
            con.unregister("new_languages")


@dataclass(frozen=True, kw_only=True)
class CorpusRecord:
    """A corpus as the store keeps it; `rows` are (item_id, lang, text, split, fields) in corpus order."""

    corpus_id: str
    name: str
    source: str
    format: str
    content_hash: str
    template: str
    meta: Mapping[str, Any]
    rows: Sequence[tuple[str, str, str, str | None, Mapping[str, Any] | None]]


def ensure_corpus(store: Store, corpus: CorpusRecord) -> None:
    """Store a corpus and its texts once; the same content is never copied twice."""
    if store.con.execute("SELECT 1 FROM corpora WHERE corpus_id = ?", [corpus.corpus_id]).fetchone():
        return
    rows = corpus.rows
    order = {item: index for index, item in enumerate(dict.fromkeys(row[0] for row in rows))}
    texts = pa.table(
        {
            "corpus_id": pa.array([corpus.corpus_id] * len(rows)),
            "item_id": pa.array([r[0] for r in rows]),
            "lang": pa.array([r[1] for r in rows]),
            "text": pa.array([r[2] for r in rows]),
            "item_index": pa.array([order[r[0]] for r in rows], pa.int32()),
            "split": pa.array([r[3] for r in rows], pa.string()),
            "fields": pa.array([None if r[4] is None else json.dumps(r[4], ensure_ascii=False) for r in rows]),
        }
    )
    with store.transaction() as con:
        con.execute(
            "INSERT INTO corpora (corpus_id, name, source, format, content_hash, n_items, langs, template, meta) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                corpus.corpus_id,
                corpus.name,
                corpus.source,
                corpus.format,
                corpus.content_hash,
                len(order),
                sorted({r[1] for r in rows}),
                corpus.template,
                json.dumps(dict(corpus.meta), ensure_ascii=False),
            ],
        )
        con.register("new_texts", texts)
        try:
            con.execute(f"INSERT INTO texts ({', '.join(texts.column_names)}) SELECT * FROM new_texts")
        finally:
            con.unregister("new_texts")


def create_run(
    store: Store,
    *,
    kind: str,
    model_id: str,
    corpus_id: str | None,
    backend: str,
    params: dict[str, Any],
    n_planned: int,
    weight_bound: float,
    plan: str | None = None,
) -> int:
    """A new run in status `running` (steered by `plan`, a SteeringPlan's JSON, when given); returns its run_id."""
    with store.transaction() as con:
        row = con.execute(
            "INSERT INTO runs (kind, model_id, corpus_id, backend, params, plan, status, n_planned, weight_unit) "
            "VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?) RETURNING run_id",
            [kind, model_id, corpus_id, backend, json.dumps(params), plan, n_planned, weight_bound / WEIGHT_LEVELS],
        ).fetchone()
    assert row is not None
    return int(row[0])


GENERATION_COLUMNS = ("variant", "item_id", "lang", "prompt", "output")


def _score_rows(run_id: int, scores: Sequence[TaskScore]) -> pa.Table:
    return pa.table(
        {
            "run_id": pa.array([run_id] * len(scores), pa.int32()),
            **{
                name: pa.array([getattr(s, name) for s in scores], pa.string())
                for name in ("task", "lang", "variant", "metric")
            },
            "value": pa.array([float(s.value) for s in scores], pa.float64()),
            "n": pa.array([s.n for s in scores], pa.int32()),
            "plan": pa.array([s.plan for s in scores], pa.string()),
        }
    )


def _insert_all(store: Store, tables: Mapping[str, pa.Table]) -> None:
    """Insert each table's rows (columns by name) into the store table of its key, in one transaction."""
    with store.transaction() as con:
        for name, table in tables.items():
            con.register("new_rows", table)
            try:
                con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM new_rows")
            finally:
                con.unregister("new_rows")


def _answer_rows(run_id: int, answers: Sequence[GeneratedAnswer]) -> pa.Table:
    return pa.table(
        {
            "run_id": pa.array([run_id] * len(answers), pa.int32()),
            **{name: pa.array([getattr(a, name) for a in answers], pa.string()) for name in GENERATION_COLUMNS},
        }
    )


def write_evaluation(
    store: Store, run_id: int, scores: Sequence[TaskScore], answers: Sequence[GeneratedAnswer]
) -> None:
    """Store an evaluation's scores and generated answers, all or nothing."""
    _insert_all(store, {"eval_results": _score_rows(run_id, scores), "generations": _answer_rows(run_id, answers)})


@dataclass(frozen=True, kw_only=True)
class AdaptedExpert:
    """One expert an adaptation trained (a row of `adaptation_experts`)."""

    rank: int
    zone: str
    layer: int
    expert: int
    score: float
    specificity: float
    overlap: float
    target_freq: float
    mean_freq: float


def write_adaptation(
    store: Store,
    run_id: int,
    experts: Sequence[AdaptedExpert],
    scores: Sequence[TaskScore],
    answers: Sequence[GeneratedAnswer] = (),
) -> None:
    """Store the experts an adaptation trained, its before/after scores and, when it was scored on a
    task, the answers the task scored (variants before and after), all or nothing."""
    columns = [field.name for field in fields(AdaptedExpert)]
    expert_rows = pa.table(
        {
            "run_id": pa.array([run_id] * len(experts), pa.int32()),
            **{name: [getattr(e, name) for e in experts] for name in columns},
        }
    )
    _insert_all(
        store,
        {
            "adaptation_experts": expert_rows,
            "eval_results": _score_rows(run_id, scores),
            "generations": _answer_rows(run_id, answers),
        },
    )


def merge_run_params(store: Store, run_id: int, extra: Mapping[str, Any]) -> None:
    """Add `extra` to a run's params (what is known only at its end, such as how long it took)."""
    with store.transaction() as con:
        con.execute(
            "UPDATE runs SET params = json_merge_patch(params, ?) WHERE run_id = ?", [json.dumps(extra), run_id]
        )


def set_run_status(store: Store, run_id: int, status: str) -> None:
    """Mark a run running, complete, failed or cancelled (finished_at is set for all but running)."""
    with store.transaction() as con:
        con.execute(
            "UPDATE runs SET status = ?, finished_at = CASE WHEN ? = 'running' THEN NULL ELSE current_timestamp END "
            "WHERE run_id = ?",
            [status, status, run_id],
        )


class BatchWriter:
    """Writes traced batches of one run, each as a single transaction, on its own cursor.

    The cursor lets a background thread write while the model computes the next batch.
    """

    def __init__(self, store: Store, run_id: int) -> None:
        self._store = store
        self._run_id = run_id
        self._con = store.con.cursor()
        row = self._con.execute(
            "SELECT r.weight_unit, m.n_experts FROM runs AS r JOIN models AS m USING (model_id) WHERE r.run_id = ?",
            [run_id],
        ).fetchone()
        if row is None:
            raise StoreError(f"run {run_id} is not in store {store.path}: list runs with `polyroute runs`")
        self._weight_unit = float(row[0])
        self._n_experts = int(row[1])
        self._partners = summaries.Partners()  # this run's sequences, for the same items' later ones
        # While a run is written the model's forward keeps every core busy; measured on 2 cores, a
        # single-threaded writer slows it least (bench/capture.py). Restored on close. The setting is
        # global, so a shared store (the app, whose pages read meanwhile) keeps its own.
        self._threads: int | None = None
        if not store.shared:
            threads = self._con.execute("SELECT current_setting('threads')").fetchone()
            self._threads = int(threads[0]) if threads else 1
            self._con.execute("SET threads = 1")

    def close(self) -> None:
        if self._threads is not None:
            self._con.execute(f"SET threads = {self._threads}")
        self._con.close()

    def write(self, batches: Sequence[tuple[Sequence[SequenceKey], RoutingBatch]]) -> None:
        """Store batches, each with the keys of its sequences in batch order, in one transaction."""
        parts: dict[str, list[pa.Table]] = {}
        for keys, batch in batches:
            if len(keys) != batch.n_sequences:
                raise StoreError(f"{len(keys)} sequence keys for a batch of {batch.n_sequences} sequences")
            for name, table in self._tables(keys, batch).items():
                parts.setdefault(name, []).append(table)
        tables = {name: pa.concat_tables(group) for name, group in parts.items()}
        new = self._summaries(batches) if batches else None
        try:
            with self._store.transaction(self._con) as con:
                if new is not None:  # first: it compares them with the sequences already stored
                    summaries.add_sequences(con, self._run_id, new, self._partners)
                for name, table in tables.items():
                    con.register("batch_rows", table)
                    try:
                        con.execute(f"INSERT INTO {name} SELECT * FROM batch_rows")
                    finally:
                        con.unregister("batch_rows")
        except StoreError as error:
            if "Duplicate key" in str(error.__cause__):
                raise StoreError(
                    f"run {self._run_id} already holds some of these sequences; nothing was written"
                ) from None
            raise

    def _summaries(self, batches: Sequence[tuple[Sequence[SequenceKey], RoutingBatch]]) -> summaries.NewSequences:
        """The routing summaries of every sequence of `batches`, in batch order."""
        parts = [
            summarise_sequences(
                batch.expert_ids.astype(np.int64),
                None if batch.expert_weights is None else self._stored_weights(batch.expert_weights),
                batch.seq_lengths,
                self._n_experts,
                np.array([key.seq_id for key in keys], dtype=np.int64),
            )
            for keys, batch in batches
        ]
        probs = [batch.router_probs for _, batch in batches]
        keys = [key for chunk, _ in batches for key in chunk]
        first = batches[0][1]
        return summaries.NewSequences(
            seq_ids=np.array([key.seq_id for key in keys], dtype=np.int64),
            items=[key.item_id for key in keys],
            langs=[key.lang for key in keys],
            lengths=np.concatenate([batch.seq_lengths for _, batch in batches]).astype(np.int64),
            layers=np.asarray(first.layers, dtype=np.int64),
            top_k=first.expert_ids.shape[-1],
            summary=SequenceSummary(
                hits=np.concatenate([part.hits for part in parts]),
                weight=None if any(p.weight is None for p in parts) else np.concatenate([p.weight for p in parts]),
                consistency=np.concatenate([part.consistency for part in parts]),
            ),
            soft=None if any(p is None for p in probs) else np.concatenate(probs),  # type: ignore[arg-type]
        )

    def _tables(self, keys: Sequence[SequenceKey], batch: RoutingBatch) -> dict[str, pa.Table]:
        n_tokens, n_layers, _ = batch.expert_ids.shape
        run = self._run_id
        seq_ids = np.array([key.seq_id for key in keys], dtype=np.int32)
        token_seq = np.repeat(seq_ids, batch.seq_lengths)
        token_pos = (np.arange(n_tokens) - np.repeat(batch.offsets[:-1], batch.seq_lengths)).astype(np.int32)
        tables = {
            "sequences": pa.table(
                {
                    "run_id": np.full(len(keys), run, np.int32),
                    "seq_id": seq_ids,
                    "item_id": pa.array([key.item_id for key in keys]),
                    "lang": pa.array([key.lang for key in keys]),
                    "n_tokens": batch.seq_lengths.astype(np.int32),
                }
            ),
            "tokens": pa.table(
                {
                    "run_id": np.full(n_tokens, run, np.int32),
                    "seq_id": token_seq,
                    "pos": token_pos,
                    "token_id": batch.token_ids.astype(np.int32),
                    "piece": pa.array(batch.pieces, pa.string()),
                    "special": batch.special,
                    "generated": batch.generated,
                }
            ),
            "route_lists": self._route_lists(seq_ids, batch),
        }
        if batch.router_probs is not None:
            tables["router_probs"] = _per_layer_lists(run, seq_ids, batch.layers, batch.router_probs)
        if batch.router_logits is not None:
            rows = pa.table(
                {
                    "run_id": np.full(n_tokens * n_layers, run, np.int32),
                    "seq_id": np.repeat(token_seq, n_layers),
                    "pos": np.repeat(token_pos, n_layers),
                    "layer": np.tile(batch.layers.astype(np.int16), n_tokens),
                    "logits": summaries.as_lists(np.asarray(batch.router_logits, dtype=np.float32)),
                }
            )
            tables["router_logits"] = rows
        return tables

    def _stored_weights(self, weights: np.ndarray) -> np.ndarray:
        """The weights as `routes` will give them back (16-bit codes), so that the summaries equal
        a recomputation from the stored rows."""
        codes = np.rint(weights / self._weight_unit)  # as _weight_codes rounds them
        return (codes.astype(np.float64) * self._weight_unit).astype(np.float32)

    def _route_lists(self, seq_ids: np.ndarray, batch: RoutingBatch) -> pa.Table:
        """One row per sequence and MoE layer: its tokens' top-k experts and weight codes in (pos, rank)
        order, gathered from the batch's [tokens, layers, k] arrays in one pass."""
        _, n_layers, top_k = batch.expert_ids.shape
        lengths = batch.seq_lengths.astype(np.int64)
        # order[j] = the flat batch index of the j-th value: sequence, then layer, then pos and rank.
        starts = np.repeat(batch.offsets[:-1].astype(np.int64), lengths * n_layers)
        token = starts + _ranges(np.repeat(lengths, n_layers))
        layer = np.repeat(np.tile(np.arange(n_layers), len(lengths)), np.repeat(lengths, n_layers))
        order = ((token * n_layers + layer)[:, None] * top_k + np.arange(top_k)).reshape(-1)
        offsets = np.zeros(len(lengths) * n_layers + 1, dtype=np.int32)
        np.cumsum(np.repeat(lengths * top_k, n_layers), out=offsets[1:])
        experts = pa.ListArray.from_arrays(offsets, batch.expert_ids.reshape(-1).astype(np.uint16)[order])
        if batch.expert_weights is None:
            codes = pa.nulls(len(offsets) - 1, pa.list_(pa.uint16()))
        else:
            codes = pa.ListArray.from_arrays(offsets, self._weight_codes(batch.expert_weights.reshape(-1)[order]))
        return pa.table(
            {
                "run_id": np.full(len(offsets) - 1, self._run_id, np.int32),
                "seq_id": np.repeat(seq_ids, n_layers),
                "layer": np.tile(batch.layers.astype(np.int16), len(seq_ids)),
                "experts": experts,
                "weight_codes": codes,
            }
        )

    def _weight_codes(self, weights: np.ndarray) -> np.ndarray:
        codes = np.rint(weights / self._weight_unit)
        if codes.size and (codes.min() < 0 or codes.max() > WEIGHT_LEVELS):
            bound = self._weight_unit * WEIGHT_LEVELS
            raise StoreError(
                f"a routing weight ({weights.min():.4g} .. {weights.max():.4g}) lies outside [0, {bound:g}], the range "
                "the model's adapter declared: its weight bound (routed scaling factor) is wrong"
            )
        return codes.astype(np.uint16)


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """0..n-1 for each n of `lengths`, concatenated."""
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(int(lengths.sum())) - starts


def _per_layer_lists(run: int, seq_ids: np.ndarray, layers: np.ndarray, probs: np.ndarray) -> pa.Table:
    n_layers = len(layers)
    return pa.table(
        {
            "run_id": np.full(len(seq_ids) * n_layers, run, np.int32),
            "seq_id": np.repeat(seq_ids, n_layers),
            "layer": np.tile(layers.astype(np.int16), len(seq_ids)),
            "probs": summaries.as_lists(np.asarray(probs, dtype=np.float32)),
        }
    )


def checkpoint(store: Store) -> None:
    """Fold the write-ahead log into the compressed file (done when a run ends). In the app another
    session may be writing just then (DuckDB refuses to checkpoint beside another write
    transaction): the run is already committed, and DuckDB folds the log at a later checkpoint or
    when the store is closed, so that is not an error."""
    try:
        store.con.execute("CHECKPOINT")
    except duckdb.TransactionException as error:
        if "other write transactions active" not in str(error):
            raise translate(error, store.path) from error
    except duckdb.Error as error:
        raise translate(error, store.path) from error
