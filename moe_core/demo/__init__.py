"""The embedded default model: a tiny multilingual Qwen3-MoE trained here, on the built-in corpus.

`DEMO_MODEL_DIR` holds the shipped checkpoint (bf16 safetensors, config, tokenizer) and
`training.json`, the record of how it was trained (corpus hash, seed, steps, the loss curve) so
anyone can retrain it with `python -m moe_core.demo.train` and compare. It lets a user with no GPU
and no download see real routing structure: trained on parallel user-interface sentences in 34
languages, it routes non-Latin scripts away from English while an untrained model does not.
"""

from __future__ import annotations

from pathlib import Path

DEMO_MODEL_DIR = Path(__file__).parent / "model"
DEMO_MODEL_ID = "polyroute-demo"
TRAINING_RECORD = "training.json"


def default_model_id(folder: Path) -> str:
    """The name a checkpoint gets in the store when none is given: its folder's name, except the
    demo model's folder (named `model`), which is the demo model wherever it is loaded."""
    return DEMO_MODEL_ID if folder.resolve() == DEMO_MODEL_DIR.resolve() else folder.name


__all__ = ["DEMO_MODEL_DIR", "DEMO_MODEL_ID", "TRAINING_RECORD", "default_model_id"]
