"""Steerable subclasses of vLLM's in-tree MoE models (imported by vLLM when it builds one).

Each class is the in-tree model plus steering buffers, routing capture and a hook on every MoE
layer's router gate (steer.py, capture.py), installed once the model is built. Nothing else
changes: weights load as before (the buffers are not parameters), vLLM's own routing, fused
kernels, CUDA graphs and routed-experts output run as they do in-tree, and with no plan loaded
the logits pass through unchanged. The engine's `additional_config` can turn the capture off
(options.CAPTURE_SETTING), for a benchmark's baseline.
registry.py names these classes to vLLM's `ModelRegistry` as lazy "module:Class" strings, so
this module, which imports vLLM's model code, is imported only when vLLM builds a model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import nn
from vllm.model_executor.models.deepseek_v2 import DeepseekV2ForCausalLM, DeepseekV3ForCausalLM
from vllm.model_executor.models.gpt_oss import GptOssForCausalLM
from vllm.model_executor.models.mixtral import MixtralForCausalLM
from vllm.model_executor.models.olmoe import OlmoeForCausalLM
from vllm.model_executor.models.qwen3_moe import Qwen3MoeForCausalLM

from moe_core.adapters import resolve_adapter
from moe_core.backends.vllm.capture import GateRecorder
from moe_core.backends.vllm.options import CAPTURE_SETTING
from moe_core.backends.vllm.registry import STEERABLE
from moe_core.backends.vllm.steer import install_steering
from moe_core.steering.scoring import rule_for


class _Steerable(nn.Module):
    """Mixed in ahead of an in-tree model class: build it, then give its router gates steering state."""

    polyroute_arch: ClassVar[str]

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        install_steering(self, STEERABLE[self.polyroute_arch].gate, _recorders(vllm_config))


def _recorders(vllm_config: Any) -> Callable[[int, int, Any], GateRecorder] | None:
    """What builds each gate's routing capture: the family's rule, one row per batched token."""
    if not (vllm_config.additional_config or {}).get(CAPTURE_SETTING, True):
        return None
    config = vllm_config.model_config.hf_config
    rule = rule_for(resolve_adapter(config), config)
    capacity = int(vllm_config.scheduler_config.max_num_batched_tokens)
    return lambda layer, n_experts, bias: GateRecorder(layer, rule, n_experts, capacity, bias)


class SteerableQwen3MoeForCausalLM(_Steerable, Qwen3MoeForCausalLM):
    polyroute_arch = "Qwen3MoeForCausalLM"


class SteerableOlmoeForCausalLM(_Steerable, OlmoeForCausalLM):
    polyroute_arch = "OlmoeForCausalLM"


class SteerableMixtralForCausalLM(_Steerable, MixtralForCausalLM):
    polyroute_arch = "MixtralForCausalLM"


class SteerableGptOssForCausalLM(_Steerable, GptOssForCausalLM):
    polyroute_arch = "GptOssForCausalLM"


class SteerableDeepseekV2ForCausalLM(_Steerable, DeepseekV2ForCausalLM):
    polyroute_arch = "DeepseekV2ForCausalLM"


class SteerableDeepseekV3ForCausalLM(_Steerable, DeepseekV3ForCausalLM):
    polyroute_arch = "DeepseekV3ForCausalLM"
