"""Small random MoE checkpoints of every supported family, built offline from their configs.

Tests and benchmarks use them in place of downloaded models: `build_tiny_model("qwen3_moe", dir)`
writes a real transformers folder (config, safetensors weights, a byte-level BPE tokenizer with a
chat template) that every part of Polyroute loads exactly like a real checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SAMPLE_TEXT = (
    "The weather is lovely today, and the children are playing in the park.",
    "Das Wetter ist heute schön, und die Kinder spielen im Park.",
    "Il fait beau aujourd'hui et les enfants jouent dans le parc.",
    "El clima está agradable hoy y los niños juegan en el parque.",
    "Сегодня прекрасная погода, и дети играют в парке.",
    "今日は天気が良く、子供たちは公園で遊んでいます。",
    "今天天气很好，孩子们在公园里玩。",
    "اليوم الطقس جميل والأطفال يلعبون في الحديقة.",
    "आज मौसम सुहावना है और बच्चे पार्क में खेल रहे हैं।",
    "আজ আবহাওয়া চমৎকার, এবং শিশুরা পার্কে খেলছে।",
    "Σήμερα ο καιρός είναι υπέροχος και τα παιδιά παίζουν στο πάρκο.",
    "오늘은 날씨가 좋고 아이들이 공원에서 놀고 있습니다.",
)

# The MoE settings of each family at toy size; dense layers where the family has them.
FAMILY_CONFIGS: dict[str, dict[str, Any]] = {
    "qwen2_moe": {"moe_intermediate_size": 32, "shared_expert_intermediate_size": 64, "norm_topk_prob": False},
    "qwen3_moe": {"moe_intermediate_size": 32, "norm_topk_prob": True, "head_dim": 16},
    "olmoe": {"norm_topk_prob": False},
    "mixtral": {},
    "phimoe": {},
    "deepseek_v2": {
        "moe_intermediate_size": 32, "n_shared_experts": 1, "first_k_dense_replace": 1, "kv_lora_rank": 16,
        "num_key_value_heads": 4,
        "q_lora_rank": None, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16,
        "topk_method": "group_limited_greedy", "n_group": 4, "topk_group": 2, "routed_scaling_factor": 2.0,
    },
    "deepseek_v3": {
        "moe_intermediate_size": 32, "n_shared_experts": 1, "first_k_dense_replace": 1, "kv_lora_rank": 16,
        "num_key_value_heads": 4,
        "q_lora_rank": 32, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16, "n_group": 4,
        "topk_group": 2, "routed_scaling_factor": 2.5, "norm_topk_prob": True,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
    },
    "glm4_moe": {
        "moe_intermediate_size": 32, "n_shared_experts": 1, "first_k_dense_replace": 1, "n_group": 2,
        "topk_group": 1, "routed_scaling_factor": 1.5, "norm_topk_prob": True, "head_dim": 16,
    },
    "dots1": {
        "moe_intermediate_size": 32, "n_shared_experts": 1, "first_k_dense_replace": 1, "n_group": 2,
        "topk_group": 1, "routed_scaling_factor": 1.5, "norm_topk_prob": False, "head_dim": 16,
    },
    "gpt_oss": {"head_dim": 16, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}},
    "granitemoe": {},
    "flex_olmo": {},  # no adapter of its own: it exercises the generic path
}  # fmt: skip
_EXPERT_KEYS = {
    "qwen2_moe": "num_experts", "qwen3_moe": "num_experts", "olmoe": "num_experts",
    "flex_olmo": "num_experts", "deepseek_v2": "n_routed_experts", "deepseek_v3": "n_routed_experts",
    "glm4_moe": "n_routed_experts", "dots1": "n_routed_experts",
}  # fmt: skip


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE that prepends `<s>`, with `</s>` as end of text and a small chat template."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    bpe.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bpe.token_to_id("<s>"))]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_config(
    family: str, *, vocab_size: int, layers: int, hidden: int, experts: int, top_k: int, **overrides: Any
) -> Any:
    """A transformers config of `family` at the given size (dense options as the family defines them)."""
    expert_key = _EXPERT_KEYS.get(family, "num_local_experts")
    return AutoConfig.for_model(
        family,
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        **{"num_attention_heads": 4, "num_key_value_heads": 2, **FAMILY_CONFIGS[family], **overrides},
        max_position_embeddings=2048,
        num_experts_per_tok=top_k,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        **{expert_key: experts},
    )


def build_tiny_model(
    family: str,
    out_dir: Path,
    *,
    layers: int = 3,
    hidden: int = 64,
    experts: int = 8,
    top_k: int = 2,
    vocab_size: int = 512,
    seed: int = 0,
    texts: Iterable[str] = SAMPLE_TEXT,
    **overrides: Any,
) -> Path:
    """Write a random `family` model with its tokenizer to `out_dir` and return the folder.

    `overrides` are further config values, such as `moe_intermediate_size`.
    """
    tokenizer = train_tokenizer(texts, vocab_size)
    size = {"layers": layers, "hidden": hidden, "experts": experts, "top_k": top_k}
    config = tiny_config(family, vocab_size=len(tokenizer), **size, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    for name, buffer in model.named_buffers():
        # A random correction bias, so tests see it change the selection (it starts at zero).
        if name.endswith("e_score_correction_bias"):
            buffer.copy_(torch.randn_like(buffer) * 0.05)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
