"""Background jobs of the app: a whole job (`polyroute.workflows`: a trace, an evaluation, an
adaptation) in a thread of the app's process, writing through the app's shared store while every
page keeps reading it. The job classes: `trace.TraceJob`, `evaluate.EvaluationJob`,
`adapt.AdaptationJob`; one way to start one (`start_job(store, TraceJob(store, request))`) and one to
find it again (`current_job(store, TraceJob)`); `delete_unwritten_run` deletes a run unless a job
writes it.

Jobs are kept in a process-wide registry by store and kind, so a user can leave a page (or open it
in another tab) and still find the job and its progress. One job at a time writes a store, whatever
its kind: the store has one writing process, and two jobs writing it at once would also race for
the same rows (the model, the corpus) and for the same few CPU cores. A job's thread never touches
Streamlit; pages poll `Job.snapshot()`. A failure becomes the job's `error`, never the app's.
`Job.cancel()` asks a job to stop at its next safe point (between batches or training steps): its
progress callbacks raise `Cancelled` there, the workflow marks its run `cancelled` and keeps what it
stored, whole.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from moe_core.backends import import_model_libraries
from moe_core.errors import Cancelled, FixableError, PolyrouteError
from store import SharedStore, Store, StoreError
from store.queries import get_run
from store.runs import delete_run

log = logging.getLogger(__name__)

DONE, FAILED, CANCELLED = "done", "failed", "cancelled"


class Outcome(Protocol):
    @property
    def run_id(self) -> int: ...


OutcomeT = TypeVar("OutcomeT", bound=Outcome)


@dataclass(frozen=True, kw_only=True)
class JobState(Generic[OutcomeT]):
    """Where a job stands: `stage` is the job's own (loading first), then done, failed or cancelled;
    `cancelling` once the user asked it to stop and it has not reached a safe point yet; `failure` the
    error that failed it (its `error`), for a page to say its parameters as its controls."""

    stage: str = "loading"
    run_id: int | None = None
    error: str = ""
    failure: FixableError | None = None
    outcome: OutcomeT | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    cancelling: bool = False

    @property
    def running(self) -> bool:
        return self.stage not in (DONE, FAILED, CANCELLED)

    @property
    def seconds(self) -> float:
        return (self.finished or time.monotonic()) - self.started


S = TypeVar("S", bound=JobState[Any])


class Job(ABC, Generic[S]):
    """One job in its own thread; `snapshot()` reads its state at any time, `wait()` joins it."""

    kind: ClassVar[str]  # the registry's key beside the store, e.g. "collection"
    what: ClassVar[str]  # how messages name it, e.g. "a collection"
    resumable: ClassVar[bool] = False  # whether a run it left unfinished can be finished later (a trace)

    def __init__(self, store: SharedStore, state: S) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._state = state
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{self.kind} {store.path}", daemon=True)

    def start(self) -> None:
        """Run the job in its thread (`start_job` calls this once it has registered the job)."""
        self._thread.start()

    def release(self) -> None:
        """Let go of what the job was handed for itself alone (a server's client) when it ends or is
        refused; nothing by default."""

    def snapshot(self) -> S:
        with self._lock:
            return self._state

    def wait(self, timeout: float | None = None) -> S:
        self._thread.join(timeout)
        return self.snapshot()

    def cancel(self) -> None:
        """Ask the job to stop at its next safe point; a job that already ended stays as it ended."""
        self._cancel.set()
        with self._lock:
            if self._state.running:
                self._state = replace(self._state, cancelling=True)

    def _stop_if_cancelled(self) -> None:
        """Raise `Cancelled` once the user asked to stop: each job calls this from its progress
        callbacks, which the workflows call only between whole batches or steps."""
        if self._cancel.is_set():
            raise Cancelled(f"{self.what} was cancelled")

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._state = replace(self._state, **changes)

    @abstractmethod
    def work(self, store: Store) -> Outcome:
        """The job itself, in its thread, on a writable cursor of the shared store."""

    def _run(self) -> None:
        try:
            import_model_libraries()  # not beside the app's background import of them (moe_core.backends)
            with self._store.writing() as store:
                outcome = self.work(store)
            self._update(stage=DONE, outcome=outcome, run_id=outcome.run_id, finished=time.monotonic())
        except Cancelled as error:
            self._update(stage=CANCELLED, error=str(error), finished=time.monotonic())
        except (PolyrouteError, StoreError) as error:
            self._update(stage=FAILED, error=str(error), failure=error, finished=time.monotonic())
        except Exception as error:  # a bug: keep the app serving, say what broke, log the details
            log.exception("%s into %s failed", self.kind, self._store.path)
            self._update(stage=FAILED, error=f"{type(error).__name__}: {error}", finished=time.monotonic())


J = TypeVar("J", bound=Job[Any])

_jobs: dict[tuple[Path, str], Job[Any]] = {}
_registry = threading.Lock()


def current_job(store: SharedStore, job_class: type[J]) -> J | None:
    """The latest job of `job_class` on `store` in this process (running or finished), if any."""
    with _registry:
        found = _jobs.get((store.path, job_class.kind))
    assert found is None or isinstance(found, job_class)
    return found


def writing_job(store: SharedStore) -> Job[Any] | None:
    """The job of any kind writing `store` now, if any (pages disable their own start while it runs)."""
    with _registry:
        return next((job for (path, _), job in _jobs.items() if path == store.path and job.snapshot().running), None)


def busy_message(job: Job[Any], store: SharedStore) -> str:
    """Why another job cannot start while `job` writes `store`."""
    state = job.snapshot()
    run = f" (run {state.run_id})" if state.run_id is not None else ""
    return (
        f"{job.what} into {store.path} is already running{run}; wait for it to finish, "
        "since one job at a time writes a store"
    )


def start_job(store: SharedStore, job: J) -> J:
    """Start `job` on `store`; refused when the store is read-only here or another job writes it
    (the refused job is released)."""
    try:
        if not store.writable:
            raise StoreError(f"this app cannot write {store.path}: {store.why_read_only}")
        with _registry:
            for (path, _), other in _jobs.items():
                if path == store.path and other.snapshot().running:
                    raise PolyrouteError(busy_message(other, store))
            _jobs[(store.path, job.kind)] = job
            job.start()
    except BaseException:
        job.release()
        raise
    return job


def delete_unwritten_run(store: SharedStore, run_id: int) -> dict[str, int]:
    """Delete run `run_id` with every row it stored (`store.runs.delete_run`); refused while a job of
    this process writes that run (or any run still marked running, whose job may not know its id yet)."""
    job = writing_job(store)
    if job is not None:
        with store.reading() as reader:
            run = get_run(reader, run_id)
        if job.snapshot().run_id == run_id or (run is not None and run.status == "running"):
            raise PolyrouteError(
                f"run {run_id} is being written by {job.what}: cancel it or wait for it to end, then delete the run"
            )
    with store.writing() as writer:
        return delete_run(writer, run_id)
