"""The routing summaries (migration 005): written with every traced batch, read by the analyses.

`add_sequences` runs inside the writer's transaction, before the batch's own rows go in: it stores
each new sequence's summary, adds it to its language's sums, and compares it with the sequences of
the same items already stored (and with each other) to add to the language pairs' divergence sums.
So a running, killed or resumed run always has summaries that equal a recomputation from its rows
(`store.upgrades` does that recomputation for stores written before the summaries existed).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

from moe_core.analysis import summaries as s
from store.errors import StoreError

TABLES = ("sequence_routing", "language_routing", "language_expert_routing", "language_pair_divergence")


@dataclass(frozen=True, kw_only=True)
class NewSequences:
    """Traced sequences about to be stored, with the arrays the summaries come from.

    seq_ids, lengths: [S]; items, langs: S strings; layers: [Y] decoder-layer indices;
    summary: their `SequenceSummary`; soft: [S, Y, E] router probabilities or None.
    """

    seq_ids: np.ndarray
    items: Sequence[str]
    langs: Sequence[str]
    lengths: np.ndarray
    layers: np.ndarray
    top_k: int
    summary: s.SequenceSummary
    soft: np.ndarray | None


def add_sequences(
    con: duckdb.DuckDBPyConnection, run_id: int, new: NewSequences, partners: Partners | None = None
) -> None:
    """Add `new` to run `run_id`'s summaries (call inside the transaction that stores them).
    `partners` keeps what was read or computed for the run's next calls (a writer's)."""
    dists = {"hard": s.hard_distribution(new.summary.hits, new.lengths, new.top_k)}
    if new.summary.weight is not None:
        dists["weight"] = new.summary.weight
    if new.soft is not None:
        dists["soft"] = new.soft.astype(np.float32, copy=False)
    entropies = {source: s.sequence_entropy(dist) for source, dist in dists.items()}
    # First: the stored sequences it compares with are those with summaries.
    _add_to_pairs(con, run_id, new, dists, entropies, partners or Partners())
    _add_to_languages(con, run_id, new, dists, entropies)
    _insert(con, "sequence_routing", _sequence_rows(run_id, new))


def as_lists(values: np.ndarray) -> pa.Array:
    """[..., E] -> one list of E values per leading row, of the array's own type (for LIST columns)."""
    width = values.shape[-1]
    flat = pa.array(np.ascontiguousarray(values).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, width).cast(pa.list_(flat.type))


def _coded(names: Sequence[str] | np.ndarray, codes: np.ndarray) -> pa.DictionaryArray:
    """A text column as `names[codes]`, dictionary-encoded: a summary call's 100k-row language
    columns are built in a millisecond instead of tens (a Python string per row)."""
    indices = pa.array(np.asarray(codes, dtype=np.int32))
    return pa.DictionaryArray.from_arrays(indices, pa.array(list(names), pa.string()))


def _unlist(column: pa.ChunkedArray | pa.Array, width: int, dtype: type) -> np.ndarray:
    """A list column of equal-width lists -> [rows, width]."""
    flat = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return np.asarray(flat.flatten().to_numpy(zero_copy_only=False), dtype=dtype).reshape(-1, width)


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table, conflict: str = "") -> None:
    con.register("summary_rows", rows)
    try:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM summary_rows {conflict}")
    finally:
        con.unregister("summary_rows")


def _sequence_rows(run_id: int, new: NewSequences) -> pa.Table:
    n_seqs, n_layers, _ = new.summary.hits.shape
    consistency = new.summary.consistency.reshape(-1)
    weight = new.summary.weight
    return pa.table(
        {
            "run_id": np.full(n_seqs * n_layers, run_id, np.int32),
            "seq_id": np.repeat(new.seq_ids.astype(np.int32), n_layers),
            "layer": np.tile(new.layers.astype(np.int16), n_seqs),
            "hits": as_lists(new.summary.hits.astype(np.uint32)),
            "weight": pa.nulls(n_seqs * n_layers, pa.list_(pa.float32()))
            if weight is None
            else as_lists(weight.astype(np.float32, copy=False)),
            "consistency": pa.array(consistency, pa.float64(), mask=np.isnan(consistency)),
        }
    )


