"""Routing summaries: what a store keeps per sequence, language and language pair so that the
analyses read aggregates instead of every routing decision (docs/methods.md, "Routing summaries").

The writer builds them from each traced batch and the upgrade from stored routes, with these
functions, so both give the same numbers. Three per-sequence distributions over the E experts of a
layer (each sums to 1):

- `soft`: the mean router probability over the sequence's tokens (`router_probs`);
- `weight`: per token, the applied top-k weights normalised to sum 1, averaged over the sequence;
- `hard`: activation frequencies / k (the share of the sequence's top-k slots each expert won).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moe_core.analysis.divergence import MIN_DENOMINATOR
from moe_core.analysis.routing import within_sequence_consistency

SOURCES = ("soft", "weight", "hard")
CONSISTENCY_PAIRS = 128  # the summaries keep consistency at analyze_consistency's default pairs and seed
CONSISTENCY_SEED = 0
PAIR_CHUNK = 8  # sequence pairs mixed at once: two [8, Y, E] float32 buffers stay in the CPU's cache
TINY = np.finfo(np.float32).tiny


@dataclass(frozen=True, kw_only=True)
class SequenceSummary:
    """Per sequence and MoE layer of S sequences, Y layers, E experts.

    hits:        [S, Y, E] int64   tokens whose top-k holds the expert
    weight:      [S, Y, E] float32 the `weight` distribution, or None (an id-only backend)
    consistency: [S, Y] float64    within-sequence consistency at the default pairs (NaN: < 2 tokens)
    """

    hits: np.ndarray
    weight: np.ndarray | None
    consistency: np.ndarray


def summarise_sequences(
    experts: np.ndarray, weights: np.ndarray | None, lengths: np.ndarray, n_experts: int, keys: np.ndarray
) -> SequenceSummary:
    """experts: [N, Y, k] top-k ids, sequence after sequence; weights: [N, Y, k] applied weights or
    None; lengths: [S] tokens per sequence; keys: [S] stable sequence ids (the consistency sampling)."""
    n_seqs, n_layers = len(lengths), experts.shape[1]
    seq_of_token = np.repeat(np.arange(n_seqs), lengths)
    # One flat bin per (sequence, layer, expert): a single bincount instead of a loop.
    bins = (seq_of_token[:, None, None] * n_layers + np.arange(n_layers)[None, :, None]) * n_experts + experts
    size = n_seqs * n_layers * n_experts
    hits = np.bincount(bins.reshape(-1), minlength=size).reshape(n_seqs, n_layers, n_experts)
    weight = None
    if weights is not None:
        totals = weights.sum(axis=-1, keepdims=True, dtype=np.float64)
        shares = weights / np.where(totals > 0, totals, 1)
        sums = np.bincount(bins.reshape(-1), weights=shares.reshape(-1), minlength=size)
        per_token = np.maximum(np.asarray(lengths), 1)[:, None, None]
        weight = (sums.reshape(n_seqs, n_layers, n_experts) / per_token).astype(np.float32)
    consistency = within_sequence_consistency(
        experts, lengths, n_experts, max_pairs=CONSISTENCY_PAIRS, seed=CONSISTENCY_SEED, keys=keys
    )
    return SequenceSummary(hits=hits, weight=weight, consistency=consistency)


def hard_distribution(hits: np.ndarray, lengths: np.ndarray, top_k: int) -> np.ndarray:
    """hits: [S, Y, E]; lengths: [S] -> [S, Y, E] float32 activation frequencies / k."""
    per_slot = np.maximum(np.asarray(lengths), 1)[:, None, None] * top_k
    return (hits / per_slot).astype(np.float32)


def sequence_entropy(dist: np.ndarray) -> np.ndarray:
    """H of each row in nats, elementwise in float32 and summed in float64, the way `pair_sums`
    computes the mixture's (so identical rows give exactly JS 0). dist: [..., E] -> [...]."""
    dist = dist.astype(np.float32, copy=False)
    terms = dist * np.log(np.maximum(dist, TINY))  # 0 log 0 = 0
    return -terms.sum(axis=-1, dtype=np.float64)


def mixture_entropy(dist: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """H(m) of each pair's mixture m = (dist[first[i]] + dist[second[i]]) / 2, in nats, the way
    `sequence_entropy` computes a row's (so a sequence paired with an identical one gives exactly
    its own entropy). dist: [S, Y, E] float32; first, second: [n] -> [n, Y] float64.

    The pairs go through two buffers of PAIR_CHUNK pairs, reused and written in place: the writer
    mixes each new sequence with all its item's other languages, and fresh arrays for each step
    made that 2-4x slower in page faults (measured with a few thousand sequences)."""
    out = np.empty((len(first), dist.shape[1]))
    mixed = np.empty((PAIR_CHUNK, *dist.shape[1:]), dtype=np.float32)
    terms = np.empty_like(mixed)
    for start in range(0, len(first), PAIR_CHUNK):
        a, b = first[start : start + PAIR_CHUNK], second[start : start + PAIR_CHUNK]
        m, t = mixed[: len(a)], terms[: len(a)]
        np.take(dist, a, axis=0, out=m)
        np.take(dist, b, axis=0, out=t)
        np.add(m, t, out=m)
        np.multiply(m, np.float32(0.5), out=m)
        np.maximum(m, TINY, out=t)  # 0 log 0 = 0
        np.log(t, out=t)
        np.multiply(m, t, out=t)
        out[start : start + len(a)] = -t.sum(axis=-1, dtype=np.float64)
    return out


@dataclass(frozen=True, kw_only=True)
class PairSums:
    """Divergence summed over the sequence pairs of each unordered language pair and layer.

    pairs: [P, 2] language indices, first < second; n: [P] sequence pairs (aligned items);
    js, normalised: [P, Y] sums of JS and of D over those pairs.
    """

    pairs: np.ndarray
    n: np.ndarray
    js: np.ndarray
    normalised: np.ndarray


def pair_sums(
    dist: np.ndarray, lang: np.ndarray, first: np.ndarray, second: np.ndarray, entropies: np.ndarray | None = None
) -> PairSums:
    """Sum D and JS over the sequence pairs (first[i], second[i]) of `dist` [S, Y, E], grouped by
    their languages (`lang` [S] language index; a pair's languages differ). `entropies` [S, Y]:
    `sequence_entropy(dist)`, when the caller has it.

    The same formulas as `divergence.normalised_js`, computed as JS = H(m) - (H(p) + H(q)) / 2
    with m = (p + q) / 2: one log per value, the entropies of p and q being computed once per
    sequence instead of once per pair. float32 logs (the stored distributions are float32),
    float64 sums."""
    dist = np.ascontiguousarray(dist, dtype=np.float32)
    entropies = sequence_entropy(dist) if entropies is None else entropies
    mean_entropy = (entropies[first] + entropies[second]) / 2
    js = np.maximum(mixture_entropy(dist, first, second) - mean_entropy, 0)
    normalised = js / np.maximum(np.log(dist.shape[-1]) - mean_entropy, MIN_DENOMINATOR)
    a, b = np.minimum(lang[first], lang[second]), np.maximum(lang[first], lang[second])
    keys, group = np.unique(np.stack([a, b], axis=1), axis=0, return_inverse=True)
    group = group.reshape(-1)
    js_sums = np.zeros((len(keys), dist.shape[1]))
    d_sums = np.zeros((len(keys), dist.shape[1]))
    np.add.at(js_sums, group, js)
    np.add.at(d_sums, group, normalised)
    return PairSums(pairs=keys.reshape(-1, 2), n=np.bincount(group, minlength=len(keys)), js=js_sums, normalised=d_sums)
