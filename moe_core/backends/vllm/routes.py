"""vLLM's routed-experts arrays decoded into a `RoutingBatch` (numpy only).

With `enable_return_routed_experts`, vLLM (0.33) puts on each finished request's
`CompletionOutput.routed_experts` an integer array [rows, num_hidden_layers, top_k]: one row per
token the model read (the prompt, then every generated token but the last, which was produced
and never fed back), indexed by the model's own decoder layer. Dense layers have no router and
their columns hold nothing meaningful, so only `ModelInfo.moe_layers` are kept. vLLM returns ids
only: the batch has no weights (`expert_weights=None`, the store writes NULL) and no router
probabilities; the analyses fall back to activation frequencies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from moe_core.errors import ModelError
from moe_core.records import ModelInfo, RoutingBatch


@dataclass(frozen=True, kw_only=True)
class SequenceRouting:
    """One request as vLLM ran it: the tokens it read and the experts they were routed to.

    token_ids, pieces, special: the tokens the model read, prompt first (as in `RoutingBatch`)
    n_generated:                how many of them the model generated itself (the last ones)
    routed:                     vLLM's routed_experts [rows, num_hidden_layers, top_k]
    """

    token_ids: Sequence[int]
    pieces: Sequence[str]
    special: Sequence[bool]
    n_generated: int
    routed: np.ndarray


def _checked(seq: SequenceRouting, index: int, info: ModelInfo) -> np.ndarray:
    routed = np.asarray(seq.routed)
    n = len(seq.token_ids)
    expected = (n, info.n_layers, info.top_k)
    if routed.ndim != 3 or routed.shape[1:] != expected[1:]:
        raise ModelError(
            f"vLLM returned routed experts of shape {routed.shape} for sequence {index}; expected "
            f"[tokens, {info.n_layers} layers, top-k {info.top_k}]: the engine's vLLM version lays them out differently"
        )
    if routed.shape[0] != n:
        raise ModelError(
            f"vLLM returned routing for {routed.shape[0]} tokens of sequence {index}, which read {n}: "
            "its routed-experts output must cover every token (routed_experts_prompt_start 0)"
        )
    if not 0 <= seq.n_generated <= n or not len(seq.pieces) == len(seq.special) == n:
        raise ValueError(f"sequence {index}: tokens, pieces, special flags and generated count disagree")
    return routed


def routing_batch(sequences: Sequence[SequenceRouting], info: ModelInfo) -> RoutingBatch:
    """The routing of `sequences`, in order, through the MoE layers of the model `info` describes."""
    if not sequences:
        raise ValueError("no sequence to decode")
    layers = np.asarray(info.moe_layers, dtype=np.int64)
    routed = [_checked(seq, index, info)[:, layers, :] for index, seq in enumerate(sequences)]
    lengths = np.asarray([len(seq.token_ids) for seq in sequences], dtype=np.int64)
    generated = np.concatenate(
        [np.arange(len(seq.token_ids)) >= len(seq.token_ids) - seq.n_generated for seq in sequences]
    )
    return RoutingBatch(
        layers=layers.astype(np.int16),
        seq_lengths=lengths,
        token_ids=np.concatenate([np.asarray(seq.token_ids, dtype=np.int64) for seq in sequences]),
        pieces=[piece for seq in sequences for piece in seq.pieces],
        special=np.concatenate([np.asarray(seq.special, dtype=bool) for seq in sequences]),
        generated=generated,
        expert_ids=np.concatenate(routed).astype(np.int16),
        expert_weights=None,
        router_probs=None,
    )
