"""OLMoE: softmax over all experts, top-k, renormalised when `norm_topk_prob` is set."""

from moe_core.adapters.qwen3_moe import ADAPTER as QWEN3_MOE

ADAPTER = QWEN3_MOE.derive(family="olmoe", architectures=("OlmoeForCausalLM",))