# Per language ----------------------------------------------------------------------------------

_LAYER_SUMS = (
    *("n_sequences", "n_tokens", "entropy_soft", "entropy_weight", "entropy_hard"),
    *("consistency_sum", "consistency_count"),
)
_EXPERT_SUMS = ("hits", "frequency_sum", "weight_sum", "soft_sum")
_COUNTS = {"n_sequences", "n_tokens", "consistency_count", "hits"}


def _add_to_languages(
    con: duckdb.DuckDBPyConnection, run_id: int, new: NewSequences, dists: dict, entropies: dict
) -> None:
    """Add the new sequences' sums to their languages' rows. In-place additions (not rewritten
    rows): DuckDB keeps the tables compact that way."""
    langs, group = np.unique(np.asarray(new.langs, dtype=str), return_inverse=True)
    n_layers, n_experts = dists["hard"].shape[1:]

    def by_lang(values: np.ndarray, divisor: np.ndarray | None = None) -> np.ndarray:  # [S, ...] -> [G, ...]
        return s.group_sums(values, group, len(langs), divisor)

    lengths = new.lengths.astype(np.float64)
    consistency = new.summary.consistency
    sums = {
        "n_sequences": by_lang(np.ones((len(group), n_layers))),
        "n_tokens": by_lang(np.repeat(lengths[:, None], n_layers, axis=1)),
        "entropy_hard": by_lang(entropies["hard"]),
        "consistency_sum": by_lang(np.nan_to_num(consistency)),
        "consistency_count": by_lang((~np.isnan(consistency)).astype(np.float64)),
        "hits": by_lang(new.summary.hits),
        "frequency_sum": by_lang(new.summary.hits, np.maximum(lengths, 1)),
    }
    for source, column in (("weight", "weight_sum"), ("soft", "soft_sum")):
        if source in dists:
            sums[column] = by_lang(dists[source])
            sums[f"entropy_{source}"] = by_lang(entropies[source])
    layers = new.layers.astype(np.int16)
    for table, names, shape in (
        ("language_routing", _LAYER_SUMS, (len(langs), n_layers)),
        ("language_expert_routing", _EXPERT_SUMS, (len(langs), n_layers, n_experts)),
    ):
        size = int(np.prod(shape))
        index = np.unravel_index(np.arange(size), shape)
        columns: dict[str, object] = {
            "run_id": np.full(size, run_id, np.int32),
            "lang": _coded(langs, index[0]),
            "layer": layers[index[1]],
        }
        if table == "language_expert_routing":
            columns["expert"] = index[2].astype(np.uint16)
        for name in names:
            values = sums[name].reshape(-1) if name in sums else None
            if values is None:
                columns[name] = pa.nulls(size, pa.float64())
            else:
                columns[name] = np.rint(values).astype(np.int64) if name in _COUNTS else values
        # NULL stays NULL: a run with one sequence without weights (or router probabilities) has none.
        update = ", ".join(f"{name} = {name} + excluded.{name}" for name in names)
        _insert(con, table, pa.table(columns), f"ON CONFLICT DO UPDATE SET {update}")


# Per language pair -----------------------------------------------------------------------------

# The run's sequences that already have summaries and hold one of the items.
_PARTNERS = """
SELECT seq_id, item_id, lang FROM sequences
WHERE run_id = ? AND list_contains(?, item_id)
  AND seq_id IN (SELECT seq_id FROM sequence_routing WHERE run_id = ?)
ORDER BY seq_id
"""
_PARTNER_ROWS = """
SELECT s.seq_id, s.n_tokens, r.hits, r.weight
FROM sequences AS s JOIN sequence_routing AS r USING (run_id, seq_id)
WHERE s.run_id = ? AND s.seq_id IN (SELECT unnest(?)) ORDER BY s.seq_id, r.layer
"""
_PARTNER_PROBS = """
SELECT seq_id, probs FROM router_probs WHERE run_id = ? AND seq_id IN (SELECT unnest(?)) ORDER BY seq_id, layer
"""

Entry = dict[str, tuple[np.ndarray, np.ndarray]]  # source -> (distribution [Y, E] float32, entropy [Y])


