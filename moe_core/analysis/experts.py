"""Which experts serve what (docs/methods.md, "Expert identification"): Delta-tau specialised experts
(Bandarkar et al.), shared and exclusive experts over a language pool (2601.14050), and how much
of each language's routing lands on them.
"""

from __future__ import annotations

import numpy as np

SHARE_EPSILON = 1e-10


def delta(target: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Delta[e] = mean_i f_i[e] on target data - the same on reference data, in [-1, 1].

    target, reference: [..., Y, E] mean per-sequence activation frequencies -> [..., Y, E].
    """
    return np.asarray(target, dtype=np.float64) - np.asarray(reference, dtype=np.float64)


def specialised(target: np.ndarray, reference: np.ndarray, tau: float) -> np.ndarray:
    """Experts with Delta > tau: task experts (target = task text) or language experts
    (target = a language's parallel text, reference = English). [..., Y, E] -> bool [..., Y, E]."""
    return delta(target, reference) > tau


def top_k_per_layer(freq: np.ndarray, k: int) -> np.ndarray:
    """Keep each language's k most frequent experts per layer and zero the rest (ties: lower id).

    freq: [L, Y, E] -> [L, Y, E]. An expert with frequency 0 stays 0 even inside the top k.
    """
    order = np.argsort(-freq, axis=-1, kind="stable")[..., :k]
    kept = np.zeros_like(freq, dtype=np.float64)
    np.put_along_axis(kept, order, np.take_along_axis(freq, order, axis=-1), axis=-1)
    return kept


def expert_shares(freq: np.ndarray, k: int) -> np.ndarray:
    """s_L[e] = f~_L[e] / (sum over the pool of f~_L'[e] + 1e-10), f~ = the top-k-kept frequencies.

    freq: [L, Y, E] over the language pool -> [L, Y, E]; each expert's shares sum to 1 (or 0 if
    no language keeps it).
    """
    kept = top_k_per_layer(freq, k)
    return kept / (kept.sum(axis=0, keepdims=True) + SHARE_EPSILON)


def exclusive_to(shares: np.ndarray, group: np.ndarray, thr: float) -> np.ndarray:
    """Experts exclusive to the languages in `group`: sum over the group of s_L > thr.

    shares: [L, Y, E]; group: [L] bool -> bool [Y, E].
    """
    return shares[np.asarray(group, dtype=bool)].sum(axis=0) > thr


def exclusive_per_language(shares: np.ndarray, thr: float) -> np.ndarray:
    """Each language's own exclusive experts (the group of one): s_L > thr. [L, Y, E] -> bool [L, Y, E]."""
    return shares > thr


def shared(shares: np.ndarray, thr: float) -> np.ndarray:
    """Experts shared by the pool: some s_L > 0 and every s_L < thr. [L, Y, E] -> bool [Y, E].

    With two languages this is empty unless thr > 0.5.
    """
    return np.asarray((shares > 0).any(axis=0) & (shares < thr).all(axis=0))


def reliance(freq: np.ndarray, experts: np.ndarray) -> np.ndarray:
    """The fraction of each language's top-k hits that land on the given experts, per layer.

    freq: [L, Y, E] activation frequencies; experts: bool [Y, E] (one set for all) or [L, Y, E]
    (each language's own set). Returns [L, Y]; NaN for a layer the language never reaches.
    """
    mask = np.broadcast_to(np.asarray(experts, dtype=bool), freq.shape)
    total = freq.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (freq * mask).sum(axis=-1) / total, np.nan)
