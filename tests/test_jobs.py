"""Background jobs of the app (`polyroute.background`): one job writes a store at a time, whatever its kind
(a collection and an adaptation into one store are refused at once, each is fine alone and into
another store); a job's error or bug becomes its state and the next job may start."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from moe_core.errors import PolyrouteError
from moe_core.synthetic import SyntheticBackend, synthetic_corpus
from polyroute.background import Job, JobState, current_job, start_job
from polyroute.background.adapt import AdaptationJob
from polyroute.background.trace import TraceJob
from polyroute.workflows.adapt import AdaptRequest
from polyroute.workflows.trace import TraceRequest
from store import SharedStore, Store
from tests.conftest import planted_routing, write_jsonl
from tests.helpers import GatedBackend, new_store


@dataclass(frozen=True, kw_only=True)
class Done:
    run_id: int


class GateJob(Job[JobState[Done]]):
    """Waits for the test's gate, then ends as `ending` says: done, a domain error or a bug."""

    kind, what = "gate", "a gate job"

    def __init__(self, store: SharedStore, ending: str = "done") -> None:
        super().__init__(store, JobState())
        self.gate = threading.Event()
        self.ending = ending

    def work(self, store: Store) -> Done:
        assert self.gate.wait(60)
        if self.ending == "error":
            raise PolyrouteError("the corpus has no text in xx_Nope")
        if self.ending == "bug":
            raise KeyError("oops")
        return Done(run_id=7)


def test_a_job_ends_done_or_failed_with_what_went_wrong(tmp_path: Path):
    store = SharedStore(new_store(tmp_path / "s.duckdb"))
    for ending, stage, error in (("done", "done", ""), ("error", "failed", "xx_Nope"), ("bug", "failed", "KeyError")):
        job = start_job(store, GateJob(store, ending))
        assert job.snapshot().running and current_job(store, GateJob) is job
        job.gate.set()
        state = job.wait(60)
        assert (state.stage, state.running) == (stage, False) and error in state.error
        assert state.run_id == (7 if ending == "done" else None) and state.seconds >= 0
    store.close()


def test_one_job_at_a_time_writes_a_store_whatever_its_kind(tmp_path: Path):
    store = SharedStore(new_store(tmp_path / "s.duckdb"))
    other = SharedStore(new_store(tmp_path / "other.duckdb"))
    adapt = AdaptRequest(db=store.path, model=Path("/nowhere"), run_id=1, target="eng_Latn", budget=1)

    # A running adaptation-like job blocks a collection and an adaptation into the same store ...
    gate = start_job(store, GateJob(store))
    plan = planted_routing(n_items=2)
    with pytest.raises(PolyrouteError, match=r"a gate job into .* is already running"):
        start_job(store, TraceJob(store, _trace_request(tmp_path, store.path, SyntheticBackend(plan), plan)))
    with pytest.raises(PolyrouteError, match="already running"):
        start_job(store, AdaptationJob(store, adapt))
    # ... but not a job into another store.
    assert start_job(other, AdaptationJob(other, adapt)).wait(60).stage == "failed"
    gate.gate.set()
    gate.wait(60)

    # A running collection blocks an adaptation of its store; once it is done, the adaptation starts.
    backend = GatedBackend(plan)
    collection = start_job(store, TraceJob(store, _trace_request(tmp_path, store.path, backend, plan)))
    while collection.snapshot().sequences_done == 0:
        assert collection.wait(0.05).running
    run_id = collection.snapshot().run_id
    with pytest.raises(PolyrouteError, match=rf"a collection into .* is already running \(run {run_id}\)"):
        start_job(store, AdaptationJob(store, adapt))
    assert current_job(store, AdaptationJob) is None
    backend.gate.set()
    assert collection.wait(60).stage == "done"
    adaptation = start_job(store, AdaptationJob(store, adapt))
    state = adaptation.wait(60)  # started, and refused before any model loads: /nowhere is no model
    assert state.stage == "failed" and state.error and current_job(store, AdaptationJob) is adaptation
    assert current_job(store, TraceJob) is collection  # the registry keeps each kind's latest job
    store.close()
    other.close()


def _trace_request(tmp_path: Path, db: Path, backend: SyntheticBackend, plan) -> TraceRequest:
    rows = [{"item_id": item, "lang": lang, "text": text} for item, lang, text in synthetic_corpus(plan)]
    corpus = write_jsonl(tmp_path / "synthetic.jsonl", rows)
    return TraceRequest(db=db, model=backend, corpus=corpus, langs=list(plan.langs), batch_size=4)
