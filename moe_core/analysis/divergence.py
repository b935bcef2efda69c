"""Entropy and Jensen-Shannon divergence of routing distributions, and per-layer divergence curves
from a reference language over aligned pairs (METHODS.md, "Divergence from a reference language").
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


def divergence_curves(probs: np.ndarray, ref_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer mean divergence of every language from the reference, over the items both have.

    probs: [L, I, Y, E] per-sequence routing distributions (NaN where a language lacks an item).
    Returns (normalised D, raw JS), each [L, Y]: the mean over aligned items i of
    D(q_i^ref, q_i^L) and of JS; NaN for a language that shares no item with the reference.
    Computed pair by pair, never on averaged distributions.
    """
    # float64 throughout: JS is a difference of entropies, and identical rows must give exactly 0.
    reference = probs[ref_index].astype(np.float64)
    ref_present = ~np.isnan(reference[:, 0, 0])
    ref_entropy = entropy(np.nan_to_num(reference))
    n_experts = probs.shape[-1]
    shape = probs.shape[:1] + probs.shape[2:3]
    normalised, raw = np.full(shape, np.nan), np.full(shape, np.nan)
    for lang in range(probs.shape[0]):  # one language at a time keeps memory at [I, Y, E]
        both = ref_present & ~np.isnan(probs[lang, :, 0, 0])
        if not both.any():
            continue
        p, q = reference[both], probs[lang, both].astype(np.float64)
        mean_entropy = (ref_entropy[both] + entropy(q)) / 2
        # JS = H(m) - (H(p) + H(q)) / 2: the same value as the two KL terms, with a third of the logs.
        js = np.maximum(entropy((p + q) / 2) - mean_entropy, 0)
        raw[lang] = js.mean(axis=0)
        normalised[lang] = (js / np.maximum(np.log(n_experts) - mean_entropy, MIN_DENOMINATOR)).mean(axis=0)
    return normalised, raw
