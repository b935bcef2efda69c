"""The built-in task's model score: each language's mean next-token loss (nats per token) and
perplexity on its texts, unsteered or under a steering plan (docs/methods.md, "RISE": the same
held-out loss the Adapt page measures before and after training, so the numbers compare).

It reads the model's own probabilities, so it needs the model in this process (a checkpoint folder,
`HFBackend`); a server (`polyroute serve`) only generates. torch loads when a loss is measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from functools import cache
from typing import Any

from moe_core.adapt.settings import LanguageLoss
from moe_core.backends.base import Backend
from moe_core.errors import PolyrouteError
from moe_core.steering.plan import SteeringPlan

NEEDS_LOCAL_MODEL = (
    "task heldout measures the model's own loss, which needs the model on this machine: "
    "pass model as a checkpoint folder, not a server"
)


def can_measure_loss(backend: Backend) -> bool:
    """Whether `backend` holds its model in this process (only then can its loss be measured)."""
    return getattr(backend, "model", None) is not None


@cache
def _tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source)


def text_losses(
    backend: Backend, texts: Mapping[str, Sequence[str]], plan: SteeringPlan | None = None
) -> list[LanguageLoss]:
    """Mean token loss of each language's `texts` (`<s> text </s>`, as the demo model trained),
    in the order of `texts`, with the routers steered by `plan` when given."""
    from moe_core.adapt.training import language_losses
    from moe_core.steering.hooks import Steering

    if not can_measure_loss(backend):
        raise PolyrouteError(NEEDS_LOCAL_MODEL)
    model = backend.model  # type: ignore[attr-defined]  # HFBackend: can_measure_loss said so
    with Steering(model, plan) if plan is not None else nullcontext():
        return language_losses(model, _tokenizer(backend.info().source), texts)
