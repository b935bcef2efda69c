"""Adapter resolution: each family by its architecture, the generic path, and errors that name the problem."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from moe_core.adapters import families, resolve_adapter
from moe_core.backends.hf import HFBackend
from moe_core.errors import ModelError
from moe_core.tiny import FAMILY_CONFIGS, build_tiny_model


def _config(arch: str, **values) -> SimpleNamespace:
    return SimpleNamespace(architectures=[arch], **values)


@pytest.mark.parametrize(
    ("arch", "values", "family", "scoring", "soft"),
    [
        ("Qwen3MoeForCausalLM", {"norm_topk_prob": True}, "qwen3_moe", "softmax->topk->renorm", "softmax"),
        ("Qwen2MoeForCausalLM", {"norm_topk_prob": False}, "qwen2_moe", "softmax->topk", "softmax"),
        ("MixtralForCausalLM", {}, "mixtral", "softmax->topk->renorm", "softmax"),
        ("GptOssForCausalLM", {}, "gpt_oss", "topk->softmax", "softmax"),
        ("PhimoeForCausalLM", {}, "phimoe", "sparsemixer", "softmax"),
        ("DeepseekV2ForCausalLM", {"topk_method": "group_limited_greedy", "routed_scaling_factor": 16.0},
         "deepseek_v2", "softmax->group_topk*16", "softmax"),
        ("DeepseekV3ForCausalLM", {"norm_topk_prob": True, "routed_scaling_factor": 2.5},
         "deepseek_v3", "sigmoid+bias->group_topk->renorm*2.5", "sigmoid_normalised"),
        ("Glm4MoeForCausalLM", {"norm_topk_prob": True, "routed_scaling_factor": 1.0},
         "glm4_moe", "sigmoid+bias->group_topk->renorm", "sigmoid_normalised"),
        ("FlexOlmoForCausalLM", {}, "generic:FlexOlmoForCausalLM", "model-defined", "softmax"),
    ],
)  # fmt: skip
def test_each_family_states_its_routing_rule(arch, values, family, scoring, soft):
    adapter = resolve_adapter(_config(arch, **values))
    assert (adapter.family, adapter.scoring(_config(arch, **values)), adapter.soft_rule) == (family, scoring, soft)


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("LlamaForCausalLM", "LlamaForCausalLM is a dense model"),
        ("Llama4ForCausalLM", "routes in a way Polyroute cannot capture yet"),
        ("SwitchTransformersForConditionalGeneration", "cannot capture yet"),
        ("NotARealForCausalLM", "unknown to transformers"),
    ],
)
def test_unhandled_architectures_are_named_with_the_supported_ones(arch, message):
    with pytest.raises(ModelError, match=message) as raised:
        resolve_adapter(_config(arch))
    assert "supported: Qwen2-MoE, Qwen3-MoE, OLMoE, Mixtral, PhiMoE, DeepSeek-V2, DeepSeek-V3" in str(raised.value)


def test_a_config_without_architectures_says_what_to_add():
    with pytest.raises(ModelError, match='add "architectures"'):
        resolve_adapter(SimpleNamespace(architectures=None))


def test_a_half_understood_config_names_the_missing_key():
    adapter = resolve_adapter(_config("Qwen3MoeForCausalLM"))
    with pytest.raises(ModelError, match=r"experts per token \(top-k\): expected one of num_experts_per_tok"):
        adapter.top_k(_config("Qwen3MoeForCausalLM", num_experts=8))


def test_a_moe_config_whose_layers_are_all_dense_is_refused(tmp_path):
    folder = build_tiny_model("qwen3_moe", tmp_path / "all-dense", layers=2, mlp_only_layers=[0, 1])
    config = json.loads((folder / "config.json").read_text())
    assert config["mlp_only_layers"] == [0, 1]
    with pytest.raises(ModelError, match="has no MoE layer with this config"):
        HFBackend(folder)


def test_the_family_registry_is_keyed_by_each_adapters_own_architectures():
    registry = families()
    for arch, adapter in registry.items():
        assert arch in adapter.architectures and resolve_adapter(_config(arch)) is adapter
    # Every family has a tiny checkpoint the capture and steering tests run over (flex_olmo: the generic path).
    assert {adapter.family for adapter in registry.values()} == set(FAMILY_CONFIGS) - {"flex_olmo"}


def test_every_architecture_vllm_steers_is_a_registered_family():
    # The steerable table is plain data (vLLM itself loads only when a model registers), so this runs without vLLM.
    from moe_core.backends.vllm.registry import STEERABLE

    assert set(STEERABLE) <= set(families()), set(STEERABLE) - set(families())
