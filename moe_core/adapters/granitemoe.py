"""Granite-MoE (and its shared-expert variant): top-k of the logits, then softmax over the k chosen."""

from moe_core.adapters.gpt_oss import ADAPTER as GPT_OSS

ADAPTER = GPT_OSS.derive(
    family="granitemoe",
    architectures=("GraniteMoeForCausalLM", "GraniteMoeSharedForCausalLM"),
    shared_experts=lambda config: int(getattr(config, "shared_intermediate_size", 0) > 0),
)
