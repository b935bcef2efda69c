"""Expert flow: how the tokens of a sequence move from the experts of one MoE layer to the experts of
the next (the Token paths page draws it as a Sankey-like picture).

Each token carries a unit of mass through every pair of consecutive MoE layers. At each layer the
mass is split over its top-k experts in proportion to their routing weights (renormalised to sum 1,
or 1/k each when only the expert ids are known), and the mass that goes from expert e at layer y
to expert e' at layer y+1 is the product of the two shares, so a token's flow per layer pair sums
to 1 and the flow of a sequence sums to its number of tokens.
"""

from __future__ import annotations

import numpy as np


def routing_shares(expert_ids: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """Each token's share of its mass per top-k expert at each layer.

    expert_ids: [T, Y, k]; weights: [T, Y, k] or None (id-only). Returns [T, Y, k] float64 summing
    to 1 over k; uniform 1/k without weights, or where a token's weights sum to 0.
    """
    shape = np.shape(expert_ids)
    uniform = np.full(shape, 1 / shape[-1]) if shape[-1] else np.zeros(shape)
    if weights is None:
        return uniform
    weights = np.asarray(weights, dtype=np.float64)
    totals = weights.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, weights / totals, uniform)


def expert_flow(expert_ids: np.ndarray, weights: np.ndarray | None, n_experts: int) -> np.ndarray:
    """The mass that flows from expert e at MoE layer y to expert e' at layer y+1, over all tokens.

    expert_ids: [T, Y, k] top-k expert ids; weights: [T, Y, k] routing weights or None (id-only).
    Returns [Y-1, E, E] float64: flow[y, e, e'] = sum over tokens of share(e at y) * share(e' at
    y+1) (`routing_shares`); each [E, E] slice sums to T. One MoE layer gives [0, E, E].
    """
    expert_ids = np.asarray(expert_ids, dtype=np.int64)
    if expert_ids.size and not 0 <= expert_ids.min() <= expert_ids.max() < n_experts:
        raise ValueError(f"expert ids must lie in 0..{n_experts - 1}")
    steps = max(expert_ids.shape[1] - 1, 0)
    shares = routing_shares(expert_ids, weights)
    # Every (token, step, rank at y, rank at y+1) contributes to one bin of the flat [Y-1, E, E]
    # array: k*k terms per token and step, where a dense [T, Y, E] product would cost E*E.
    source = expert_ids[:, :-1, :, None]
    target = expert_ids[:, 1:, None, :]
    step = np.arange(steps)[None, :, None, None]
    bins = (step * n_experts + source) * n_experts + target
    mass = shares[:, :-1, :, None] * shares[:, 1:, None, :]
    flat = np.bincount(bins.reshape(-1), weights=mass.reshape(-1), minlength=steps * n_experts * n_experts)
    return flat.reshape(steps, n_experts, n_experts)


def mass_on_experts(expert_ids: np.ndarray, weights: np.ndarray | None, chosen: np.ndarray) -> np.ndarray:
    """The mean share of the tokens' routing mass that lands on the chosen experts, per MoE layer
    (how far a steering plan moved routing toward its experts, or away from ablated ones).

    expert_ids: [T, Y, k]; weights: [T, Y, k] or None (`routing_shares`); chosen: [Y, E] bool.
    Returns [Y] float64 in [0, 1] (NaN for Y layers when T is 0).
    """
    expert_ids = np.asarray(expert_ids, dtype=np.int64)
    if not len(expert_ids):
        return np.full(expert_ids.shape[1], np.nan)
    layer = np.arange(expert_ids.shape[1])[None, :, None]
    on_chosen = np.asarray(chosen, dtype=bool)[layer, expert_ids]
    return (routing_shares(expert_ids, weights) * on_chosen).sum(axis=-1).mean(axis=0)
