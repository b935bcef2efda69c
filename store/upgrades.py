"""Data steps of migrations: what a schema change must compute from rows already stored.

`migrations.migrate` runs a version's step in the transaction of its SQL, so an interrupted
upgrade leaves the store as it was (and usable by the release that wrote it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
from tqdm import tqdm

from moe_core.analysis.summaries import summarise_sequences
from store import queries as q
from store import summaries
from store.connection import Store

Progress = Callable[[int, int], None]  # (sequences done, sequences in all)
SEQUENCES_PER_STEP = 256


_PACK = """
INSERT INTO route_lists
SELECT run_id, seq_id, layer, list(expert ORDER BY pos, rank),
       CASE WHEN count(weight_code) > 0 THEN list(weight_code ORDER BY pos, rank) END
FROM route_codes
WHERE run_id = ? AND seq_id BETWEEN ? AND ?
GROUP BY run_id, seq_id, layer
ORDER BY seq_id, layer
"""


def pack_routes(con: duckdb.DuckDBPyConnection, progress: Progress | None = None) -> None:
    """Migration 006: every run's rows of `route_codes` packed into `route_lists`, a few hundred
    sequences at a time (one statement over a 500M-row table took more than 20 GB), then the old
    table dropped."""
    sequences = con.execute("SELECT run_id, seq_id FROM sequences ORDER BY run_id, seq_id").fetchnumpy()
    runs, seq_ids = sequences["run_id"], sequences["seq_id"]
    for start in range(0, len(seq_ids), SEQUENCES_PER_STEP):
        end = start + SEQUENCES_PER_STEP
        for run_id in np.unique(runs[start:end]):
            chunk = seq_ids[start:end][runs[start:end] == run_id]
            con.execute(_PACK, [int(run_id), int(chunk[0]), int(chunk[-1])])
        if progress:
            progress(min(end, len(seq_ids)), len(seq_ids))
    con.execute("DROP TABLE route_codes")


def build_summaries(con: duckdb.DuckDBPyConnection, progress: Progress | None = None) -> None:
    """Migration 005: the routing summaries of every stored sequence, from its routes and router
    probabilities, exactly as the writer would have added them."""
    store = Store(Path(), con, read_only=False)
    runs = [row[0] for row in con.execute("SELECT DISTINCT run_id FROM sequences ORDER BY run_id").fetchall()]
    total = con.execute("SELECT count(*) FROM sequences").fetchone()[0]  # type: ignore[index]
    done = 0
    for run_id in runs:
        done = _rebuild(store, run_id, progress, done, total)


def rebuild_summaries(store: Store, run_id: int) -> None:
    """Rebuild run `run_id`'s summaries from its stored rows, all or nothing (after its rows were
    edited by hand)."""
    with store.transaction() as con:
        rebuild_in_transaction(Store(store.path, con, read_only=False), run_id)


def rebuild_in_transaction(store: Store, run_id: int) -> None:
    """`rebuild_summaries` inside the caller's transaction (on `store.con`)."""
    _rebuild(store, run_id, None, 0, 0)


def add_summaries(store: Store, run_id: int, first_seq_id: int, progress: Progress | None = None) -> None:
    """Summarise run `run_id`'s sequences from `first_seq_id` on (stored without summaries) against
    the run's others, as the writer would have had it traced them (call inside a transaction)."""
    layout = q.run_layout(store, run_id)
    assert layout is not None
    new = layout.seq_ids[layout.seq_ids >= first_seq_id]
    _summarise(store, layout, new, progress, 0, len(new))


def _rebuild(store: Store, run_id: int, progress: Progress | None, done: int, total: int) -> int:
    """Replace run `run_id`'s summaries by ones built from its rows; returns `done` plus the
    sequences summarised."""
    con = store.con
    for table in summaries.TABLES:
        con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
    layout = q.run_layout(store, run_id)
    assert layout is not None
    return _summarise(store, layout, layout.seq_ids, progress, done, total)


def _summarise(
    store: Store, layout: q.RunLayout, seq_ids: np.ndarray, progress: Progress | None, done: int, total: int
) -> int:
    """Add the summaries of the run's sequences `seq_ids` (ascending, none summarised yet)."""
    con, run_id = store.con, layout.run_id
    partners = summaries.Partners()

    def add(blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]) -> None:
        index = np.concatenate([block[0] for block in blocks])
        experts = np.concatenate([block[1] for block in blocks]).astype(np.int64)
        weights = None if blocks[0][2] is None else np.concatenate([block[2] for block in blocks])
        lengths = layout.seq_tokens[index]
        seq_ids = layout.seq_ids[index]
        soft = q.sequence_router_probs(store, layout, seq_ids)
        summaries.add_sequences(
            con,
            run_id,
            summaries.NewSequences(
                seq_ids=seq_ids,
                items=[layout.items[i] for i in layout.seq_item[index]],
                langs=[layout.langs[i] for i in layout.seq_lang[index]],
                lengths=lengths,
                layers=layout.layers,
                top_k=layout.top_k,
                summary=summarise_sequences(experts, weights, lengths, layout.n_experts, seq_ids),
                soft=soft,
            ),
            partners,
        )

    # A chunk of sequences at a time, each read whole before it is written: the summaries go in on
    # the same connection (and transaction), which would end a stream still open on it.
    for start in range(0, len(seq_ids), SEQUENCES_PER_STEP):
        chunk = seq_ids[start : start + SEQUENCES_PER_STEP]
        bounds = (int(chunk[0]), int(chunk[-1]))
        add(list(q.token_expert_batches(store, layout, with_weights=True, ordered=True, seq_range=bounds)))
        done += len(chunk)
        if progress:
            progress(done, total)
    return done


def progress_bar(description: str, unit: str = "seq") -> Progress:
    """A tqdm bar on stderr, created on the first call (so a store with nothing to upgrade shows none)."""
    bar: list[tqdm] = []

    def update(done: int, total: int) -> None:
        if not bar:
            bar.append(tqdm(total=total, desc=description, unit=unit, leave=False))
        bar[0].update(done - bar[0].n)
        if done >= total:
            bar[0].close()

    return update


# Version -> its data step. The steps of pending versions run after all their SQL, in this order
# (the summaries read the packed routes).
DATA_STEPS: dict[int, Callable[[duckdb.DuckDBPyConnection, Progress | None], None]] = {
    6: pack_routes,
    5: build_summaries,
}
