"""The routing captured in the vLLM workers, as a `RoutingBatch` (numpy only).

Each request comes back from the workers as a `RequestRouting` (capture.py): ids, weights and the
summed soft distribution of every token the model read (the prompt, then every generated token but
the last, which was produced and never fed back), through the MoE layers, in order. The batch
holds exactly what the hf backend's holds: `router_probs` is the per-sequence mean of the soft
distribution, logits are there when they were asked for.

On a GPU, vLLM's own routed-experts output (`CompletionOutput.routed_experts`, ids only, [rows,
num_hidden_layers, top_k] by decoder layer) can be asked for as well: `routed_expert_ids` decodes
it to the MoE layers and `id_agreement` compares it with the capture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from moe_core.backends.vllm.capture import RequestRouting
from moe_core.errors import ModelError
from moe_core.records import ModelInfo, RoutingBatch


@dataclass(frozen=True, kw_only=True)
class SequenceRouting:
    """One request as vLLM ran it: the tokens it read and their routing.

    token_ids, pieces, special: the tokens the model read, prompt first (as in `RoutingBatch`)
    n_generated:                how many of them the model generated itself (the last ones)
    routing:                    what the gates recorded for them
    """

    token_ids: Sequence[int]
    pieces: Sequence[str]
    special: Sequence[bool]
    n_generated: int
    routing: RequestRouting


def _checked(seq: SequenceRouting, index: int, info: ModelInfo) -> RequestRouting:
    routing = seq.routing
    n = len(seq.token_ids)
    if routing.expert_ids.shape[1:] != (len(info.moe_layers), info.top_k):
        raise ModelError(
            f"the workers captured routing of shape {routing.expert_ids.shape} for sequence {index}; expected "
            f"[tokens, {len(info.moe_layers)} MoE layers, top-k {info.top_k}]: vLLM built the model differently"
        )
    if routing.n_tokens != n:
        raise ModelError(
            f"the workers captured routing for {routing.n_tokens} tokens of sequence {index}, which read {n}: "
            "every token the model reads must pass its router gates once"
        )
    if not 0 <= seq.n_generated <= n or not len(seq.pieces) == len(seq.special) == n:
        raise ValueError(f"sequence {index}: tokens, pieces, special flags and generated count disagree")
    return routing


def routing_batch(sequences: Sequence[SequenceRouting], info: ModelInfo) -> RoutingBatch:
    """The routing of `sequences`, in order, through the MoE layers of the model `info` describes."""
    if not sequences:
        raise ValueError("no sequence to decode")
    routings = [_checked(seq, index, info) for index, seq in enumerate(sequences)]
    lengths = np.asarray([len(seq.token_ids) for seq in sequences], dtype=np.int64)
    generated = np.concatenate(
        [np.arange(len(seq.token_ids)) >= len(seq.token_ids) - seq.n_generated for seq in sequences]
    )
    logits = [r.router_logits for r in routings if r.router_logits is not None]
    return RoutingBatch(
        layers=np.asarray(info.moe_layers, dtype=np.int16),
        seq_lengths=lengths,
        token_ids=np.concatenate([np.asarray(seq.token_ids, dtype=np.int64) for seq in sequences]),
        pieces=[piece for seq in sequences for piece in seq.pieces],
        special=np.concatenate([np.asarray(seq.special, dtype=bool) for seq in sequences]),
        generated=generated,
        expert_ids=np.concatenate([r.expert_ids for r in routings]).astype(np.int16),
        expert_weights=np.concatenate([r.expert_weights for r in routings]).astype(np.float32),
        router_probs=np.stack([r.prob_sum / r.n_tokens for r in routings]).astype(np.float32),
        router_logits=np.concatenate(logits).astype(np.float32) if len(logits) == len(routings) else None,
    )


def routed_expert_ids(routed: np.ndarray, info: ModelInfo, n_tokens: int) -> np.ndarray:
    """vLLM's routed-experts array of one request [rows, num_hidden_layers, k], as ids [n_tokens, L, k]."""
    routed = np.asarray(routed)
    if routed.ndim != 3 or routed.shape[1:] != (info.n_layers, info.top_k) or routed.shape[0] != n_tokens:
        raise ModelError(
            f"vLLM returned routed experts of shape {routed.shape}; expected [{n_tokens} tokens, {info.n_layers} "
            f"layers, top-k {info.top_k}]: the engine's vLLM version lays them out differently"
        )
    return routed[:, np.asarray(info.moe_layers, dtype=np.int64), :]


def id_agreement(captured: np.ndarray, routed: np.ndarray) -> float:
    """Share of (token, layer) whose top-k sets agree between two id arrays [n, L, k]."""
    return float((np.sort(captured, axis=-1) == np.sort(routed, axis=-1)).all(axis=-1).mean())
