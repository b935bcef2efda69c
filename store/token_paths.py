"""Reads for the Token paths page: the aligned items of a run (with the languages each is traced in
and a text to name it by), and one item's sequences with every token's experts and weights.

Only the chosen item's sequences are read: their rows are found by run and sequence id, which the
writer's (run, seq, pos, layer) order lets DuckDB's zone maps prune. Rows are placed into arrays
by numpy indexing, never one by one in Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np

from store.connection import Store, translate
from store.errors import StoreError


@dataclass(frozen=True, kw_only=True)
class TracedItem:
    """An aligned item of a run: the languages it was traced in and a text that names it."""

    item_id: str
    langs: tuple[str, ...]  # sorted
    text: str | None  # in the preferred language when traced in it, else in its first traced language
    text_lang: str | None

    def traced_in_all(self, langs: Sequence[str]) -> bool:
        return set(langs) <= set(self.langs)


_ITEMS = """
WITH traced AS (SELECT item_id, lang FROM sequences WHERE run_id = ?)
SELECT tr.item_id,
       list(tr.lang ORDER BY tr.lang) AS langs,
       first(x.text ORDER BY tr.lang <> ?, tr.lang) FILTER (WHERE x.text IS NOT NULL) AS text,
       first(x.lang ORDER BY tr.lang <> ?, tr.lang) FILTER (WHERE x.text IS NOT NULL) AS text_lang,
       min(x.item_index) AS item_index
FROM traced AS tr
LEFT JOIN texts AS x
       ON x.corpus_id = (SELECT corpus_id FROM runs WHERE run_id = ?) AND x.item_id = tr.item_id AND x.lang = tr.lang
GROUP BY tr.item_id
ORDER BY item_index NULLS LAST, tr.item_id
"""


def traced_items(store: Store, run_id: int, prefer_lang: str) -> list[TracedItem]:
    """Every item of the run in corpus order, named by its text in `prefer_lang` where it has one."""
    rows = _fetch(store, _ITEMS, [run_id, prefer_lang, prefer_lang, run_id])
    return [TracedItem(item_id=r[0], langs=tuple(r[1]), text=r[2], text_lang=r[3]) for r in rows]


@dataclass(frozen=True, kw_only=True)
class TokenPath:
    """One language's sequence of an item and every token's route through the MoE layers."""

    lang: str
    seq_id: int
    text: str | None  # the corpus text that was traced (None when the run has no corpus)
    pieces: list[str]  # [T] the tokenizer's text of each token, in position order
    token_ids: np.ndarray  # [T] int64
    special: np.ndarray  # [T] bool: special or chat-template tokens, not part of the text
    layers: np.ndarray  # [Y] int64 decoder-layer indices of the MoE layers
    experts: np.ndarray  # [T, Y, k] int64 expert ids in the model's top-k order
    weights: np.ndarray | None  # [T, Y, k] float32 routing weights; None for an id-only run


_SEQUENCES = """
SELECT s.seq_id, s.lang, s.n_tokens, x.text
FROM sequences AS s
LEFT JOIN texts AS x
       ON x.corpus_id = (SELECT corpus_id FROM runs WHERE run_id = ?) AND x.item_id = s.item_id AND x.lang = s.lang
WHERE s.run_id = ? AND s.item_id = ? AND list_contains(?, s.lang)
ORDER BY s.seq_id
"""
_MODEL = "SELECT m.moe_layers, m.top_k FROM runs AS r JOIN models AS m USING (model_id) WHERE r.run_id = ?"
# One equality per sequence (not an IN list): each is a range of the scan that zone maps find.
_TOKENS = "SELECT pos, token_id, piece, special FROM tokens WHERE run_id = ? AND seq_id = ? ORDER BY pos"
_ROUTES = "SELECT pos, layer, rank, expert, weight FROM routes WHERE run_id = ? AND seq_id = ?"


def item_token_paths(store: Store, run_id: int, item_id: str, langs: Sequence[str]) -> list[TokenPath]:
    """The item's sequence in each of `langs` that the run traced it in, in the order of `langs`
    (a language it was not traced in is left out)."""
    model = _fetch(store, _MODEL, [run_id])
    if not model:
        return []
    layers, top_k = np.asarray(model[0][0], dtype=np.int64), int(model[0][1])
    found = {row[1]: row for row in _fetch(store, _SEQUENCES, [run_id, run_id, item_id, list(langs)])}
    return [_token_path(store, run_id, found[lang], layers, top_k) for lang in langs if lang in found]


def _token_path(store: Store, run_id: int, sequence: tuple, layers: np.ndarray, top_k: int) -> TokenPath:
    seq_id, lang, n_tokens, text = sequence
    tokens = _numpy(store, _TOKENS, [run_id, seq_id])
    routes = _numpy(store, _ROUTES, [run_id, seq_id])
    if not np.array_equal(tokens["pos"], np.arange(n_tokens)):
        raise StoreError(f"sequence {seq_id} of run {run_id} has missing or extra tokens: the store is incomplete")
    pos, layer, rank = (np.asarray(routes[name], dtype=np.int64) for name in ("pos", "layer", "rank"))
    layer_index = np.searchsorted(layers, layer)
    shape = (n_tokens, len(layers), top_k)
    placed = (
        len(pos) == n_tokens * len(layers) * top_k
        and bool(np.isin(layer, layers).all())
        and bool(((pos >= 0) & (pos < n_tokens) & (rank < top_k)).all())
    )
    experts = np.full(shape, -1, dtype=np.int64)
    if placed:
        experts[pos, layer_index, rank] = routes["expert"]
    if not placed or (experts < 0).any():  # a row too few, too many or twice: the counts no longer add up
        raise StoreError(f"sequence {seq_id} of run {run_id} has incomplete routing rows: the store is damaged")
    # NULL weights (an id-only backend) come back masked; such a run has no weight anywhere.
    stored = routes["weight"]
    weights = None
    if not (np.ma.isMaskedArray(stored) and np.ma.getmaskarray(stored).all()):
        weights = np.full(shape, np.nan, dtype=np.float32)
        weights[pos, layer_index, rank] = np.ma.filled(np.ma.asarray(stored, dtype=np.float32), np.nan)
    return TokenPath(
        lang=lang,
        seq_id=int(seq_id),
        text=text,
        pieces=[str(piece) for piece in tokens["piece"]],
        token_ids=np.asarray(tokens["token_id"], dtype=np.int64),
        special=np.asarray(tokens["special"], dtype=bool),
        layers=layers,
        experts=experts,
        weights=weights,
    )


def _fetch(store: Store, sql: str, params: list) -> list[tuple]:
    try:
        return store.con.execute(sql, params).fetchall()
    except duckdb.Error as error:
        raise translate(error, store.path) from error


def _numpy(store: Store, sql: str, params: list) -> dict[str, np.ndarray]:
    try:
        return store.con.execute(sql, params).fetchnumpy()
    except duckdb.Error as error:
        raise translate(error, store.path) from error
