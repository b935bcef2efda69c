"""A trace run as a background job of the app (the Collect page's): `polyroute.workflows.trace`
in a thread, writing through the app's shared store while every page keeps reading it.

The page polls `TraceJob.snapshot()`; `start_job` refuses it while another job writes the store.
"""

from __future__ import annotations

from dataclasses import dataclass

from moe_core.pipeline import Progress
from polyroute.background import Job, JobState
from polyroute.workflows.trace import TraceOutcome, TraceRequest, start_trace
from store import SharedStore, Store


@dataclass(frozen=True, kw_only=True)
class TraceState(JobState[TraceOutcome]):
    """Where a trace job stands: `stage` is loading, tracing, done, failed or cancelled."""

    sequences_done: int = 0
    sequences_total: int = 0
    tokens_done: int = 0

    @property
    def fraction(self) -> float:
        return self.sequences_done / self.sequences_total if self.sequences_total else 0.0


class TraceJob(Job[TraceState]):
    """A trace run in progress in its own thread; `snapshot()` reads its state at any time."""

    kind, what = "collection", "a collection"
    resumable = True

    def __init__(self, store: SharedStore, request: TraceRequest) -> None:
        super().__init__(store, TraceState())
        self.request = request

    def work(self, store: Store) -> TraceOutcome:
        return start_trace(self.request, self._progress, store=store)

    def _progress(self, run_id: int, sequences: int, tokens: int) -> Progress:
        self._update(stage="tracing", run_id=run_id, sequences_total=sequences)

        def advance(done_sequences: int, done_tokens: int) -> None:  # after each stored group of batches
            state = self.snapshot()
            self._update(
                sequences_done=state.sequences_done + done_sequences, tokens_done=state.tokens_done + done_tokens
            )
            self._stop_if_cancelled()

        return advance
