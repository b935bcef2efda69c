"""PhiMoE: sparsemixer (top-1, then top-1 of the rest, each weighted by a masked softmax)."""

from moe_core.adapters.base import MoEAdapter

ADAPTER = MoEAdapter(family="phimoe", architectures=("PhimoeForCausalLM",), scoring_rule="sparsemixer")
