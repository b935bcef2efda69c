"""Mixtral: softmax over all experts, top-k, always renormalised."""

from moe_core.adapters.base import MoEAdapter

ADAPTER = MoEAdapter(
    family="mixtral",
    architectures=("MixtralForCausalLM",),
    scoring_rule="softmax->topk->renorm",
)
