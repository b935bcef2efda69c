"""Qwen2-MoE: Qwen3-MoE's routing plus one always-on, gated shared expert (never in the top-k)."""

from moe_core.adapters.qwen3_moe import ADAPTER as QWEN3_MOE

ADAPTER = QWEN3_MOE.derive(
    family="qwen2_moe",
    architectures=("Qwen2MoeForCausalLM",),
    shared_experts=lambda config: int(getattr(config, "shared_expert_intermediate_size", 0) > 0),
)
