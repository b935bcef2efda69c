"""The adapter contract: what one model family's routing looks like, stated declaratively.

An adapter is a frozen `MoEAdapter`; a family file states only what differs from the defaults
(or from the family it is built on). The routers themselves are found the way transformers'
own `output_router_logits` finds them: the model's `_can_record_outputs["router_logits"]`
recorder names the router class, so capture and `output_router_logits` hook the same modules.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from moe_core.errors import ModelError
from moe_core.records import SOFT_SOFTMAX

_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def _zero(config: Any) -> int:
    return 0


@dataclass(frozen=True, kw_only=True)
class MoEAdapter:
    """How a family's routers score and select experts, and where its config keeps the numbers.

    `scoring(config)` is a readable formula of the family's routing rule (recorded in the store);
    `soft_rule` says how router logits become the soft distribution of docs/methods.md.
    """

    family: str
    architectures: tuple[str, ...]
    scoring_rule: str
    renorm_key: str | None = None
    scale_key: str | None = None
    soft_rule: str = SOFT_SOFTMAX
    n_experts_keys: tuple[str, ...] = ("num_experts", "num_local_experts", "n_routed_experts")
    top_k_keys: tuple[str, ...] = ("num_experts_per_tok",)
    shared_experts: Callable[[Any], int] = _zero
    experts_module: str = "experts"  # the module beside the router that holds its routed experts (RISE training)

    def derive(self, **changes: Any) -> MoEAdapter:
        """A family built on this one: the same adapter with the stated differences."""
        return dataclasses.replace(self, **changes)

    def scoring(self, config: Any) -> str:
        rule = self.scoring_rule
        if self.renorm_key is not None and getattr(config, self.renorm_key, False):
            rule += "->renorm"
        scale = self.weight_bound(config)
        return f"{rule}*{scale:g}" if scale != 1.0 else rule

    def weight_bound(self, config: Any) -> float:
        """An upper bound of the routing weights: the routed scaling factor (weights are <= 1 before it)."""
        if self.scale_key is None:
            return 1.0
        return max(1.0, float(getattr(config, self.scale_key, 1.0) or 1.0))

    def n_experts(self, config: Any) -> int:
        return _config_int(config, self.n_experts_keys, "number of routed experts", self.family)

    def top_k(self, config: Any) -> int:
        return _config_int(config, self.top_k_keys, "experts per token (top-k)", self.family)


def _config_int(config: Any, keys: tuple[str, ...], what: str, family: str) -> int:
    for key in keys:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ModelError(
        f"the {family} config gives no {what}: expected one of {', '.join(keys)} in config.json; "
        "add it, or check that this is a Mixture-of-Experts checkpoint"
    )


@dataclass(frozen=True)
class RouterSite:
    """One router module and the decoder layer it sits in (the model's own layer index)."""

    layer: int
    name: str
    module: nn.Module


def router_recorder(model_class: type) -> tuple[type[nn.Module], int, str | None] | None:
    """The router class that transformers' `output_router_logits` hooks, its output index and layer name.

    The recorder sits on the family's base model class, so the classes of the same modeling file
    are searched when `model_class` (a `...ForCausalLM`) does not carry it itself.
    """
    module = sys.modules.get(model_class.__module__)
    candidates = [model_class, *(vars(module).values() if module else ())]
    for candidate in candidates:
        recorders = getattr(candidate, "_can_record_outputs", None) if isinstance(candidate, type) else None
        recorder = (recorders or {}).get("router_logits")
        if recorder is not None:
            return recorder.target_class, recorder.index, recorder.layer_name
    return None


def find_routers(model: nn.Module) -> list[RouterSite]:
    """Every router of `model`, in layer order; raises ModelError when none is found."""
    found = router_recorder(type(model))
    if found is None:
        raise ModelError(f"{type(model).__name__} records no router logits: it is not a Mixture-of-Experts model")
    cls, _, layer_name = found
    sites = []
    for name, module in model.named_modules():
        if not isinstance(module, cls) or (layer_name and not name.endswith(layer_name)):
            continue
        match = _LAYER_INDEX.findall(name)
        if not match:
            raise ModelError(f"router {name} of {type(model).__name__} is not inside a decoder layer")
        sites.append(RouterSite(layer=int(match[-1]), name=name, module=module))
    if not sites:
        raise ModelError(
            f"{type(model).__name__} has no MoE layer with this config (every layer is dense): "
            "check the config's MoE settings (number of experts, dense-layer options)"
        )
    sites.sort(key=lambda site: site.layer)
    if len({site.layer for site in sites}) != len(sites):
        raise ModelError(f"{type(model).__name__} has more than one router per layer; it cannot be captured yet")
    return sites
