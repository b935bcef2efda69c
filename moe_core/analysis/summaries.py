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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from moe_core.analysis.divergence import MIN_DENOMINATOR
from moe_core.analysis.routing import within_sequence_consistency

SOURCES = ("soft", "weight", "hard")
CONSISTENCY_PAIRS = 128  # the summaries keep consistency at analyze_consistency's default pairs and seed
CONSISTENCY_SEED = 0
PAIR_CHUNK = 8  # sequence pairs mixed at once: two [8, Y, E] float32 buffers stay in the CPU's cache
TINY = np.finfo(np.float32).tiny
Rows = np.ndarray | Sequence[np.ndarray]  # distributions: one [S, Y, E] array, or S [Y, E] arrays
ROW_BLOCK = 1024  # rows per step where a buffer is reused: 512 KB of float32 at 128 experts
GROUP_ROWS = 32  # sequences per step of group_sums: 1.5 MB of float64 at 48 layers of 128 experts


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
    # Divided in float32: integers below 2**24 are exact there, and a float32 quotient equals the
    # float64 one rounded to float32 (double rounding is harmless for division from 53 to 24 bits),
    # without a float64 array as large as `hits`: the writer divides ~70 MB of them per commit.
    return np.divide(hits, per_slot, dtype=np.float32)


def group_sums(values: np.ndarray, group: np.ndarray, n_groups: int, divisor: np.ndarray | None = None) -> np.ndarray:
    """The sum of values[s] (divided by divisor[s] where given) over the rows s of each group, in
    float64. values: [S, ...]; group: [S] in [0, n_groups); divisor: [S] or None -> [n_groups, ...].

    Rows go in group order through one float64 buffer of GROUP_ROWS rows: the writer sums ~70 MB
    arrays per commit, in which languages come mixed (sequences are traced by length). A float64
    copy of each cost more in page faults than the sums, and a one-hot product did the work once
    per language (the language sums: 19 -> 9 ms per million decisions at 500M, upserts included)."""
    flat = values.reshape(len(values), -1)
    order = np.argsort(group, kind="stable")
    groups = group[order]
    out = np.zeros((n_groups, flat.shape[1]))
    gathered = np.empty((min(GROUP_ROWS, len(flat)), flat.shape[1]), dtype=flat.dtype)
    rows = np.empty(gathered.shape)
    for start in range(0, len(flat), GROUP_ROWS):
        members = order[start : start + GROUP_ROWS]
        n = len(members)
        np.take(flat, members, axis=0, out=gathered[:n])
        np.copyto(rows[:n], gathered[:n])
        if divisor is not None:
            np.divide(rows[:n], divisor[members, None], out=rows[:n])
        owners = groups[start : start + n]
        runs = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        out[owners[runs]] += np.add.reduceat(rows[:n], runs, axis=0)
    return out.reshape(n_groups, *values.shape[1:])


def sequence_entropy(dist: np.ndarray) -> np.ndarray:
    """H of each row in nats, the way `mixture_entropy` computes a mixture's (so identical rows give
    exactly JS 0). dist: [..., E] -> [...] float64."""
    rows = np.ascontiguousarray(dist, dtype=np.float32).reshape(-1, dist.shape[-1])
    out = np.empty(len(rows))
    terms = np.empty((min(ROW_BLOCK, len(rows)), rows.shape[1]), dtype=np.float32)
    for start in range(0, len(rows), ROW_BLOCK):
        block = rows[start : start + ROW_BLOCK]
        out[start : start + len(block)] = _entropies(block, terms[: len(block)])
    return out.reshape(dist.shape[:-1])


def _entropies(rows: np.ndarray, terms: np.ndarray) -> np.ndarray:
    """-sum(p log p) over the last axis of float32 `rows`, elementwise in float32 in `terms` (a
    buffer of the same shape) and summed in float64. TINY keeps 0 log 0 = 0 and leaves every other
    term as it is: it is below half a float32 step of any value above 1e-31 (and an addition costs
    a seventh of np.maximum)."""
    np.add(rows, TINY, out=terms)
    np.log(terms, out=terms)
    np.multiply(rows, terms, out=terms)
    return -terms.sum(axis=-1, dtype=np.float64)


def mixture_entropy(dist: Rows, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """H(m) of each pair's mixture m = (dist[first[i]] + dist[second[i]]) / 2, in nats, the way
    `sequence_entropy` computes a row's (so a sequence paired with an identical one gives exactly
    its own entropy). dist: [S, Y, E] float32, or S such [Y, E] rows; first, second: [n] -> [n, Y]
    float64.

    The pairs go through two buffers of PAIR_CHUNK pairs, reused and written in place: the writer
    mixes each new sequence with all its item's other languages, and fresh arrays for each step
    made that 2-4x slower in page faults (measured with a few thousand sequences). Rows are
    gathered straight into them: the writer's stored partners are hundreds of MB, and copying them
    into one array first took a third as long as the mixing."""
    shape = dist[0].shape
    out = np.empty((len(first), shape[0]))
    mixed = np.empty((PAIR_CHUNK, *shape), dtype=np.float32)
    terms = np.empty_like(mixed)
    for start in range(0, len(first), PAIR_CHUNK):
        a, b = first[start : start + PAIR_CHUNK], second[start : start + PAIR_CHUNK]
        m, t = mixed[: len(a)], terms[: len(a)]
        np.stack([dist[i] for i in a.tolist()], out=m)
        np.stack([dist[i] for i in b.tolist()], out=t)
        np.add(m, t, out=m)
        np.multiply(m, np.float32(0.5), out=m)
        out[start : start + len(a)] = _entropies(m, t)
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
    dist: Rows, lang: np.ndarray, first: np.ndarray, second: np.ndarray, entropies: np.ndarray | None = None
) -> PairSums:
    """Sum D and JS over the sequence pairs (first[i], second[i]) of `dist` ([S, Y, E], or S float32
    [Y, E] rows), grouped by their languages (`lang` [S] language index; a pair's languages differ).
    `entropies` [S, Y]: `sequence_entropy(dist)`, when the caller has it.

    The same formulas as `divergence.normalised_js`, computed as JS = H(m) - (H(p) + H(q)) / 2
    with m = (p + q) / 2: one log per value, the entropies of p and q being computed once per
    sequence instead of once per pair. float32 logs (the stored distributions are float32),
    float64 sums."""
    entropies = sequence_entropy(np.asarray(dist)) if entropies is None else entropies
    n_layers, n_experts = dist[0].shape
    mean_entropy = (entropies[first] + entropies[second]) / 2
    js = np.maximum(mixture_entropy(dist, first, second) - mean_entropy, 0)
    normalised = js / np.maximum(np.log(n_experts) - mean_entropy, MIN_DENOMINATOR)
    a, b = np.minimum(lang[first], lang[second]), np.maximum(lang[first], lang[second])
    keys, group = np.unique(np.stack([a, b], axis=1), axis=0, return_inverse=True)
    group = group.reshape(-1)
    js_sums = np.zeros((len(keys), n_layers))
    d_sums = np.zeros((len(keys), n_layers))
    np.add.at(js_sums, group, js)
    np.add.at(d_sums, group, normalised)
    return PairSums(pairs=keys.reshape(-1, 2), n=np.bincount(group, minlength=len(keys)), js=js_sums, normalised=d_sums)
