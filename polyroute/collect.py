"""Collections the app runs: a trace run in a background thread of the app's process, writing
through the app's shared store while every page keeps reading it.

One collection per store at a time, kept in a process-wide registry, so a user can leave the
Collect page (or open it in another tab) and still find the job and its progress. The thread
never touches Streamlit; the page polls `Collection.snapshot()`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from moe_core.errors import PolyrouteError
from moe_core.pipeline import Progress
from polyroute.tracing import TraceOutcome, TraceRequest, start_trace
from store import SharedStore, StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CollectionState:
    """Where a collection stands: `stage` is loading, tracing, done or failed."""

    stage: str = "loading"
    run_id: int | None = None
    sequences_done: int = 0
    sequences_total: int = 0
    tokens_done: int = 0
    error: str = ""
    outcome: TraceOutcome | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def running(self) -> bool:
        return self.stage in ("loading", "tracing")

    @property
    def fraction(self) -> float:
        return self.sequences_done / self.sequences_total if self.sequences_total else 0.0

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started


class Collection:
    """A trace run in progress in its own thread; `snapshot()` reads its state at any time."""

    def __init__(self, store: SharedStore, request: TraceRequest) -> None:
        self.request = request
        self._store = store
        self._lock = threading.Lock()
        self._state = CollectionState()
        self._thread = threading.Thread(target=self._run, name=f"collect {store.path}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def snapshot(self) -> CollectionState:
        with self._lock:
            return self._state

    def wait(self, timeout: float | None = None) -> CollectionState:
        self._thread.join(timeout)
        return self.snapshot()

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._state = replace(self._state, **changes)

    def _progress(self, run_id: int, sequences: int, tokens: int) -> Progress:
        self._update(stage="tracing", run_id=run_id, sequences_total=sequences)

        def advance(done_sequences: int, done_tokens: int) -> None:
            state = self.snapshot()
            self._update(
                sequences_done=state.sequences_done + done_sequences, tokens_done=state.tokens_done + done_tokens
            )

        return advance

    def _run(self) -> None:
        try:
            with self._store.writing() as store:
                outcome = start_trace(self.request, self._progress, store=store)
            self._update(stage="done", outcome=outcome, run_id=outcome.run_id, finished=time.monotonic())
        except (PolyrouteError, StoreError) as error:
            self._update(stage="failed", error=str(error), finished=time.monotonic())
        except Exception as error:  # a bug: keep the app serving, say what broke, log the details
            log.exception("collection into %s failed", self._store.path)
            self._update(stage="failed", error=f"{type(error).__name__}: {error}", finished=time.monotonic())


_collections: dict[Path, Collection] = {}
_registry = threading.Lock()


def current_collection(store: SharedStore) -> Collection | None:
    """The latest collection of `store` in this process (running or finished), if any."""
    with _registry:
        return _collections.get(store.path)


def start_collection(store: SharedStore, request: TraceRequest) -> Collection:
    """Start tracing `request` into `store` in the background; refused while another one runs."""
    if not store.writable:
        raise StoreError(f"this app cannot write {store.path}: {store.why_read_only}")
    with _registry:
        running = _collections.get(store.path)
        if running is not None and running.snapshot().running:
            raise PolyrouteError(
                f"a collection into {store.path} is already running (run {running.snapshot().run_id}); "
                "wait for it to finish"
            )
        collection = Collection(store, request)
        _collections[store.path] = collection
        collection.start()
    return collection
