"""Qwen3-MoE: softmax over all experts, top-k, renormalised when `norm_topk_prob` is set."""

from moe_core.adapters.base import MoEAdapter

ADAPTER = MoEAdapter(
    family="qwen3_moe",
    architectures=("Qwen3MoeForCausalLM",),
    scoring_rule="softmax->topk",
    renorm_key="norm_topk_prob",
)
