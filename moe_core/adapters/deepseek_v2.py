"""DeepSeek-V2: softmax, top-k (greedy or group-limited greedy), times the routed scaling factor;
`n_shared_experts` always-on shared experts; the first `first_k_dense_replace` layers are dense."""

from typing import Any

from moe_core.adapters.base import MoEAdapter


class DeepseekV2Adapter(MoEAdapter):
    def scoring(self, config: Any) -> str:
        grouped = getattr(config, "topk_method", "greedy") == "group_limited_greedy"
        rule = "softmax->group_topk" if grouped else "softmax->topk"
        return f"{rule}*{self.weight_bound(config):g}"


ADAPTER = DeepseekV2Adapter(
    family="deepseek_v2",
    architectures=("DeepseekV2ForCausalLM",),
    scoring_rule="softmax->topk",
    scale_key="routed_scaling_factor",
    shared_experts=lambda config: int(getattr(config, "n_shared_experts", 0) or 0),
)
