"""Activation frequencies, routing entropy and within-sequence consistency (docs/methods.md, "Routing
distributions" and "Entropy and consistency").
"""

from __future__ import annotations

import numpy as np

from moe_core.analysis.divergence import entropy

WORD_BITS = 64
PAIR_CHUNK = 1 << 15
MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15  # spreads consecutive sequence keys over the hash's input


def activation_frequencies(counts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """f[e] = tokens whose top-k contains e / tokens; sums to k over e.

    counts: [G, Y, E] top-k hits of each group (language or sequence); tokens: [G].
    Returns [G, Y, E] float64; a group without tokens gets zeros.
    """
    tokens = np.asarray(tokens, dtype=np.float64)
    return np.asarray(counts, dtype=np.float64) / np.maximum(tokens, 1)[:, None, None]


def token_entropy(scores: np.ndarray, *, sigmoid: bool = False) -> np.ndarray:
    """H of each token's soft distribution from router logits: softmax, or sigmoid scores normalised
    to sum 1 (DeepSeek-V3 style routers). scores: [..., E] -> [...] nats."""
    scores = np.asarray(scores, dtype=np.float64)
    if sigmoid:
        weights = 1 / (1 + np.exp(-scores))
        return entropy(weights / weights.sum(axis=-1, keepdims=True))
    shifted = scores - scores.max(axis=-1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    log_p = shifted - log_norm
    return -(np.exp(log_p) * log_p).sum(axis=-1)


def topk_bitmasks(experts: np.ndarray, n_experts: int) -> np.ndarray:
    """Each token's top-k set as bits. experts: [N, Y, k] -> [W, N, Y] uint64, W = ceil(E / 64).

    Word-major, so gathering the masks of a set of tokens reads contiguous rows.
    """
    words = -(-n_experts // WORD_BITS)
    ids = np.arange(words * WORD_BITS)
    # bit_of[w, e]: expert e's bit in word w (0 in the other words).
    bit_of = np.where(ids // WORD_BITS == np.arange(words)[:, None], np.left_shift(1, ids % WORD_BITS), 0)
    bit_of = bit_of.astype(np.uint64)
    masks = np.empty((words, *experts.shape[:2]), dtype=np.uint64)
    bits = np.empty(experts.shape[:2], dtype=np.uint64)  # reused: fresh large arrays cost page faults
    for word in range(words):
        np.take(bit_of[word], experts[..., 0], out=masks[word])
        for rank in range(1, experts.shape[-1]):  # k gathers of [N, Y] beat one over [N, Y, k] here
            # The experts of one token are distinct, so OR-ing their bits is their union.
            np.take(bit_of[word], experts[..., rank], out=bits)
            masks[word] |= bits
    return masks


def token_pairs(
    lengths: np.ndarray, max_pairs: int, seed: int, keys: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token pairs within each sequence: all pairs of a sequence with at most `max_pairs` of them,
    else `max_pairs` pairs of distinct tokens drawn (with replacement) from a hash of the seed, the
    sequence's key and the pair's number, so a sequence gets the same pairs however it is batched.

    lengths: [S]; keys: [S] a stable id of each sequence (default 0..S-1). Returns (sequence [P],
    first token row [P], second token row [P]); token rows index the concatenated tokens.
    """
    keys = np.arange(len(lengths)) if keys is None else np.asarray(keys)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    seed_hash = _mix(np.array([seed & MASK64], dtype=np.uint64))
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for length in np.unique(lengths):
        seqs = np.flatnonzero(lengths == length)
        if length < 2:
            continue
        if length * (length - 1) // 2 <= max_pairs:
            first, second = np.triu_indices(length, k=1)
            first = np.tile(first, len(seqs))
            second = np.tile(second, len(seqs))
            owner = np.repeat(seqs, length * (length - 1) // 2)
        else:
            owner = np.repeat(seqs, max_pairs)
            counter = np.tile(np.arange(max_pairs, dtype=np.uint64), len(seqs))
            draw = _mix(seed_hash ^ (keys[owner].astype(np.uint64) * np.uint64(GOLDEN) + counter))
            first = (draw % np.uint64(length)).astype(np.int64)
            second = (first + 1 + (_mix(draw) % np.uint64(length - 1)).astype(np.int64)) % length
        parts.append((owner, offsets[owner] + first, offsets[owner] + second))
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    owner, first, second = (np.concatenate(column) for column in zip(*parts, strict=True))
    return owner, first, second


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: uint64 -> well-mixed uint64 (wrapping arithmetic is intended)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def within_sequence_consistency(
    experts: np.ndarray,
    lengths: np.ndarray,
    n_experts: int,
    *,
    max_pairs: int = 128,
    seed: int = 0,
    keys: np.ndarray | None = None,
) -> np.ndarray:
    """Mean Jaccard |S_t & S_u| / |S_t | S_u| of the top-k sets of token pairs within each sequence.

    experts: [N, Y, k] distinct ids per token, sequence after sequence; lengths: [S]; keys: [S]
    stable sequence ids for the sampling. Returns [S, Y]; NaN for a sequence of fewer than two
    tokens. Pairs as `token_pairs` draws them.
    """
    top_k = experts.shape[-1]
    masks = topk_bitmasks(experts, n_experts)
    owner, first, second = token_pairs(np.asarray(lengths), max_pairs, seed, keys)
    order = np.argsort(owner, kind="stable")  # pairs of one sequence together, for reduceat
    owner, first, second = owner[order], first[order], second[order]
    # Two sets of k distinct experts sharing j: Jaccard j / (2k - j); a lookup beats a division.
    jaccard_of = np.arange(top_k + 1) / (2 * top_k - np.arange(top_k + 1))
    totals = np.zeros((len(lengths), experts.shape[1]))
    # Buffers reused across chunks: on small VMs fresh large arrays cost more in page faults than the work.
    a, b = (np.empty((PAIR_CHUNK, experts.shape[1]), dtype=np.uint64) for _ in range(2))
    counts, shared = (np.empty((PAIR_CHUNK, experts.shape[1]), dtype=np.uint8) for _ in range(2))
    for start in range(0, owner.size, PAIR_CHUNK):
        owners = owner[start : start + PAIR_CHUNK]
        n = len(owners)
        shared[:n] = 0
        for word_masks in masks:
            np.take(word_masks, first[start : start + n], axis=0, out=a[:n])
            np.take(word_masks, second[start : start + n], axis=0, out=b[:n])
            np.bitwise_and(a[:n], b[:n], out=a[:n])
            shared[:n] += np.bitwise_count(a[:n], out=counts[:n])
        segments = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        totals[owners[segments]] += np.add.reduceat(jaccard_of[shared[:n]], segments, axis=0)
    pairs = np.bincount(owner, minlength=len(lengths)).astype(np.float64)
    with np.errstate(invalid="ignore"):
        return totals / pairs[:, None]
