"""Entropy and Jensen-Shannon divergence of routing distributions, and per-layer divergence curves
from a reference language over aligned pairs (docs/methods.md, "Divergence from a reference language").
"""

from __future__ import annotations

import numpy as np

MIN_MIXTURE = 1e-10  # m = (p + q) / 2 is clamped here so log(p / m) stays finite
MIN_DENOMINATOR = 1e-6  # log E - mean entropy is clamped here (two nearly uniform distributions)


def entropy(p: np.ndarray) -> np.ndarray:
    """H(p) = -sum p log p in nats, with 0 log 0 = 0. p: [..., E] -> [...].

    Computed in p's float precision (float32 stays float32: stored distributions are float32 and
    this halves the memory traffic), summed in float64.
    """
    p = np.asarray(p)
    if p.dtype not in (np.float32, np.float64):
        p = p.astype(np.float64)
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    return -(p * logs).sum(axis=-1, dtype=np.float64)


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """JS(p, q) = KL(p || m) / 2 + KL(q || m) / 2, m = (p + q) / 2, in nats. p, q: [..., E] -> [...]."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = np.maximum((p + q) / 2, MIN_MIXTURE)
    return (_kl_terms(p, m) + _kl_terms(q, m)) / 2


def _kl_terms(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    return (p * np.log(np.where(p > 0, p, 1.0) / m)).sum(axis=-1)


def normalised_js(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """D(p, q) = JS(p, q) / (log E - (H(p) + H(q)) / 2), the denominator clamped at 1e-6.

    Dividing by the entropy gap keeps peaked and flat routers comparable. p, q: [..., E] -> [...].
    """
    n_experts = np.shape(p)[-1]
    gap = np.log(n_experts) - (entropy(p) + entropy(q)) / 2
    return js_divergence(p, q) / np.maximum(gap, MIN_DENOMINATOR)


def divergence_curves(
    n_items: np.ndarray, js_sums: np.ndarray, d_sums: np.ndarray, ref_index: int, ref_items: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-layer mean divergence of every language from the reference over the items both have,
    from per-pair sums (`moe_core.analysis.summaries.pair_sums`: computed pair by pair, never on
    averaged distributions).

    n_items: [L, L] aligned items of each language pair; js_sums, d_sums: [L, L, Y] sums of JS and of
    the normalised D over those items; ref_items: the reference's own items. Returns (normalised D
    [L, Y], raw JS [L, Y], pairs [L]): the means of D(q_i^ref, q_i^L) and JS over aligned items i,
    NaN for a language that shares no item with the reference; the reference itself gets 0.
    """
    pairs = n_items[ref_index].astype(np.int64)
    pairs[ref_index] = ref_items
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.where(pairs[:, None] > 0, d_sums[ref_index] / pairs[:, None], np.nan)
        raw = np.where(pairs[:, None] > 0, js_sums[ref_index] / pairs[:, None], np.nan)
    normalised[ref_index] = np.where(ref_items > 0, 0.0, np.nan)
    raw[ref_index] = normalised[ref_index]
    return normalised, raw, pairs