def kept_bytes() -> int:
    """How much a writer keeps of its run's distributions: $POLYROUTE_SUMMARY_CACHE_MB, else a fifth
    of the machine's memory up to 4 GiB (a 500M-decision run of a 48-layer, 128-expert model needs
    3.2 GB to keep all of them)."""
    if "POLYROUTE_SUMMARY_CACHE_MB" in os.environ:
        return int(os.environ["POLYROUTE_SUMMARY_CACHE_MB"]) << 20
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(memory // 5, 4 << 30)


class Partners:
    """The distributions and entropies of a run's summarised sequences, kept for the sequences of
    the same items that come later (most recently used first, within `max_bytes`), so each is read
    back from the store at most once while it is kept. Reading back is what costs: a scattered
    sequence's rows cannot be fetched without scanning the table's distributions."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self._kept: OrderedDict[int, Entry] = OrderedDict()
        self._bytes = 0
        self.max_bytes = kept_bytes() if max_bytes is None else max_bytes

    def get(self, seq_id: int) -> Entry | None:
        entry = self._kept.get(seq_id)
        if entry is not None:
            self._kept.move_to_end(seq_id)
        return entry

    def put(self, seq_id: int, entry: Entry) -> None:
        if seq_id in self._kept:
            return
        self._kept[seq_id] = entry
        self._bytes += _size(entry)
        while self._bytes > self.max_bytes and self._kept:
            _, dropped = self._kept.popitem(last=False)
            self._bytes -= _size(dropped)


def _size(entry: Entry) -> int:
    return sum(dist.nbytes + entropy.nbytes for dist, entropy in entry.values())


def _read_partners(
    con: duckdb.DuckDBPyConnection, run_id: int, seq_ids: list[int], shape: tuple[int, int], new: NewSequences
) -> dict[int, Entry]:
    """The entries of stored sequences `seq_ids` (ascending), from their summaries and router probabilities."""
    n_layers, width = shape
    rows = con.execute(_PARTNER_ROWS, [run_id, seq_ids]).to_arrow_table()
    lengths = rows.column("n_tokens").to_numpy()[::n_layers]
    hits = _unlist(rows.column("hits"), width, np.int64).reshape(-1, n_layers, width)
    dists = {"hard": s.hard_distribution(hits, lengths, new.top_k)}
    if new.summary.weight is not None:
        if rows.column("weight").null_count:
            raise StoreError(f"run {run_id} mixes sequences with and without routing weights: trace a new run")
        dists["weight"] = _unlist(rows.column("weight"), width, np.float32).reshape(-1, n_layers, width)
    if new.soft is not None:
        probs = con.execute(_PARTNER_PROBS, [run_id, seq_ids]).to_arrow_table()
        if probs.num_rows != len(seq_ids) * n_layers:
            raise StoreError(f"run {run_id} mixes sequences with and without router probabilities: trace a new run")
        dists["soft"] = _unlist(probs.column("probs"), width, np.float32).reshape(-1, n_layers, width)
    entropies = {source: s.sequence_entropy(dist) for source, dist in dists.items()}
    return {
        seq_id: {source: (dists[source][i].copy(), entropies[source][i].copy()) for source in dists}
        for i, seq_id in enumerate(seq_ids)
    }


def _add_to_pairs(
    con: duckdb.DuckDBPyConnection,
    run_id: int,
    new: NewSequences,
    dists: dict,
    entropies: dict,
    partners: Partners,
) -> None:
    """Compare each new sequence with every other-language sequence of its item (stored, or new
    and earlier in this call), and add the divergences to their language pair's sums."""
    found = con.execute(_PARTNERS, [run_id, sorted(set(new.items)), run_id]).fetchall()
    items = list(new.items) + [row[1] for row in found]
    langs = list(new.langs) + [row[2] for row in found]
    first, second = _pairs(items, langs, len(new.items))
    stored_ids = [int(row[0]) for row in found]
    entries = {seq_id: entry for seq_id in stored_ids if (entry := partners.get(seq_id)) is not None}
    missing = [seq_id for seq_id in stored_ids if seq_id not in entries]
    if missing and len(first):
        entries.update(_read_partners(con, run_id, missing, dists["hard"].shape[1:], new))
    for i, seq_id in enumerate(new.seq_ids.tolist()):
        # Copies: a view would keep the whole call's arrays alive for as long as one entry is kept.
        partners.put(seq_id, {source: (dists[source][i].copy(), entropies[source][i].copy()) for source in dists})
    if not len(first):
        return
    lang_names, lang_index = np.unique(np.asarray(langs, dtype=str), return_inverse=True)
    rows = []
    for source, dist in dists.items():
        stored = [entries[seq_id][source] for seq_id in stored_ids]
        pool = [*dist, *(d for d, _ in stored)]  # views and the kept arrays: nothing copied
        pool_entropy = (
            np.concatenate([entropies[source], np.stack([h for _, h in stored])]) if stored else entropies[source]
        )
        sums = s.pair_sums(pool, lang_index, first, second, pool_entropy)
        rows.append(_pair_rows(run_id, source, lang_names, new.layers, sums))
    # One statement for every source: an upsert's cost is mostly fixed per statement.
    _insert(con, "language_pair_divergence", pa.concat_tables(rows), _ADD)


_ADD = (
    "ON CONFLICT DO UPDATE SET n_items = n_items + excluded.n_items, js_sum = js_sum + excluded.js_sum, "
    "divergence_sum = divergence_sum + excluded.divergence_sum"
)


def _pairs(items: Sequence[str], langs: Sequence[str], n_new: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (new sequence, other) of one item in two languages: each new sequence with the
    stored ones (indices >= n_new) and with the new ones before it, so no pair counts twice."""
    by_item: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        by_item.setdefault(item, []).append(index)
    first, second = [], []
    for index in range(n_new):
        for other in by_item[items[index]]:
            if (other < index or other >= n_new) and langs[other] != langs[index]:
                first.append(index)
                second.append(other)
    return np.asarray(first, dtype=np.int64), np.asarray(second, dtype=np.int64)


def _pair_rows(run_id: int, source: str, names: np.ndarray, layers: np.ndarray, sums: s.PairSums) -> pa.Table:
    n_layers = len(layers)
    n_rows = len(sums.pairs) * n_layers
    return pa.table(
        {
            "run_id": np.full(n_rows, run_id, np.int32),
            "source": _coded([source], np.zeros(n_rows, np.int32)),
            "lang_a": _coded(names, np.repeat(sums.pairs[:, 0], n_layers)),
            "lang_b": _coded(names, np.repeat(sums.pairs[:, 1], n_layers)),
            "layer": np.tile(layers.astype(np.int16), len(sums.pairs)),
            "n_items": np.repeat(sums.n, n_layers).astype(np.int32),
            "js_sum": sums.js.reshape(-1),
            "divergence_sum": sums.normalised.reshape(-1),
        }
    )


# Reading ---------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LanguageSums:
    """A run's per-language summaries over `langs` [L] and `layers` [Y] (the caller's order).

    Arrays [L, Y, E]: hits, frequency_sum, weight_sum and soft_sum (None where the run has no such
    distribution). [L, Y]: n_sequences, n_tokens, entropy (per source; absent sources left out),
    consistency_sum, consistency_count. Languages without sequences hold zeros.
    """

    n_sequences: np.ndarray
    n_tokens: np.ndarray
    hits: np.ndarray
    frequency_sum: np.ndarray
    weight_sum: np.ndarray | None
    soft_sum: np.ndarray | None
    entropy: dict[str, np.ndarray]
    consistency_sum: np.ndarray
    consistency_count: np.ndarray

    @property
    def sources(self) -> tuple[str, ...]:
        """The distributions this run has, in SOURCES order."""
        return tuple(source for source in s.SOURCES if source in self.entropy)


def stored_sources(con: duckdb.DuckDBPyConnection, run_id: int) -> tuple[str, ...]:
    """The distributions run `run_id` can give, in SOURCES order: those whose entropy sums it
    stored (`LanguageSums.sources` without reading the per-expert sums); none for a run with no
    stored sequence."""
    counts = con.execute(
        "SELECT " + ", ".join(f"count(entropy_{source})" for source in s.SOURCES) + " FROM language_routing "
        "WHERE run_id = ?",
        [run_id],
    ).fetchone()
    return tuple(source for source, count in zip(s.SOURCES, counts or (), strict=True) if count)


def language_sums(
    con: duckdb.DuckDBPyConnection, run_id: int, langs: Sequence[str], layers: np.ndarray, n_experts: int
) -> LanguageSums:
    lang_of = {lang: i for i, lang in enumerate(langs)}

    def placed(table: str, names: tuple[str, ...], shape: tuple[int, ...]) -> dict[str, np.ndarray | None]:
        rows = con.execute(f"SELECT * FROM {table} WHERE run_id = ?", [run_id]).fetchnumpy()
        g = np.array([lang_of.get(lang, -1) for lang in rows["lang"]], dtype=np.int64)
        keep = g >= 0
        index = [g[keep], np.searchsorted(layers, np.asarray(rows["layer"])[keep])]
        if "expert" in rows:
            index.append(np.asarray(rows["expert"], dtype=np.int64)[keep])
        found: dict[str, np.ndarray | None] = {}
        for name in names:
            values = rows[name]
            if np.ma.isMaskedArray(values) and np.ma.getmaskarray(values).all() and len(values):
                found[name] = None  # the run has no such distribution
                continue
            out = np.zeros(shape)
            out[tuple(index)] = np.ma.filled(np.ma.asarray(values, dtype=np.float64), np.nan)[keep]
            found[name] = out
        return found

    per_layer = placed("language_routing", _LAYER_SUMS, (len(langs), len(layers)))
    per_expert = placed("language_expert_routing", _EXPERT_SUMS, (len(langs), len(layers), n_experts))
    entropy_sums = {source: values for source in s.SOURCES if (values := per_layer[f"entropy_{source}"]) is not None}
    return LanguageSums(
        n_sequences=per_layer["n_sequences"],  # type: ignore[arg-type]  # never NULL
        n_tokens=per_layer["n_tokens"],  # type: ignore[arg-type]
        hits=per_expert["hits"],  # type: ignore[arg-type]
        frequency_sum=per_expert["frequency_sum"],  # type: ignore[arg-type]
        weight_sum=per_expert["weight_sum"],
        soft_sum=per_expert["soft_sum"],
        entropy=entropy_sums,
        consistency_sum=per_layer["consistency_sum"],  # type: ignore[arg-type]
        consistency_count=per_layer["consistency_count"],  # type: ignore[arg-type]
    )


@dataclass(frozen=True, kw_only=True)
class PairDivergence:
    """Divergence sums of every pair of `langs` [L] per layer [Y], symmetric: n [L, L] items both
    hold; js, normalised [L, L, Y] sums over those items (the diagonal stays 0)."""

    n: np.ndarray
    js: np.ndarray
    normalised: np.ndarray


def pair_divergence(
    con: duckdb.DuckDBPyConnection, run_id: int, source: str, langs: Sequence[str], layers: np.ndarray
) -> PairDivergence:
    rows = con.execute(
        "SELECT lang_a, lang_b, layer, n_items, js_sum, divergence_sum FROM language_pair_divergence "
        "WHERE run_id = ? AND source = ? AND list_contains(?, lang_a) AND list_contains(?, lang_b) "
        "AND list_contains(?, layer)",
        [run_id, source, list(langs), list(langs), layers.tolist()],
    ).fetchnumpy()
    lang_of = {lang: i for i, lang in enumerate(langs)}
    a = np.array([lang_of[lang] for lang in rows["lang_a"]], dtype=np.int64)
    b = np.array([lang_of[lang] for lang in rows["lang_b"]], dtype=np.int64)
    y = np.searchsorted(layers, np.asarray(rows["layer"]))
    n = np.zeros((len(langs), len(langs)))
    js = np.zeros((len(langs), len(langs), len(layers)))
    normalised = np.zeros_like(js)
    for first, second in ((a, b), (b, a)):
        n[first, second] = rows["n_items"]
        js[first, second, y] = rows["js_sum"]
        normalised[first, second, y] = rows["divergence_sum"]
    return PairDivergence(n=n, js=js, normalised=normalised)
