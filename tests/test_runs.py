"""Jobs the user controls and runs the user manages: a collection, an evaluation and an adaptation
cancelled through the app's background API (real tiny models) end marked `cancelled` with what they
stored whole; runs are renamed, annotated and deleted (every row of the run, in every table that has
a run_id, and nothing of the other runs), by the store functions and by `polyroute runs`."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import duckdb
import pytest

from moe_core.adapt import AdaptProgress
from moe_core.adapt.settings import TrainSettings
from moe_core.backends.hf import HFBackend
from moe_core.demo import DEMO_MODEL_DIR
from moe_core.errors import PolyrouteError
from polyroute.background import CANCELLED, current_job, delete_unwritten_run, start_job
from polyroute.background.adapt import AdaptationJob
from polyroute.background.evaluate import EvaluationJob
from polyroute.background.trace import TraceJob
from polyroute.cli import main
from polyroute.workflows.adapt import AdaptRequest
from polyroute.workflows.evaluate import EvalRequest
from polyroute.workflows.trace import TraceRequest, resume_trace
from store import SharedStore, open_store
from store import queries as q
from store.runs import RUN_TABLES, UnknownRun, annotate_run, delete_run, rename_run, tables_with_run_id
from store.writer import checkpoint
from tests.helpers import Gated, assert_summaries_match_a_rebuild, mgsm_copy, new_store

DATA = Path(__file__).parent / "data"


class GatedModel(Gated, HFBackend):
    """The real tiny model, stopped after its first batch until the test opens the gate, then one
    batch a second (longer than the writer's grouping delay: it stores each alone)."""

    pace_s = 1.0


def _status(db: Path | SharedStore, run_id: int) -> str:
    if isinstance(db, SharedStore):
        with db.reading() as reader:
            run = q.get_run(reader, run_id)
    else:
        with open_store(db, read_only=True) as store:
            run = q.get_run(store, run_id)
    assert run is not None
    return run.status


@pytest.mark.slow
def test_a_cancelled_collection_keeps_whole_batches_and_resumes(tmp_path: Path, tiny_model, corpus_file: Path):
    folder = tiny_model("qwen3_moe")
    db = new_store(tmp_path / "s.duckdb")
    store = SharedStore(db)
    model = GatedModel(folder)
    request = TraceRequest(db=db, model=model, corpus=corpus_file, langs=["eng_Latn", "deu_Latn"], batch_size=2)
    job = start_job(store, TraceJob(store, request))
    while job.snapshot().sequences_done == 0:  # the first batch is stored; the model waits at the gate
        assert job.wait(0.05).running
    job.cancel()
    assert job.snapshot().cancelling
    model.gate.set()  # the next batch is traced and stored whole, then the job stops there
    state = job.wait(60)
    assert (state.stage, state.running, state.error) == (CANCELLED, False, "a collection was cancelled")
    run_id = state.run_id
    assert run_id is not None and _status(store, run_id) == "cancelled"
    with store.reading() as reader:
        run = q.get_run(reader, run_id)
        assert run is not None
        stored = sorted(q.stored_seq_ids(reader, run_id))
    assert 0 < run.n_stored < run.n_planned == 12 and run.n_stored % 2 == 0 and run.n_stored == state.sequences_done
    assert stored == list(range(run.n_stored))  # whole batches, in the plan's order
    store.close()
    assert_summaries_match_a_rebuild(db, run_id, tmp_path)
    assert main(["runs", "--db", str(db)]) == 0
    outcome = resume_trace(db, run_id)
    assert outcome.n_sequences == 12 - run.n_stored and _status(db, run_id) == "complete"
    assert_summaries_match_a_rebuild(db, run_id, tmp_path)


def test_a_cancelled_evaluation_is_marked_and_writes_no_half_result(tmp_path: Path):
    db = new_store(tmp_path / "s.duckdb")
    store = SharedStore(db)
    request = EvalRequest(
        db=db, task="mgsm", model=DEMO_MODEL_DIR, corpus=f"mgsm:{mgsm_copy(tmp_path / 'mgsm')}",
        langs=["eng_Latn", "deu_Latn"], limit=2, max_new_tokens=2, batch_size=1,
    )  # fmt: skip
    job = EvaluationJob(store, request)
    job.cancel()  # asked before the first batch ends: the job stops after it
    start_job(store, job)
    state = job.wait(120)
    assert state.stage == CANCELLED and state.run_id is not None and state.done == 1
    assert _status(store, state.run_id) == "cancelled"
    with store.reading() as reader:
        for table in ("generations", "eval_results"):
            assert reader.con.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    store.close()


class StopWhileTraining(AdaptationJob):
    """An adaptation whose user presses Cancel once the first training step is done."""

    def _progress(self, step: AdaptProgress) -> None:
        if step.stage == "training":
            self.cancel()
        super()._progress(step)


def test_a_cancelled_adaptation_is_marked_and_writes_no_experts(tmp_path: Path, tiny_store: Path, tiny_model):
    db = tmp_path / "s.duckdb"
    shutil.copyfile(tiny_store, db)
    store = SharedStore(db)
    with store.reading() as reader:
        before = {run.run_id for run in q.list_runs(reader)}
    trace = min(before)
    request = AdaptRequest(
        db=db, model=tiny_model("qwen3_moe"), run_id=trace, target="deu_Latn", budget=1, eval_langs=["eng_Latn"],
        settings=TrainSettings(max_steps=5), out=tmp_path / "adapter",
    )  # fmt: skip
    job = start_job(store, StopWhileTraining(store, request))
    state = job.wait(300)
    assert state.stage == CANCELLED and (state.stage, state.done) == (CANCELLED, 1), state
    with store.reading() as reader:
        (new,) = [run for run in q.list_runs(reader) if run.run_id not in before]
    assert (new.kind, new.status, new.n_stored) == ("adaptation", "cancelled", 0)
    assert not (tmp_path / "adapter").exists()
    assert current_job(store, StopWhileTraining) is job
    store.close()


def test_every_table_with_a_run_id_is_a_run_table(tiny_store: Path):
    """A table added with a run_id column must join RUN_TABLES, or deleting a run would leave its rows."""
    with open_store(tiny_store, read_only=True) as store:
        assert tables_with_run_id(store) == sorted([*RUN_TABLES, "runs"])


def _rows_by_table(db: Path) -> dict[str, list[tuple[object, ...]]]:
    with duckdb.connect(str(db), read_only=True) as con:
        query = "SELECT table_name FROM duckdb_columns() JOIN duckdb_tables() USING (table_name) WHERE column_name = ?"
        tables = [row[0] for row in con.execute(query, ["run_id"]).fetchall()]
        return {table: con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall() for table in tables}


def test_deleting_a_run_leaves_no_row_of_it_and_every_other_run_whole(tiny_store: Path, tmp_path: Path):
    db = tmp_path / "s.duckdb"
    shutil.copyfile(tiny_store, db)
    before = _rows_by_table(db)
    with open_store(db, read_only=True) as store:
        tables = tables_with_run_id(store)
        run_ids = [run.run_id for run in q.list_runs(store)]
    assert len(run_ids) == 3  # a trace, an evaluation and an adaptation: every run table has rows
    assert [table for table in tables if not before[table]] == []
    for gone in run_ids:
        with open_store(db) as store:
            deleted = delete_run(store, gone)
        assert deleted["runs"] == 1 and sum(deleted.values()) > 1
        after = _rows_by_table(db)
        for table, rows in before.items():
            kept = [row for row in rows if row[0] != gone]
            assert after[table] == kept, table  # run_id is every table's first column
        before = after
    assert all(not rows for rows in before.values())
    with open_store(db) as store, pytest.raises(UnknownRun, match="there is no run 1"):
        delete_run(store, 1)


def _row_groups(db: Path, table: str) -> tuple[int, int, int]:
    """(row groups, rows they hold, deleted rows among them: those `count(*)` does not see)."""
    with duckdb.connect(str(db), read_only=True) as con:
        groups, held = con.execute(
            "SELECT count(*), coalesce(sum(n), 0) FROM (SELECT row_group_id, max(start + count) - min(start) AS n "
            f"FROM pragma_storage_info('{table}') WHERE column_id = 0 GROUP BY ALL)"
        ).fetchone()  # type: ignore[misc]
        (visible,) = con.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[misc]
    return int(groups), int(held), int(held) - int(visible)


def test_deleting_a_run_frees_its_rows_storage_though_checkpoints_never_merge_row_groups(
    tiny_store: Path, tmp_path: Path
):
    # Checkpoints never merge row groups (store.connection.WRITE_SETTINGS). A run's writer
    # checkpoints when the run ends, so its rows fill row groups of their own, which DuckDB drops
    # whole when the run is deleted: more than two row groups of run 3's rows here, then run 1's.
    db = tmp_path / "s.duckdb"
    shutil.copyfile(tiny_store, db)
    group = 122_880  # DuckDB's row group size
    with open_store(db) as store:
        for run_id, n_rows in ((3, 2 * group + 5), (1, 7)):
            with store.transaction() as con:
                rows = "SELECT ?, 1000 + i, 0, [1, 2], [7, 9] FROM range(?) AS t(i)"
                con.execute(f"INSERT INTO route_lists {rows}", [run_id, n_rows])
            checkpoint(store)  # as the run's writer does when the run ends
        (kept,) = store.con.execute("SELECT count(*) FROM route_lists WHERE run_id <> 3").fetchone()  # type: ignore[misc]
    groups, held, deleted = _row_groups(db, "route_lists")
    assert groups >= 5 and held == kept + 2 * group + 5 and deleted == 0
    with open_store(db) as store:
        delete_run(store, 3)
        assert store.con.execute("SELECT current_setting('max_vacuum_tasks')").fetchone() == (0,)
    after = _row_groups(db, "route_lists")
    assert after[1:] == (kept, 0) and after[0] <= groups - 3  # the run's rows are gone from storage, not only hidden


def test_names_and_notes_round_trip_and_show_in_the_listing(tiny_store: Path, tmp_path: Path, capsys):
    db = tmp_path / "s.duckdb"
    shutil.copyfile(tiny_store, db)
    with open_store(db) as store:
        rename_run(store, 1, "  German baseline ")
        annotate_run(store, 1, "two sentences per language")
        run = q.get_run(store, 1)
        assert run is not None and (run.name, run.note) == ("German baseline", "two sentences per language")
        annotate_run(store, 1, "  ")
        assert q.get_run(store, 1).note is None  # type: ignore[union-attr]
    capsys.readouterr()
    assert main(["runs", "rename", "2", "mgsm check", "--db", str(db)]) == 0
    assert main(["runs", "--db", str(db), "note", "2", "before steering"]) == 0
    assert main(["runs", "--db", str(db), "--format", "json"]) == 0
    listed = {row["run_id"]: row for row in json.loads(capsys.readouterr().out.splitlines()[-1])}
    assert (listed[1]["name"], listed[1]["note"]) == ("German baseline", "")
    assert (listed[2]["name"], listed[2]["note"]) == ("mgsm check", "before steering")
    assert main(["runs", "delete", "2", "--yes", "--db", str(db)]) == 0
    assert capsys.readouterr().out.startswith("deleted run 2 (evaluation, mgsm check): ")
    assert main(["runs", "--db", str(db), "--format", "csv"]) == 0
    assert "mgsm check" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["runs", "rename", "9", "x"], "there is no run 9 in"),
        (["runs", "note", "9", "x"], "there is no run 9 in"),
        (["runs", "delete", "9", "--yes"], "there is no run 9 in"),
        (["runs", "rename", "1", " "], "a run's name must not be empty"),
        (["runs", "rename", "one", "x"], "RUN invalid int value"),
        (["runs", "delete", "1"], "was not deleted: add --yes"),  # no terminal to ask on
    ],
)
def test_bad_run_commands_say_so_in_one_line_and_change_nothing(tiny_store, tmp_path, capsys, argv, message):
    db = tmp_path / "s.duckdb"
    shutil.copyfile(tiny_store, db)
    before = _rows_by_table(db)
    capsys.readouterr()
    assert main([*argv, "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert _rows_by_table(db) == before


def test_the_app_refuses_to_delete_the_run_a_job_writes(tmp_path: Path, tiny_model, corpus_file: Path):
    db = new_store(tmp_path / "s.duckdb")
    store = SharedStore(db)
    model = GatedModel(tiny_model("qwen3_moe"))
    request = TraceRequest(db=db, model=model, corpus=corpus_file, langs=["eng_Latn"], batch_size=2)
    job = start_job(store, TraceJob(store, request))
    while job.snapshot().sequences_done == 0:
        assert job.wait(0.05).running
    run_id = job.snapshot().run_id
    assert run_id is not None
    with pytest.raises(PolyrouteError, match=f"run {run_id} is being written by a collection: cancel it or wait"):
        delete_unwritten_run(store, run_id)
    model.gate.set()
    assert job.wait(60).stage == "done"
    assert delete_unwritten_run(store, run_id)["runs"] == 1
    store.close()


def test_an_old_store_gets_names_and_notes_on_upgrade(tmp_path: Path):
    db = tmp_path / "old.duckdb"
    with gzip.open(DATA / "store-v4.duckdb.gz") as packed, db.open("wb") as out:
        shutil.copyfileobj(packed, out)
    with open_store(db) as store:  # migrates
        assert [(run.name, run.note) for run in q.list_runs(store)] == [(None, None), (None, None)]
        rename_run(store, 1, "old run")
        assert q.get_run(store, 1).name == "old run"  # type: ignore[union-attr]
