"""DeepSeek-V3: sigmoid scores; `e_score_correction_bias` changes which experts are chosen (not their
weights); group-limited top-k; optional renormalisation; times the routed scaling factor. Shared
experts are always on. The soft distribution normalises each token's sigmoid scores to sum 1."""

from moe_core.adapters.base import MoEAdapter
from moe_core.adapters.deepseek_v2 import ADAPTER as DEEPSEEK_V2
from moe_core.records import SOFT_SIGMOID_NORMALISED

ADAPTER = MoEAdapter(
    family="deepseek_v3",
    architectures=("DeepseekV3ForCausalLM",),
    scoring_rule="sigmoid+bias->group_topk",
    renorm_key="norm_topk_prob",
    scale_key="routed_scaling_factor",
    soft_rule=SOFT_SIGMOID_NORMALISED,
    shared_experts=DEEPSEEK_V2.shared_experts,
)
