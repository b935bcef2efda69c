"""Where a selected expert's weights live in a loaded model, and how to train only them.

transformers >= 5 fuses a layer's routed experts into 3-D parameters (`experts.gate_up_proj
[E, ...]`, `experts.down_proj`, GPT-OSS's biases [E, ...]): a selected expert is slice `e` of each.
A family that keeps one module per expert (an `nn.ModuleList`) gives whole tensors instead. The
experts module is the adapter's `experts_module` beside each router, so nothing is guessed from
parameter names; a model laid out otherwise raises an error that names what is missing.

`SubnetworkMask` freezes everything else: only tensors holding a selected slice require grad, and
after each backward the other slices' gradients are set to exactly zero (assignment, not
multiplication, so a NaN elsewhere cannot leak in). With a zero gradient from the first step, AdamW's
moments of those slices stay zero and so does their update; weight decay, which AdamW applies to
whole tensors, is applied here to the selected slices only (the optimizer runs with none).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from moe_core.adapters import find_routers, resolve_adapter
from moe_core.errors import ModelError, PolyrouteError

Expert = tuple[int, int]  # (decoder-layer index, expert index)


@dataclass(frozen=True, kw_only=True)
class ExpertSlice:
    """One tensor's share of one selected expert: `tensor[index]` (fused), or all of `tensor` (index None)."""

    layer: int
    expert: int
    tensor: str  # the parameter's name in `model.named_parameters()`
    index: int | None

    @property
    def key(self) -> str:
        """Its name in the adapter's safetensors file."""
        return self.tensor if self.index is None else f"{self.tensor}#{self.index}"


def expert_slices(model: nn.Module, selected: Sequence[Expert]) -> list[ExpertSlice]:
    """Every tensor slice that belongs to the `selected` (layer, expert) pairs, in selection order."""
    adapter = resolve_adapter(model.config)
    n_experts = adapter.n_experts(model.config)
    layers = {site.layer: site.name for site in find_routers(model)}
    slices = []
    for layer, expert in selected:
        if layer not in layers:
            raise PolyrouteError(f"layer {layer} has no router; the model's MoE layers are {sorted(layers)}")
        if not 0 <= expert < n_experts:
            raise PolyrouteError(f"expert {expert} does not exist: layer {layer} has experts 0-{n_experts - 1}")
        name = f"{layers[layer].rpartition('.')[0]}.{adapter.experts_module}"
        slices += _slices_of(model, name, layer, expert, n_experts)
    return slices


def _slices_of(model: nn.Module, name: str, layer: int, expert: int, n_experts: int) -> list[ExpertSlice]:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise ModelError(
            f"{type(model).__name__} has no experts module {name} beside the router of layer {layer}: "
            "set `experts_module` in its adapter (moe_core/adapters)"
        ) from None
    if isinstance(module, nn.ModuleList):
        if len(module) != n_experts:
            raise ModelError(f"{name} holds {len(module)} experts, but the config says {n_experts}")
        return [
            ExpertSlice(layer=layer, expert=expert, tensor=f"{name}.{expert}.{tensor}", index=None)
            for tensor, _ in module[expert].named_parameters()
        ]
    fused = dict(module.named_parameters(recurse=False))
    nested = [tensor for tensor, _ in module.named_parameters() if tensor not in fused]
    odd = [tensor for tensor, p in fused.items() if p.dim() < 2 or p.shape[0] != n_experts]
    if not fused or nested or odd:
        raise ModelError(
            f"cannot tell the experts apart in {name} ({type(module).__name__}): expected parameters with "
            f"{n_experts} experts first, or one module per expert; found {', '.join([*odd, *nested]) or 'none'}"
        )
    return [ExpertSlice(layer=layer, expert=expert, tensor=f"{name}.{tensor}", index=expert) for tensor in fused]


class SubnetworkMask:
    """Freezes `model` except `slices`, and keeps every other slice of a trained tensor unchanged."""

    def __init__(self, model: nn.Module, slices: Iterable[ExpertSlice]) -> None:
        params = dict(model.named_parameters())
        self._rows: dict[str, list[int] | None] = {}
        for piece in slices:
            if piece.index is None:
                self._rows[piece.tensor] = None
            else:
                rows = self._rows.setdefault(piece.tensor, [])
                assert rows is not None
                rows.append(piece.index)
        self._requires_grad = {name: param.requires_grad for name, param in params.items()}
        self._all = params
        for param in params.values():
            param.requires_grad_(False)
        self.params = {name: params[name] for name in self._rows}
        for param in self.params.values():
            param.requires_grad_(True)
        self._frozen_rows = {
            name: _complement(rows, params[name].shape[0]).to(params[name].device)
            for name, rows in self._rows.items()
            if rows is not None
        }

    def trainable(self) -> list[nn.Parameter]:
        return list(self.params.values())

    def release(self) -> None:
        """Drop the gradients and give every tensor back its own requires_grad."""
        for name, param in self._all.items():
            param.grad = None
            param.requires_grad_(self._requires_grad[name])

    def mask_gradients(self) -> None:
        """Set the gradient of every non-selected slice to exactly zero."""
        for name, rows in self._frozen_rows.items():
            grad = self.params[name].grad
            if grad is not None and len(rows):
                grad[rows] = 0

    @torch.no_grad()
    def decay(self, factor: float) -> None:
        """Decoupled weight decay (AdamW's `p *= 1 - lr * wd`), on the selected slices only."""
        if factor == 1.0:
            return
        for name, rows in self._rows.items():
            param = self.params[name]
            if rows is None:
                param.mul_(factor)
            else:
                param[rows] = param[rows] * factor


def _complement(rows: list[int], size: int) -> torch.Tensor:
    keep = torch.ones(size, dtype=torch.bool)
    keep[rows] = False
    return torch.nonzero(keep).flatten()


def slice_values(model: nn.Module, slices: Iterable[ExpertSlice]) -> dict[str, torch.Tensor]:
    """The current weights of `slices` (detached CPU copies), by `ExpertSlice.key`."""
    params = dict(model.named_parameters())
    out = {}
    for piece in slices:
        tensor = params[piece.tensor].detach()
        out[piece.key] = (tensor if piece.index is None else tensor[piece.index]).to("cpu", copy=True).contiguous()
    return out


@torch.no_grad()
def apply_slices(model: nn.Module, slices: Iterable[ExpertSlice], values: dict[str, torch.Tensor]) -> None:
    """Write `values` (by key) into the model's tensors, cast to each tensor's dtype."""
    params = dict(model.named_parameters())
    for piece in slices:
        target = params[piece.tensor]
        value = values[piece.key]
        part = target if piece.index is None else target[piece.index]
        if part.shape != value.shape:
            raise ModelError(f"{piece.key} has shape {tuple(value.shape)}, but the model's is {tuple(part.shape)}")
        part.copy_(value.to(part.dtype))
