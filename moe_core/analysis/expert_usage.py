"""One expert's use (the expert browser, docs/methods.md "One expert"): how its rank compares with
the other experts of its layer, the layers around it, the experts chosen with it in the same
token's top-k, and the tokens sent to it most.
"""

from __future__ import annotations

import numpy as np


def layer_window(layers: np.ndarray, layer: int, width: int = 2) -> np.ndarray:
    """The positions in `layers` [Y] (ascending decoder-layer indices) of the layers within `width`
    of `layer`, i.e. in [layer - width, layer + width] -> [Y'] int64, ascending."""
    layers = np.asarray(layers)
    return np.flatnonzero((layers >= layer - width) & (layers <= layer + width))


def usage_rank(freq: np.ndarray, expert: int) -> np.ndarray:
    """Where `expert` stands among the experts of each row, by use: 1 = used most (experts used
    exactly as often share the better rank).

    freq: [..., E] activation frequencies (or hits) -> [...] int64.
    """
    freq = np.asarray(freq)
    return 1 + (freq > freq[..., expert : expert + 1]).sum(axis=-1)


def holds(experts: np.ndarray, expert: int) -> np.ndarray:
    """Which tokens' top-k holds `expert`. experts: [n, k] expert ids -> bool [n]."""
    return np.asarray((np.asarray(experts) == expert).any(axis=-1))


def coselection(experts: np.ndarray, expert: int, n_experts: int) -> np.ndarray:
    """How often each expert is in the same token's top-k as `expert`.

    experts: [n, k] top-k expert ids of n tokens in one layer (distinct within a row) -> [E] int64:
    entry e counts the tokens whose top-k holds both `expert` and e; entry `expert` counts the
    tokens whose top-k holds it at all.
    """
    chosen = np.asarray(experts)[holds(experts, expert)]
    return np.bincount(chosen.reshape(-1).astype(np.int64), minlength=n_experts)


def weight_on(experts: np.ndarray, weights: np.ndarray, expert: int) -> np.ndarray:
    """Each token's routing weight on `expert` (0 where its top-k lacks it).

    experts, weights: [n, k] -> [n] float64.
    """
    return np.where(np.asarray(experts) == expert, np.asarray(weights, dtype=np.float64), 0.0).sum(axis=-1)


def token_tally(token_ids: np.ndarray, routed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct token: how often it was routed to the expert, and how often it was seen.

    token_ids: [n] vocabulary ids; routed: bool [n] (the token's top-k holds the expert).
    Returns (ids [U], routed counts [U], seen counts [U]) over the tokens routed at least once,
    most routed first, then the larger share routed, then the lower id.
    """
    token_ids = np.asarray(token_ids, dtype=np.int64)
    ids, inverse, seen = np.unique(token_ids, return_inverse=True, return_counts=True)
    hits = np.bincount(inverse, weights=np.asarray(routed, dtype=np.float64), minlength=len(ids)).astype(np.int64)
    keep = hits > 0
    ids, hits, seen = ids[keep], hits[keep], seen[keep]
    order = np.lexsort((ids, -(hits / seen), -hits))
    return ids[order], hits[order], seen[order]
