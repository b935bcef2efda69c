"""Collections the app runs: a trace run as a background job of the app's process (`polyroute.jobs`),
writing through the app's shared store while every page keeps reading it.

One job writes a store at a time, so a collection waits for nothing and is refused while another
collection or an adaptation writes the same store. The page polls `Collection.snapshot()`.
"""

from __future__ import annotations

from dataclasses import dataclass

from moe_core.pipeline import Progress
from polyroute.jobs import Job, JobState, current_job, start_job
from polyroute.tracing import TraceOutcome, TraceRequest, start_trace
from store import SharedStore, Store


@dataclass(frozen=True, kw_only=True)
class CollectionState(JobState[TraceOutcome]):
    """Where a collection stands: `stage` is loading, tracing, done or failed."""

    sequences_done: int = 0
    sequences_total: int = 0
    tokens_done: int = 0

    @property
    def fraction(self) -> float:
        return self.sequences_done / self.sequences_total if self.sequences_total else 0.0


class Collection(Job[CollectionState]):
    """A trace run in progress in its own thread; `snapshot()` reads its state at any time."""

    kind, what = "collection", "a collection"

    def __init__(self, store: SharedStore, request: TraceRequest) -> None:
        super().__init__(store, CollectionState())
        self.request = request

    def work(self, store: Store) -> TraceOutcome:
        return start_trace(self.request, self._progress, store=store)

    def _progress(self, run_id: int, sequences: int, tokens: int) -> Progress:
        self._update(stage="tracing", run_id=run_id, sequences_total=sequences)

        def advance(done_sequences: int, done_tokens: int) -> None:
            state = self.snapshot()
            self._update(
                sequences_done=state.sequences_done + done_sequences, tokens_done=state.tokens_done + done_tokens
            )

        return advance


def current_collection(store: SharedStore) -> Collection | None:
    """The latest collection of `store` in this process (running or finished), if any."""
    found = current_job(store, Collection.kind)
    assert found is None or isinstance(found, Collection)
    return found


def start_collection(store: SharedStore, request: TraceRequest) -> Collection:
    """Start tracing `request` into `store` in the background; refused while another job writes it."""
    return start_job(store, Collection(store, request))
