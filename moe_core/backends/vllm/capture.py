"""Routing capture inside a vLLM model: what each router gate chose, kept per request on the worker.

A `GateRecorder` sits on every MoE layer's router gate next to its steering state (steer.py). The
gate's hook hands it the logits the model routes on (steered, when a plan is loaded) and it copies
them into a fixed-size buffer, row t for the batch's token t: one copy, fixed shapes and no Python
branch on the data, so a CUDA graph captured once replays it for every batch.

After each forward pass the worker reads the buffers' first rows and files them under the
requests the scheduler laid out in that batch, at their token positions (`RoutingLedger`). There,
once for all layers, the family's own rule runs on the logits (moe_core.steering.scoring, the
rule the hf backend re-runs: the top-k ids and the weights the model applies, with each layer's
live correction bias) and the soft distribution is summed per request. The backend takes a
finished request's routing with `take`: ids and weights of every token it read, the sum of its
soft distribution (the hf backend's `router_probs` is its mean), and the logits when asked for.
Torch and numpy only, no vLLM import: tests run it on the CPU.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from moe_core.capture import soft_distribution
from moe_core.errors import ModelError
from moe_core.records import SOFT_SOFTMAX
from moe_core.steering.scoring import RoutingRule, score


class GateRecorder(nn.Module):
    """The buffer of one router gate: the last batch's logits [capacity, E], and what scores them."""

    logits: torch.Tensor

    def __init__(self, layer: int, rule: RoutingRule, n_experts: int, capacity: int, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.layer = layer
        self.rule = rule
        self.capacity = capacity
        # Non-persistent: not a weight; a checkpoint never carries it.
        self.register_buffer("logits", torch.zeros(capacity, n_experts, dtype=torch.float32), persistent=False)
        # The live correction bias (shifted in place by hard and ablate plans, steer.py), as vLLM's
        # router reads it; in a tuple so that nn.Module does not adopt the checkpoint's Parameter.
        self._bias = (bias,) if bias is not None else ()

    @property
    def bias(self) -> torch.Tensor | None:
        return self._bias[0] if self._bias else None

    def forward(self, logits: torch.Tensor) -> None:
        rows = logits.shape[0]
        if rows > self.capacity:  # a shape, fixed per captured graph: not a branch on the data
            raise ModelError(
                f"a batch of {rows} tokens reached router layer {self.layer}, whose capture holds {self.capacity}: "
                "the engine's max_num_batched_tokens changed after the model was built"
            )
        self.logits[:rows].copy_(logits)


def scored(recorders: Sequence[GateRecorder], rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits [rows, L, E], weights [rows, L, k], ids [rows, L, k]) of the recorders' first rows,
    scored by their rule once for all layers (each with its own bias)."""
    logits = torch.stack([r.logits[:rows] for r in recorders], dim=1)
    n_layers, n_experts = logits.shape[1:]
    biases = [r.bias for r in recorders]
    bias = None
    if all(b is not None for b in biases):
        bias = torch.stack([b.float() for b in biases if b is not None]).repeat(rows, 1)
    weights, ids = score(recorders[0].rule, logits.reshape(-1, n_experts), bias=bias)
    return logits, weights.view(rows, n_layers, -1), ids.view(rows, n_layers, -1)


def _soft(logits: torch.Tensor, rule: str) -> torch.Tensor:
    """`moe_core.capture.soft_distribution` of float32 logits; the softmax spelled out, which on a
    CPU runs several times faster than torch.softmax over a last dimension of a few experts (equal
    within float32 rounding)."""
    if rule != SOFT_SOFTMAX:
        return soft_distribution(logits, rule)
    exp = (logits - logits.amax(dim=-1, keepdim=True)).exp_()
    return exp.div_(exp.sum(dim=-1, keepdim=True))


@dataclass(frozen=True, kw_only=True)
class StepLayout:
    """Where one forward pass's token rows belong: request i owns the next `counts[i]` rows, which
    are its tokens `starts[i]`, `starts[i] + 1`, ... (vLLM lays a batch out request by request)."""

    req_ids: Sequence[str]
    counts: Sequence[int]
    starts: Sequence[int]

    @property
    def n_tokens(self) -> int:
        return int(sum(self.counts))


@dataclass(frozen=True, kw_only=True)
class RequestRouting:
    """The routing of one request's tokens, in order (L = MoE layers).

    expert_ids [n, L, k] int16, expert_weights [n, L, k] float32, prob_sum [L, E] float64 (the sum
    of the soft distribution over the n tokens), router_logits [n, L, E] float32 or None.
    """

    expert_ids: np.ndarray
    expert_weights: np.ndarray
    prob_sum: np.ndarray
    router_logits: np.ndarray | None

    @property
    def n_tokens(self) -> int:
        return int(self.expert_ids.shape[0])


def pack(routings: Sequence[RequestRouting]) -> bytes:
    """Requests' routing as one .npz (no pickle): what crosses from the worker to the backend
    (none: empty bytes, a data-parallel engine core that ran none of them)."""
    if not routings:
        return b""
    arrays: dict[str, Any] = {
        "n_tokens": np.asarray([r.n_tokens for r in routings], dtype=np.int64),
        "expert_ids": np.concatenate([r.expert_ids for r in routings]),
        "expert_weights": np.concatenate([r.expert_weights for r in routings]),
        "prob_sum": np.stack([r.prob_sum for r in routings]),
    }
    logits = [r.router_logits for r in routings if r.router_logits is not None]
    if logits and len(logits) == len(routings):
        arrays["router_logits"] = np.concatenate(logits)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def unpack(packed: bytes) -> list[RequestRouting]:
    """The requests `pack` packed, in order."""
    if not packed:
        return []
    with np.load(io.BytesIO(packed), allow_pickle=False) as arrays:
        bounds = np.cumsum(arrays["n_tokens"])[:-1]
        ids, weights = np.split(arrays["expert_ids"], bounds), np.split(arrays["expert_weights"], bounds)
        logits = np.split(arrays["router_logits"], bounds) if "router_logits" in arrays else [None] * len(ids)
        return [
            RequestRouting(expert_ids=i, expert_weights=w, prob_sum=p, router_logits=z)
            for i, w, p, z in zip(ids, weights, arrays["prob_sum"], logits, strict=True)
        ]


@dataclass
class _Chunk:
    start: int
    ids: np.ndarray
    weights: np.ndarray
    prob_sum: np.ndarray
    logits: np.ndarray | None


@dataclass
class RoutingLedger:
    """Every request's routing so far, filed chunk by chunk as the steps run (on one worker)."""

    soft_rule: str
    save_logits: bool = False
    _chunks: dict[str, list[_Chunk]] = field(default_factory=dict)

    def add_step(self, recorders: Sequence[GateRecorder], layout: StepLayout) -> None:
        """File the rows of the forward pass that just ran (`layout` says whose they are)."""
        rows = layout.n_tokens
        if rows == 0:
            return
        with torch.inference_mode():
            logits, scored_weights, scored_ids = scored(recorders, rows)
            ids = scored_ids.to(torch.int16).cpu().numpy()
            weights = scored_weights.float().cpu().numpy()
            owner = torch.repeat_interleave(
                torch.arange(len(layout.counts), device=logits.device),
                torch.as_tensor(list(layout.counts), device=logits.device),
            )
            # Summed in float32 within a step, across steps in float64 (as moe_core.capture does).
            probs = _soft(logits, self.soft_rule)
            zeros = torch.zeros((len(layout.counts), *probs.shape[1:]), dtype=probs.dtype, device=probs.device)
            sums = zeros.index_add_(0, owner, probs).double().cpu().numpy()
            host_logits = logits.cpu().numpy() if self.save_logits else None
        offset = 0
        for index, (req_id, count, start) in enumerate(zip(layout.req_ids, layout.counts, layout.starts, strict=True)):
            span = slice(offset, offset + count)
            chunk = _Chunk(
                start=int(start),
                ids=ids[span],
                weights=weights[span],
                prob_sum=sums[index],
                logits=host_logits[span] if host_logits is not None else None,
            )
            chunks = self._chunks.setdefault(req_id, [])
            # A request preempted and recomputed from an earlier token replaces what it had past it.
            chunks[:] = [c for c in chunks if c.start < chunk.start]
            chunks.append(chunk)
            offset += count

    def take(self, req_id: str) -> RequestRouting:
        """The routing of `req_id`'s tokens from its first, forgotten here once taken."""
        chunks = self._chunks.pop(req_id, None)
        if not chunks:
            raise ModelError(f"no routing was captured for request {req_id}: did it run on this engine?")
        position = 0
        for chunk in chunks:
            if chunk.start != position:
                raise ModelError(
                    f"request {req_id}: routing captured from token {chunk.start}, expected {position}: tokens before "
                    "it were never computed (a prefix-cache hit: start vLLM without prefix caching) or this vLLM lays "
                    "batches out otherwise than worker.step_layout reads them"
                )
            position += len(chunk.ids)
        logits = [c.logits for c in chunks if c.logits is not None]
        return RequestRouting(
            expert_ids=np.concatenate([c.ids for c in chunks]),
            expert_weights=np.concatenate([c.weights for c in chunks]),
            prob_sum=np.sum([c.prob_sum for c in chunks], axis=0),
            router_logits=np.concatenate(logits) if len(logits) == len(chunks) else None,
        )

    def pending(self) -> list[str]:
        """Requests whose routing is held here."""
        return list(self._chunks)

    def clear(self) -> None:
        self._chunks.clear()
