"""Reads for the expert browser: a bounded sample of the tokens of one MoE layer, from the sequences
that send the most tokens to one expert there.

The sequences are chosen from the routing summaries (`sequence_routing.hits` of that layer, up to
`per_lang` per language), then only their rows of that layer are read from `route_lists` and their
tokens from `tokens`: a few hundred sequences, whatever the size of the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np

from store.connection import Store, translate
from store.errors import StoreError


@dataclass(frozen=True, kw_only=True)
class ExpertSample:
    """The tokens of the sampled sequences in one layer.

    Sequences [S], ascending seq_id: seq_ids, seq_langs, seq_hits (tokens sent to the expert);
    candidates: per language, its sequences that send any token to the expert (sampled or not).
    Tokens [n], one sequence after another in position order: token_seq (index into seq_ids), pos,
    token_ids, pieces, special; experts [n, k] the layer's top-k ids; weights [n, k] or None (id-only).
    """

    seq_ids: np.ndarray
    seq_langs: list[str]
    seq_hits: np.ndarray
    candidates: dict[str, int]
    token_seq: np.ndarray
    pos: np.ndarray
    token_ids: np.ndarray
    pieces: list[str]
    special: np.ndarray
    experts: np.ndarray
    weights: np.ndarray | None


# Per language, its `per_lang` sequences with the most hits of the expert in the layer (ties: lower
# seq_id), and how many of its sequences have any. Reads one element of each hits list of the layer.
_TOP_SEQUENCES = """
SELECT s.lang, r.seq_id, r.hits[? + 1] AS n, count(*) OVER (PARTITION BY s.lang) AS candidates
FROM sequence_routing AS r JOIN sequences AS s USING (run_id, seq_id)
WHERE r.run_id = ? AND r.layer = ? AND r.hits[? + 1] > 0 AND list_contains(?, s.lang)
QUALIFY row_number() OVER (PARTITION BY s.lang ORDER BY n DESC, r.seq_id) <= ?
ORDER BY r.seq_id
"""
# `list_contains` (not `IN`): DuckDB answers it from the layer's rows without planning a join.
_ROUTES = """
SELECT r.seq_id, r.experts, r.weight_codes, u.weight_unit
FROM route_lists AS r JOIN runs AS u USING (run_id)
WHERE r.run_id = ? AND r.layer = ? AND list_contains(?, r.seq_id)
ORDER BY r.seq_id
"""
# `IN` here: `list_contains` would test each of the run's tokens against the whole list (0.15 s
# against 0.01 s for 400 sequences of a 1.3M-token run).
_TOKENS = """
SELECT seq_id, pos, token_id, piece, special FROM tokens
WHERE run_id = ? AND seq_id IN (SELECT unnest(?)) AND NOT generated
ORDER BY seq_id, pos
"""


def expert_sample(
    store: Store, run_id: int, layer: int, expert: int, *, per_lang: int, langs: Sequence[str], top_k: int
) -> ExpertSample:
    """Up to `per_lang` sequences of each of `langs` with the most tokens sent to `expert` in
    decoder layer `layer`, and those sequences' tokens and top-k experts in that layer."""
    chosen = _numpy(store, _TOP_SEQUENCES, [expert, run_id, layer, expert, list(langs), per_lang])
    seq_ids = np.asarray(chosen["seq_id"], dtype=np.int64)
    candidates = dict(zip(map(str, chosen["lang"]), map(int, chosen["candidates"]), strict=True))
    routes = _numpy(store, _ROUTES, [run_id, layer, seq_ids.tolist()])
    tokens = _numpy(store, _TOKENS, [run_id, seq_ids.tolist()])
    token_seq = np.searchsorted(seq_ids, np.asarray(tokens["seq_id"], dtype=np.int64))
    lengths = np.bincount(token_seq, minlength=len(seq_ids))
    found = [np.asarray(row, dtype=np.int64) for row in routes["experts"]]
    if not np.array_equal(np.asarray(routes["seq_id"], dtype=np.int64), seq_ids) or any(
        len(row) != n * top_k for row, n in zip(found, lengths, strict=True)
    ):
        raise StoreError(
            f"run {run_id} has sequences whose tokens and layer-{layer} routes disagree: the store is damaged"
        )
    experts = np.concatenate(found).reshape(-1, top_k) if found else np.zeros((0, top_k), np.int64)
    codes = routes["weight_codes"]
    weights = None
    if len(codes) and all(row is not None and not np.ma.is_masked(row) for row in codes):
        unit = float(routes["weight_unit"][0])
        weights = (np.concatenate([np.asarray(row, np.float64) for row in codes]) * unit).reshape(-1, top_k)
    return ExpertSample(
        seq_ids=seq_ids,
        seq_langs=[str(lang) for lang in chosen["lang"]],
        seq_hits=np.asarray(chosen["n"], dtype=np.int64),
        candidates=candidates,
        token_seq=token_seq,
        pos=np.asarray(tokens["pos"], dtype=np.int64),
        token_ids=np.asarray(tokens["token_id"], dtype=np.int64),
        pieces=[str(piece) for piece in tokens["piece"]],
        special=np.asarray(tokens["special"], dtype=bool),
        experts=experts,
        weights=None if weights is None else weights.astype(np.float32),
    )


def _numpy(store: Store, sql: str, params: list) -> dict[str, np.ndarray]:
    try:
        return store.con.execute(sql, params).fetchnumpy()
    except duckdb.Error as error:
        raise translate(error, store.path) from error
