"""Steerable subclasses of vLLM's in-tree MoE models (imported by vLLM, on a GPU machine only).

Each class is the in-tree model plus steering buffers and a hook on every MoE layer's router gate
(steer.py), installed once the model is built. Nothing else changes: weights load as before (the
buffers are not parameters), vLLM's own routing, fused kernels, CUDA graphs and routed-experts
capture run as they do in-tree, and with no plan loaded the logits pass through unchanged.
registry.py names these classes to vLLM's `ModelRegistry` as lazy "module:Class" strings, so
this module, which imports vLLM's model code, is imported only when vLLM builds a model.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn
from vllm.model_executor.models.deepseek_v2 import DeepseekV2ForCausalLM, DeepseekV3ForCausalLM
from vllm.model_executor.models.gpt_oss import GptOssForCausalLM
from vllm.model_executor.models.mixtral import MixtralForCausalLM
from vllm.model_executor.models.olmoe import OlmoeForCausalLM
from vllm.model_executor.models.qwen3_moe import Qwen3MoeForCausalLM

from moe_core.backends.vllm.registry import STEERABLE
from moe_core.backends.vllm.steer import install_steering


class _Steerable(nn.Module):
    """Mixed in ahead of an in-tree model class: build it, then give its router gates steering state."""

    polyroute_arch: ClassVar[str]

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        install_steering(self, STEERABLE[self.polyroute_arch].gate)


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
