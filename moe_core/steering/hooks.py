"""Steering a model: a context manager that applies a `SteeringPlan` to the routers of its band.

For each steered layer a forward hook on the router (registered with `prepend=True`, ahead of
transformers' own `output_router_logits` recorder and of any `RoutingCapture`) takes the router's
logits, changes those of the plan's experts (docs/methods.md, "Steering and interventions"), and
returns (steered logits, weights, ids) re-scored by the family's own rule. The experts module and
every later hook therefore see the steered routing, in forward passes and at every step of
`generate()`, for every token. Routers outside the band get no hook at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from moe_core.adapters import RouterSite, find_routers, resolve_adapter
from moe_core.errors import ModelError
from moe_core.hooked import HookedBlock
from moe_core.steering.plan import ABLATE, ADAPTIVE, HARD, SOFT, SteeringPlan
from moe_core.steering.scoring import SIGMOID_BIAS_GROUP_TOPK, SPARSEMIXER, RoutingRule, rule_for, score

HARD_EPS_STD = 1e-6  # eps ~ N(0, 1e-6): only breaks ties between experts raised to the same maximum


@dataclass(frozen=True, kw_only=True)
class _Target:
    """One steered router: its site, the plan's experts there and their coefficients."""

    site: RouterSite
    experts: torch.Tensor  # [m] long
    coefficients: torch.Tensor  # [m] float32


class Steering(HookedBlock):
    """Apply `plan` to every router of `model` in the plan's band while the `with` block runs.

    >>> with Steering(model, plan):
    ...     model.generate(input_ids, max_new_tokens=32)

    The plan is checked against the model when the object is built (a layer or expert the model
    lacks is refused with PlanError); every hook point is resolved on entry and every handle is
    removed on exit, also when the body raises. Hard steering draws its eps from a generator
    seeded with `plan.seed` on entry, so the same calls give the same routing.
    """

    def __init__(self, model: nn.Module, plan: SteeringPlan) -> None:
        super().__init__()
        config = getattr(model, "config", None)
        if config is None:
            raise ModelError(f"{type(model).__name__} has no transformers config: steer a transformers MoE model")
        adapter = resolve_adapter(config)
        self._rule: RoutingRule = rule_for(adapter, config)
        sites = find_routers(model)
        self._n_experts = adapter.n_experts(config)
        plan.check_against(
            n_layers=int(config.num_hidden_layers),
            moe_layers=[site.layer for site in sites],
            n_experts=self._n_experts,
            top_k=self._rule.top_k,
        )
        by_layer = {site.layer: site for site in sites}
        self._targets = [
            _Target(
                site=by_layer[entry.layer],
                experts=torch.tensor(entry.experts, dtype=torch.long),
                coefficients=torch.tensor(entry.coefficients or [1.0] * len(entry.experts), dtype=torch.float32),
            )
            for entry in plan.steered()
        ]
        if self._rule.name == SIGMOID_BIAS_GROUP_TOPK:
            # Resolved now, not at the first forward pass: the rule cannot choose without the bias.
            missing = [
                t.site.name for t in self._targets if getattr(t.site.module, "e_score_correction_bias", None) is None
            ]
            if missing:
                raise ModelError(f"router {missing[0]} has no e_score_correction_bias, which its routing rule needs")
        self._plan = plan
        self._noise: torch.Generator | None = None

    @property
    def layers(self) -> list[int]:
        """The decoder layers whose routers are steered."""
        return [target.site.layer for target in self._targets]

    def _enter(self) -> None:
        self._noise = torch.Generator().manual_seed(self._plan.seed)

    def _register(self) -> Iterator[RemovableHandle]:
        for target in self._targets:
            yield target.site.module.register_forward_hook(self._router_hook(target), prepend=True)

    def _exit(self) -> None:
        self._noise = None

    # the hook ---------------------------------------------------------------------------------

    def _router_hook(self, target: _Target) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> tuple[Any, ...]:
            logits, weights, ids = self._unpack(target.site, output)
            if module.training and self._rule.name == SPARSEMIXER:
                raise ModelError(
                    f"router {target.site.name} samples its experts in training mode (sparsemixer): "
                    "call model.eval() before steering"
                )
            flat = logits.reshape(-1, logits.shape[-1]).float()
            experts = target.experts.to(flat.device)
            steered = self._steer(flat, experts, target.coefficients.to(flat.device))
            marked = torch.zeros(flat.shape[-1], dtype=torch.bool, device=flat.device).index_fill(0, experts, True)
            bias = getattr(module, "e_score_correction_bias", None)
            new_weights, new_ids = score(
                self._rule,
                steered,
                bias=bias,
                forced=marked if self._plan.method == HARD else None,
                excluded=marked if self._plan.method == ABLATE else None,
            )
            return (
                steered.to(logits.dtype).view(logits.shape),
                new_weights.to(weights.dtype).view(weights.shape),
                new_ids.to(ids.dtype).view(ids.shape),
                *output[3:],
            )

        return hook

    def _steer(self, z: torch.Tensor, experts: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        """z' of docs/methods.md for the plan's experts; every other logit is left as it is. z: [T, E] float32."""
        method, strength = self._plan.method, self._plan.strength
        chosen = z[:, experts]
        if method == SOFT:
            # Population std over the experts of each token (numpy's default), the spread the shift is measured in.
            new = chosen + strength * z.std(dim=-1, correction=0, keepdim=True)
        elif method == ADAPTIVE:
            new = chosen + strength * coefficients * chosen.abs()
        elif method == HARD:
            top = z.amax(dim=-1, keepdim=True)
            assert self._noise is not None, "hard steering outside the with block"
            eps = torch.randn(chosen.shape, generator=self._noise, dtype=torch.float32).to(z.device) * HARD_EPS_STD
            # |eps|, and at least one float32 step above the maximum: a negative or rounded-away eps
            # would leave the expert tied with, or below, the token's best expert.
            new = torch.maximum(top + eps.abs(), torch.nextafter(top, torch.full_like(top, float("inf"))))
        elif method == ABLATE:
            new = torch.full_like(chosen, float("-inf"))
        else:  # the plan refuses other methods when it is built
            raise ModelError(f"unknown steering method {method!r}")
        return z.index_copy(1, experts, new)

    def _unpack(self, site: RouterSite, output: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if isinstance(output, tuple) and len(output) >= 3 and all(torch.is_tensor(t) for t in output[:3]):
            logits, weights, ids = output[:3]
            if logits.shape[-1] == self._n_experts and weights.shape[-1] == ids.shape[-1] == self._rule.top_k:
                return logits, weights, ids
        shapes = [tuple(t.shape) for t in output] if isinstance(output, tuple) else type(output).__name__
        raise ModelError(
            f"router {site.name} returned {shapes}, not (logits [T, {self._n_experts}], weights [T, "
            f"{self._rule.top_k}], ids [T, {self._rule.top_k}]): it cannot be steered"
        )
