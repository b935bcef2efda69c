"""GPT-OSS: top-k of the raw logits (router has a bias), then softmax over the k chosen."""

from moe_core.adapters.base import MoEAdapter

ADAPTER = MoEAdapter(family="gpt_oss", architectures=("GptOssForCausalLM",), scoring_rule="topk->softmax")
