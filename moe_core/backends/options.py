"""How a backend loads and feeds a model, kept apart from the backends so that building a request
(the app's Collect page, the CLI's argument parsing) never imports torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class HFOptions:
    """How to load and feed the model. `dtype="auto"`: the checkpoint's dtype on CUDA, float32 on CPU."""

    device: str = "cpu"
    dtype: str = "auto"
    max_tokens: int = 512
    template: str = "plain"
    model_id: str | None = None
