"""Routing capture: a context manager that records what every router of a model chose.

Each call of the captured model (one forward, or one step of `generate()`) is a *step*. A forward
pre-hook on the model reads the step's attention mask, so padding is never recorded, and a forward
hook on every router (the modules `output_router_logits` hooks) keeps, for the step's real tokens:
the top-k expert ids, the weights the model really applies (after renormalisation and scaling, as
its router returned them), the per-row sum of the soft distribution and, on request, the raw
logits. Everything stays on the model's device until the step ends; then the layers are stacked
and copied to the host once, never once per layer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from moe_core.adapters import RouterSite
from moe_core.errors import ModelError
from moe_core.hooked import HookedBlock
from moe_core.records import SOFT_SOFTMAX


def soft_distribution(logits: torch.Tensor, rule: str) -> torch.Tensor:
    """Per-token router probabilities from logits `[..., E]` (docs/methods.md, "Routing distributions")."""
    scores = logits.float()
    if rule == SOFT_SOFTMAX:
        return scores.softmax(dim=-1)
    sigmoid = scores.sigmoid()
    return sigmoid / sigmoid.sum(dim=-1, keepdim=True)


@dataclass(frozen=True, kw_only=True)
class CapturedRouting:
    """The routing of B rows, their real tokens concatenated row after row.

    Shapes: row_lengths [B]; expert_ids [N, L, k] int16; expert_weights [N, L, k] float32;
    router_probs [B, L, E] float32 (mean soft distribution over each row's kept tokens);
    router_logits [N, L, E] float32 or None.
    """

    row_lengths: np.ndarray
    expert_ids: np.ndarray
    expert_weights: np.ndarray
    router_probs: np.ndarray
    router_logits: np.ndarray | None


@dataclass(frozen=True, kw_only=True)
class _Step:
    row_counts: np.ndarray  # [B] real tokens of each row in this step
    expert_ids: np.ndarray  # [n, L, k]
    expert_weights: np.ndarray  # [n, L, k]
    prob_sums: np.ndarray  # [B, L, E]
    router_logits: np.ndarray | None  # [n, L, E]


class _Pending:
    """Device tensors of the step in progress, one slot per router."""

    def __init__(self, mask: torch.Tensor, n_routers: int) -> None:
        self.mask = mask
        self.batch, self.length = mask.shape
        self.real_index = mask.reshape(-1).nonzero().squeeze(1)
        self.weight = mask.reshape(-1, 1).float()
        self.ids: list[torch.Tensor | None] = [None] * n_routers
        self.weights: list[torch.Tensor | None] = [None] * n_routers
        self.prob_sums: list[torch.Tensor | None] = [None] * n_routers
        self.logits: list[torch.Tensor | None] = [None] * n_routers


class RoutingCapture(HookedBlock):
    """Record the routing of every call of `model` made inside the `with` block.

    >>> with RoutingCapture(model, sites, n_experts=E, top_k=k, soft_rule="softmax") as capture:
    ...     model(input_ids, attention_mask=mask)
    >>> routing = capture.collect()

    Every hook point is resolved on entry and every handle is removed on exit, also when the
    body raises.
    """

    def __init__(
        self,
        model: nn.Module,
        sites: Sequence[RouterSite],
        *,
        n_experts: int,
        top_k: int,
        soft_rule: str,
        save_logits: bool = False,
    ) -> None:
        if not sites:
            raise ModelError("no router to capture: the model has no MoE layer")
        super().__init__()
        self._model = model
        self._sites = list(sites)
        self._n_experts = n_experts
        self._top_k = top_k
        self._soft_rule = soft_rule
        self._save_logits = save_logits
        self._pending: _Pending | None = None
        self._steps: list[_Step] = []

    def _register(self) -> Iterator[RemovableHandle]:
        yield self._model.register_forward_pre_hook(self._on_step_start, with_kwargs=True)
        yield self._model.register_forward_hook(self._on_step_end)
        for slot, site in enumerate(self._sites):
            yield site.module.register_forward_hook(self._router_hook(slot))

    def _exit(self) -> None:
        self._pending = None

    # hooks -----------------------------------------------------------------------------------

    def _on_step_start(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        tokens = kwargs.get("input_ids", args[0] if args else None)
        if tokens is None:
            tokens = kwargs.get("inputs_embeds")
        if tokens is None:
            raise ModelError("capture needs input_ids or inputs_embeds in the model call")
        batch, length = tokens.shape[:2]
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        if mask is None:
            real = torch.ones(batch, length, dtype=torch.bool, device=tokens.device)
        elif mask.dim() == 2:
            # During generate() the mask covers the cache too; the step's tokens are its last columns.
            real = mask[:, -length:].bool()
        else:
            raise ModelError("capture needs a 2-D attention mask [batch, length]; a custom 4-D mask was given")
        self._pending = _Pending(real, len(self._sites))

    def _router_hook(self, slot: int) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            pending = self._pending
            if pending is None:
                raise ModelError("a router ran outside a call of the captured model: call the model you passed")
            logits, weights, ids = self._unpack(slot, output)
            index = pending.real_index
            pending.ids[slot] = ids.index_select(0, index).to(torch.int16)
            pending.weights[slot] = weights.index_select(0, index).float()
            probs = soft_distribution(logits, self._soft_rule) * pending.weight
            pending.prob_sums[slot] = probs.view(pending.batch, pending.length, -1).sum(dim=1)
            if self._save_logits:
                pending.logits[slot] = logits.index_select(0, index).float()

        return hook

    def _unpack(self, slot: int, output: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        site = self._sites[slot]
        shaped = isinstance(output, tuple) and len(output) >= 3 and all(torch.is_tensor(t) for t in output[:3])
        if shaped:
            # Records hold values, never the autograd graph (capture also runs inside training).
            logits, weights, ids = (t.detach().reshape(-1, t.shape[-1]) for t in output[:3])
            if logits.shape[-1] == self._n_experts and ids.shape[-1] == self._top_k == weights.shape[-1]:
                return logits, weights, ids
        shapes = [tuple(t.shape) for t in output] if isinstance(output, tuple) else type(output).__name__
        raise ModelError(
            f"router {site.name} returned {shapes}, not (logits [T, {self._n_experts}], weights [T, {self._top_k}], "
            f"ids [T, {self._top_k}]): this model's routing cannot be captured with its config's expert counts"
        )

    def _on_step_end(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        missing = [site.name for site, ids in zip(self._sites, pending.ids, strict=True) if ids is None]
        if missing:
            raise ModelError(
                f"routers {', '.join(missing[:3])} did not run: the MoE blocks were replaced "
                "(for example by use_kernels=True); load the model without kernels to capture it"
            )

        def host(parts: list[torch.Tensor | None]) -> np.ndarray:
            return torch.stack([p for p in parts if p is not None], dim=1).cpu().numpy()

        self._steps.append(
            _Step(
                row_counts=pending.mask.sum(dim=1).cpu().numpy(),
                expert_ids=host(pending.ids),
                expert_weights=host(pending.weights),
                prob_sums=host(pending.prob_sums),
                router_logits=host(pending.logits) if self._save_logits else None,
            )
        )

    # results ---------------------------------------------------------------------------------

    def collect(self, keep: Sequence[int] | None = None) -> CapturedRouting:
        """The routing of every row across the steps so far.

        `keep[b]` keeps only the first tokens of row b (for example up to a generated EOS); it must
        end on a step boundary, since the soft distribution is summed per step.
        """
        if not self._steps:
            raise ModelError("nothing was captured: call the model inside the `with` block")
        batch = len(self._steps[0].row_counts)
        limits = np.full(batch, np.iinfo(np.int64).max) if keep is None else np.asarray(keep)
        ids, weights, logits = [], [], []
        lengths = np.zeros(batch, dtype=np.int64)
        prob_sums = np.zeros((batch, *self._steps[0].prob_sums.shape[1:]), dtype=np.float64)
        starts = [np.concatenate([[0], np.cumsum(step.row_counts)]) for step in self._steps]
        for row in range(batch):
            for step, start in zip(self._steps, starts, strict=True):
                count = int(step.row_counts[row])
                if count == 0 or lengths[row] >= limits[row]:
                    continue
                if lengths[row] + count > limits[row]:
                    raise ValueError(f"keep[{row}] = {limits[row]} ends inside a step of {count} tokens")
                rows = slice(int(start[row]), int(start[row]) + count)
                ids.append(step.expert_ids[rows])
                weights.append(step.expert_weights[rows])
                if step.router_logits is not None:
                    logits.append(step.router_logits[rows])
                prob_sums[row] += step.prob_sums[row]
                lengths[row] += count
        if np.any(lengths == 0):
            raise ModelError("a row has no real token: every text must have at least one token")
        return CapturedRouting(
            row_lengths=lengths,
            expert_ids=np.concatenate(ids),
            expert_weights=np.concatenate(weights),
            router_probs=(prob_sums / lengths[:, None, None]).astype(np.float32),
            router_logits=np.concatenate(logits) if self._save_logits else None,
        )
