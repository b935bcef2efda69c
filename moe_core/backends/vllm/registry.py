"""Which in-tree vLLM MoE models Polyroute makes steerable, and the plugin that registers them.

`register()` is the `vllm.general_plugins` entry point (pyproject.toml). vLLM calls it in every
process it starts (the front end, the engine core and each worker), so it must be cheap and safe
to call again: it only hands vLLM's `ModelRegistry` lazy "module:Class" strings, and the model
module (models.py, which imports vLLM's model code) is imported by vLLM when it builds a model.

The table is plain data: tests check it, and the backend reads which gate each family names,
without vLLM installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from moe_core.errors import ModelError

MODELS_MODULE = "moe_core.backends.vllm.models"


@dataclass(frozen=True, kw_only=True)
class SteerableModel:
    """One in-tree vLLM model class and its steerable subclass in models.py.

    `gate` is the router gate's name inside a decoder layer (`model.layers.<i>.<gate>`): the
    linear layer whose output is the router logits in vLLM's implementation of the family.
    """

    arch: str
    vllm_module: str
    vllm_class: str
    gate: str

    @property
    def steerable_class(self) -> str:
        return f"Steerable{self.vllm_class}"

    @property
    def class_path(self) -> str:
        """What `ModelRegistry.register_model` is given: imported only when vLLM builds the model."""
        return f"{MODELS_MODULE}:{self.steerable_class}"


STEERABLE: dict[str, SteerableModel] = {
    model.arch: model
    for model in (
        SteerableModel(
            arch="Qwen3MoeForCausalLM",
            vllm_module="vllm.model_executor.models.qwen3_moe",
            vllm_class="Qwen3MoeForCausalLM",
            gate="mlp.gate",
        ),
        SteerableModel(
            arch="OlmoeForCausalLM",
            vllm_module="vllm.model_executor.models.olmoe",
            vllm_class="OlmoeForCausalLM",
            gate="mlp.gate",
        ),
        SteerableModel(
            arch="MixtralForCausalLM",
            vllm_module="vllm.model_executor.models.mixtral",
            vllm_class="MixtralForCausalLM",
            gate="block_sparse_moe.gate",
        ),
        SteerableModel(
            arch="GptOssForCausalLM",
            vllm_module="vllm.model_executor.models.gpt_oss",
            vllm_class="GptOssForCausalLM",
            gate="mlp.router",
        ),
        SteerableModel(
            arch="DeepseekV2ForCausalLM",
            vllm_module="vllm.model_executor.models.deepseek_v2",
            vllm_class="DeepseekV2ForCausalLM",
            gate="mlp.gate",
        ),
        SteerableModel(
            arch="DeepseekV3ForCausalLM",
            vllm_module="vllm.model_executor.models.deepseek_v2",
            vllm_class="DeepseekV3ForCausalLM",
            gate="mlp.gate",
        ),
    )
}


class ModelRegistryLike(Protocol):
    """The part of vLLM's `ModelRegistry` the plugin uses."""

    def register_model(self, model_arch: str, model_cls: str) -> None: ...


def steerable(arch: str) -> SteerableModel:
    """The steerable model of `arch`; ModelError for an architecture the plugin does not cover."""
    model = STEERABLE.get(arch)
    if model is None:
        raise ModelError(
            f"the vLLM backend cannot steer {arch}: steerable architectures are {', '.join(STEERABLE)}; "
            "use {backend} hf for other MoE models"
        )
    return model


def register_steerable(registry: ModelRegistryLike, archs: tuple[str, ...] | None = None) -> list[str]:
    """Register the steerable subclass of each of `archs` (default: all) with `registry`.

    Registering under the in-tree name makes vLLM build the steerable class for every checkpoint
    of that architecture; with no plan its hooks return the router's logits unchanged.
    """
    chosen = [steerable(arch) for arch in (archs if archs is not None else tuple(STEERABLE))]
    for model in chosen:
        registry.register_model(model.arch, model.class_path)
    return [model.arch for model in chosen]


def register() -> None:
    """The `vllm.general_plugins` entry point: register every steerable model with vLLM."""
    from vllm import ModelRegistry

    register_steerable(ModelRegistry)
