"""dots.llm1: built on DeepSeek-V3's router (sigmoid, correction bias, group-limited top-k, scaling)."""

from moe_core.adapters.deepseek_v3 import ADAPTER as DEEPSEEK_V3

ADAPTER = DEEPSEEK_V3.derive(family="dots1", architectures=("Dots1ForCausalLM",))
