"""The generic path: any transformers (>= 5) decoder MoE whose router returns
`(router_logits [T, E], top_k_weights [T, k], top_k_index [T, k])`, the pattern most families share.

Its numbers come from the common config keys, and the captured ids and weights are exactly what
its router returned; only the scoring rule is unnamed (recorded as `model-defined`).
"""

from typing import Any

from moe_core.adapters.base import MoEAdapter
from moe_core.records import SOFT_SIGMOID_NORMALISED, SOFT_SOFTMAX


def generic_adapter(architecture: str, config: Any) -> MoEAdapter:
    sigmoid = getattr(config, "scoring_func", "softmax") == "sigmoid"
    return MoEAdapter(
        family=f"generic:{getattr(config, 'model_type', architecture)}",
        architectures=(architecture,),
        scoring_rule="model-defined",
        scale_key="routed_scaling_factor",
        soft_rule=SOFT_SIGMOID_NORMALISED if sigmoid else SOFT_SOFTMAX,
        n_experts_keys=("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"),
        top_k_keys=("num_experts_per_tok", "moe_k", "moe_topk", "top_k"),
        shared_experts=lambda cfg: int(getattr(cfg, "n_shared_experts", 0) or 0),
    )
