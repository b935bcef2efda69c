"""An evaluation as a background job of the app (the Evaluate page's): `polyroute.workflows.evaluate`
(what `polyroute eval` runs) in a thread, writing its run through the app's shared store.

A `RemoteBackend` in the request's `model` belongs to the job from the start: the job closes it
when it ends, or when `start_job` refuses it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from polyroute.background import Job, JobState
from polyroute.workflows.evaluate import EvalOutcome, EvalRequest, run_evaluation
from store import SharedStore, Store


@dataclass(frozen=True, kw_only=True)
class EvaluationState(JobState[EvalOutcome]):
    """Where an evaluation stands: `stage` is loading, generating, done, failed or cancelled; `done`
    of `total` answers (every item in every language, once per variant)."""

    done: int = 0
    total: int = 0

    @property
    def fraction(self) -> float:
        return min(self.done / self.total, 1.0) if self.total else 0.0

    @property
    def text(self) -> str:
        if self.stage == "loading":
            return f"Loading the model and the benchmark … {self.seconds:.0f} s"
        return f"Run {self.run_id}: {self.done:,} of {self.total:,} answers · {self.seconds:.0f} s"


class EvaluationJob(Job[EvaluationState]):
    """An evaluation in its own thread, writing its run through the app's shared store."""

    kind, what = "evaluation", "an evaluation"

    def __init__(self, store: SharedStore, request: EvalRequest) -> None:
        super().__init__(store, EvaluationState())
        self.request = request

    def work(self, store: Store) -> EvalOutcome:
        try:
            return run_evaluation(self.request, self._progress, store=store)
        finally:
            self.release()

    def release(self) -> None:
        """Close a server's client: it was made for this job alone (`start_job` calls this too when it refuses
        the job)."""
        close = getattr(self.request.model, "close", None)
        if close is not None:
            close()

    def _progress(self, run_id: int, total: int) -> Callable[[int], None]:
        self._update(stage="generating", run_id=run_id, total=total)

        def advance(n: int) -> None:  # after each batch of answers
            self._update(done=self.snapshot().done + n)
            self._stop_if_cancelled()

        return advance
