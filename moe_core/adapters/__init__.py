"""Adapter registry: one module per family (`ADAPTER = MoEAdapter(...)`), keyed by the adapter's own
`architectures`. A new family is a new module in this package: `families()` finds it.

`resolve_adapter(config)` returns the family's adapter, the generic one for other transformers MoE
decoders whose router follows the common pattern, or raises ModelError naming the architecture
and the supported ones (for dense models, unknown architectures and unusual routers alike).
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Any

import transformers

from moe_core.adapters.base import MoEAdapter, RouterSite, find_routers, router_recorder
from moe_core.adapters.generic import generic_adapter
from moe_core.errors import ModelError

__all__ = ["MoEAdapter", "RouterSite", "families", "find_routers", "resolve_adapter"]

_NOT_FAMILIES = {"base", "generic"}  # the package's modules that define no family


@cache
def families() -> dict[str, MoEAdapter]:
    """Every family's adapter by each architecture it names (`config.architectures[0]` of a checkpoint)."""
    found: dict[str, MoEAdapter] = {}
    for module in sorted(info.name for info in pkgutil.iter_modules(__path__) if info.name not in _NOT_FAMILIES):
        adapter: MoEAdapter = importlib.import_module(f"{__name__}.{module}").ADAPTER
        for arch in adapter.architectures:
            if arch in found:
                raise ValueError(f"{arch} is claimed by the adapters {found[arch].family} and {adapter.family}")
            found[arch] = adapter
    return found


def _supported_hint() -> str:
    return (
        "supported: Qwen2-MoE, Qwen3-MoE, OLMoE, Mixtral, PhiMoE, DeepSeek-V2, DeepSeek-V3 (and GLM-4-MoE, dots1), "
        f"GPT-OSS, Granite-MoE, and other transformers {transformers.__version__} decoder MoE models "
        "whose router returns (logits, top-k weights, top-k ids)"
    )


def resolve_adapter(config: Any) -> MoEAdapter:
    """The adapter for `config`, chosen by `config.architectures[0]`."""
    architectures = getattr(config, "architectures", None) or []
    if not architectures:
        raise ModelError(
            'config.json names no architecture: add "architectures": ["<Family>ForCausalLM"]; ' + _supported_hint()
        )
    arch = architectures[0]
    adapter = families().get(arch)
    if adapter is not None:
        return adapter
    model_class = getattr(transformers, arch, None)
    if model_class is None:
        raise ModelError(
            f"architecture {arch} is unknown to transformers {transformers.__version__}; " + _supported_hint()
        )
    found = router_recorder(model_class)
    if found is None:
        raise ModelError(
            f"{arch} is a dense model: it has no Mixture-of-Experts layer to route through; "
            "point {model} at an MoE checkpoint (" + _supported_hint() + ")"
        )
    if found[1] != 0 or getattr(config, "is_encoder_decoder", False):
        raise ModelError(f"{arch} routes in a way Polyroute cannot capture yet; " + _supported_hint())
    return generic_adapter(arch, config)
