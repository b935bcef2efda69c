"""A model folder's identity in the store, read without loading the model (or importing torch):
the digest of its config.json (`models.config_hash`)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def config_hash(model_dir: Path) -> str:
    """The model's identity in the store (`models.config_hash`): a digest of its config.json."""
    return hashlib.sha256((model_dir / "config.json").read_bytes()).hexdigest()[:16]
