"""What an adaptation is asked to do and what it reports, without torch: the app's pages and the CLI
build these before any model loads."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from moe_core.errors import PolyrouteError


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """How the subnetwork is trained; every value is recorded with the run."""

    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 8
    max_steps: int | None = None  # stop early after this many optimizer steps
    weight_decay: float = 0.0  # decoupled (AdamW), on the selected slices only
    max_grad_norm: float = 1.0
    seed: int = 0

    def check(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or (self.max_steps is not None and self.max_steps < 1):
            raise PolyrouteError("{epochs}, {batch_size} and {max_steps} must be at least 1")
        if not (0 < self.lr < 1) or self.weight_decay < 0 or self.max_grad_norm <= 0:
            raise PolyrouteError(
                "{lr} must lie in (0, 1) and weight decay be >= 0; "
                f"got lr={self.lr}, weight_decay={self.weight_decay}"
            )


@dataclass(frozen=True, kw_only=True)
class AdaptProgress:
    """Where an adaptation stands: `stage` is before (evaluating), training or after (evaluating)."""

    stage: str
    done: int  # batches (evaluation) or optimizer steps (training) so far
    total: int
    loss: float | None = None  # training: the latest step's mean token loss
    seconds_left: float | None = None  # the whole job's, from the times measured so far (None: not yet known)


ProgressCallback = Callable[[AdaptProgress], None]


@dataclass(frozen=True, kw_only=True)
class LanguageLoss:
    lang: str
    loss: float  # mean next-token cross-entropy, nats per token
    n_tokens: int  # tokens predicted

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)


@dataclass(frozen=True, kw_only=True)
class TrainingLog:
    steps: int
    n_texts: int
    first_loss: float
    last_loss: float
    seconds: float
