"""Collections in the app's process: a trace run in a background thread writes through the shared
store while readers keep reading it; one collection per store; a read-only store refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from moe_core.errors import PolyrouteError
from moe_core.synthetic import SyntheticBackend, synthetic_corpus
from polyroute.background import current_job, start_job
from polyroute.background.trace import TraceJob
from polyroute.workflows.trace import TraceRequest
from store import SharedStore, StoreError, summaries
from store import queries as q
from tests.conftest import planted_routing, write_jsonl
from tests.helpers import GatedBackend, new_store, store_held_by_another_process


@pytest.fixture
def request_for(tmp_path: Path):
    plan = planted_routing(n_items=6)
    rows = [{"item_id": item, "lang": lang, "text": text} for item, lang, text in synthetic_corpus(plan)]
    corpus = write_jsonl(tmp_path / "synthetic.jsonl", rows)

    def make(db: Path, backend: SyntheticBackend) -> TraceRequest:
        return TraceRequest(db=db, model=backend, corpus=corpus, langs=list(plan.langs), batch_size=4)

    return plan, make


def test_readers_see_a_collection_grow_and_complete(tmp_path, request_for):
    plan, make = request_for
    store = SharedStore(new_store(tmp_path / "s.duckdb"))
    backend = GatedBackend(plan)
    collection = start_job(store, TraceJob(store, make(store.path, backend)))
    while collection.snapshot().sequences_done == 0:
        assert collection.wait(0.05).running
    with store.reading() as reader:  # mid-run: the first committed batch is visible, the run is running
        (run,) = q.list_runs(reader)
        assert run.status == "running" and 0 < run.n_stored < run.n_planned
    with pytest.raises(PolyrouteError, match="already running"):
        start_job(store, TraceJob(store, make(store.path, SyntheticBackend(plan))))
    backend.gate.set()
    state = collection.wait(60)
    assert state.stage == "done" and state.fraction == 1.0 and current_job(store, TraceJob) is collection
    with store.reading() as reader:
        (run,) = q.list_runs(reader)
        assert run.status == "complete" and run.n_stored == run.n_planned == len(plan.langs) * 6
        layout = q.run_layout(reader, run.run_id)
        assert layout is not None
        sums = summaries.language_sums(reader.con, run.run_id, layout.langs, layout.layers, layout.n_experts)
        assert sums.hits.sum() == layout.seq_tokens.sum() * len(layout.layers) * layout.top_k
    # A second collection may start once the first is done.
    assert start_job(store, TraceJob(store, make(store.path, SyntheticBackend(plan)))).wait(60).stage == "done"
    store.close()


def test_a_failed_collection_says_why(tmp_path, request_for):
    plan, make = request_for
    store = SharedStore(new_store(tmp_path / "s.duckdb"))
    request = make(store.path, SyntheticBackend(plan))
    bad = TraceRequest(db=request.db, model=request.model, corpus=request.corpus, langs=["xx_Nope"])
    state = start_job(store, TraceJob(store, bad)).wait(60)
    assert state.stage == "failed" and "xx_Nope" in state.error
    store.close()


def test_a_store_another_process_reads_is_opened_read_only_and_refuses_to_collect(tmp_path, request_for):
    plan, make = request_for
    db = tmp_path / "s.duckdb"
    new_store(db)
    with store_held_by_another_process(db, read_only=True):
        store = SharedStore(db)
        assert not store.writable and "in use by process" in store.why_read_only
        with pytest.raises(StoreError, match="cannot write"):
            start_job(store, TraceJob(store, make(db, SyntheticBackend(plan))))
        with store.reading() as reader:
            assert q.list_runs(reader) == []
        store.close()
