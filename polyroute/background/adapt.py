"""An adaptation (RISE training) as a background job of the app (the Adapt page's):
`polyroute.workflows.adapt` in a thread, writing its run through the app's shared store.
"""

from __future__ import annotations

from dataclasses import dataclass

from moe_core.adapt import AdaptProgress
from polyroute.background import Job, JobState
from polyroute.workflows.adapt import AdaptOutcome, AdaptRequest, start_adaptation
from store import SharedStore, Store

STAGES = {
    "loading": "Loading the model",
    "before": "Held-out loss before training",
    "training": "Training the selected experts",
    "after": "Held-out loss after training",
}


@dataclass(frozen=True, kw_only=True)
class AdaptationState(JobState[AdaptOutcome]):
    """Where an adaptation stands: `stage` is loading, before, training, after, done, failed or
    cancelled; `done` of `total` batches (evaluation) or steps (training)."""

    done: int = 0
    total: int = 0
    loss: float | None = None  # the latest training step's loss
    seconds_left: float | None = None  # the job's estimate, from the step and batch times measured so far

    @property
    def fraction(self) -> float:
        return min(self.done / self.total, 1.0) if self.total else 0.0

    @property
    def text(self) -> str:
        """The progress bar's words: the stage, how far it got, and the training loss."""
        words = f"{STAGES.get(self.stage, self.stage)}"
        if self.stage != "loading" and self.total:
            unit = "step" if self.stage == "training" else "batch"
            words += f": {unit} {self.done} of {self.total}"
        if self.stage == "training" and self.loss is not None:
            words += f" · loss {self.loss:.3f}"
        left = f" · about {self.seconds_left:.0f} s left" if self.seconds_left is not None else ""
        return f"{words} · {self.seconds:.0f} s{left}"


class AdaptationJob(Job[AdaptationState]):
    """An adaptation in its own thread, writing its run through the app's shared store."""

    kind, what = "adaptation", "an adaptation"

    def __init__(self, store: SharedStore, request: AdaptRequest) -> None:
        super().__init__(store, AdaptationState())
        self.request = request

    def work(self, store: Store) -> AdaptOutcome:
        return start_adaptation(self.request, self._progress, store=store)

    def _progress(self, step: AdaptProgress) -> None:
        loss = step.loss if step.loss is not None else self.snapshot().loss
        self._update(stage=step.stage, done=step.done, total=step.total, loss=loss, seconds_left=step.seconds_left)
        self._stop_if_cancelled()  # told between batches and training steps
