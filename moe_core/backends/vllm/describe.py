"""What the vLLM backend tells the store about its model, without loading a weight or vLLM.

vLLM holds the real model inside its workers, so the `ModelInfo` is built on the host the way the
hf backend builds it: the family adapter reads the config, and the MoE layers are found by the
same router search on a weightless (meta-device) transformers model. Both backends therefore
give the store identical `models` rows for one checkpoint (tests/test_vllm.py checks it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from moe_core.adapters import find_routers, resolve_adapter
from moe_core.backends.hf import config_hash, load_config
from moe_core.demo import default_model_id
from moe_core.records import ModelInfo


def describe(model_dir: Path, *, model_id: str | None = None) -> tuple[Any, ModelInfo]:
    """The transformers config and the `ModelInfo` of the checkpoint in `model_dir`.

    Raises ModelError for a missing folder or config, a dense model or an unknown architecture.
    """
    config = load_config(model_dir)
    adapter = resolve_adapter(config)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    return config, ModelInfo(
        model_id=model_id or default_model_id(model_dir),
        arch=config.architectures[0],
        family=adapter.family,
        source=str(model_dir),
        n_layers=int(config.num_hidden_layers),
        moe_layers=tuple(site.layer for site in find_routers(skeleton)),
        n_experts=adapter.n_experts(config),
        top_k=adapter.top_k(config),
        n_shared_experts=adapter.shared_experts(config),
        scoring=adapter.scoring(config),
        soft_rule=adapter.soft_rule,
        weight_bound=adapter.weight_bound(config),
        config_hash=config_hash(model_dir),
    )
