"""Upgrading a store written before the routing summaries (schema 4): in place, all or nothing, and
every analysis gives what the release that wrote it gave from the per-token rows."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from polyroute import analyses
from polyroute.run_data import RunData, Selection
from store import StoreError, migrations, open_store, summaries
from tests.helpers import assert_summaries_match_a_rebuild

DATA = Path(__file__).parent / "data"
ANALYSES = {
    "divergence": lambda data: analyses.analyze_divergence(data),
    "entropy": lambda data: analyses.analyze_entropy(data),
    "consistency": lambda data: analyses.analyze_consistency(data),
    "similarity": lambda data: analyses.analyze_similarity(data),
    "experts": lambda data: analyses.analyze_experts(data, tau=0.3),
    "shared": lambda data: analyses.analyze_shared(data, k=3, thr=0.3),
    "isolation": lambda data: analyses.analyze_isolation(data),
    "rise": lambda data: analyses.analyze_rise(data, target="tam_Taml", budget=6),
}


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    """A copy of the schema-4 store of tests/data (written by the release before the summaries)."""
    db = tmp_path / "old.duckdb"
    with gzip.open(DATA / "store-v4.duckdb.gz") as packed, db.open("wb") as out:
        shutil.copyfileobj(packed, out)
    return db


def _same(expected: object, got: object) -> bool:
    if isinstance(expected, float) or isinstance(got, float):
        return expected is not None and got is not None and abs(expected - got) <= 2e-6  # 6 decimals, rounded
    return expected == got


def test_an_old_store_is_upgraded_in_place_and_every_analysis_gives_what_it_gave(old_store: Path):
    with duckdb.connect(str(old_store), read_only=True) as con:
        assert migrations.applied(con) == [1, 2, 3, 4]
    with pytest.raises(StoreError, match="polyroute upgrade"):
        open_store(old_store, read_only=True)
    seen: list[tuple[int, int]] = []
    with duckdb.connect(str(old_store)) as con:
        migrations.migrate(con, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (216, 216) and len(seen) >= 2  # 108 sequences in each of two runs, in steps
    expected = json.loads((DATA / "store-v4-results.json").read_text())
    with open_store(old_store, read_only=True) as store:
        assert store.con.execute("SELECT count(*) FROM sequence_routing").fetchone() == (216 * 8,)
        for key, results in expected.items():
            run, source = key.split("/")
            data = RunData(store, int(run), Selection(source=source))
            for name, tables in results.items():
                got = ANALYSES[name](data).tables
                for table, found in zip(tables, got, strict=True):
                    assert table["columns"] == list(found.columns), (key, name)
                    assert len(table["rows"]) == len(found.rows), (key, name, table["name"])
                    for old_row, new_row in zip(table["rows"], found.rows, strict=True):
                        assert all(_same(a, b) for a, b in zip(old_row, new_row, strict=True)), (key, name, new_row)


def test_the_writer_and_the_upgrade_build_the_same_summaries(planted_store: Path, tmp_path: Path):
    """What the writer kept batch by batch equals a rebuild from the stored rows."""
    assert_summaries_match_a_rebuild(planted_store, 1, tmp_path)


@pytest.mark.parametrize("kept_bytes", [0, 1 << 30])
def test_summaries_written_one_batch_a_commit_equal_a_rebuild(tmp_path: Path, monkeypatch, kept_bytes: int):
    """Batches stored one at a time compare each new sequence with ones read back from the store
    (nothing kept in memory) or kept by the writer: both equal a rebuild."""
    from moe_core.pipeline import batches, plan_trace
    from moe_core.synthetic import SyntheticBackend, synthetic_corpus
    from store import writer as w
    from tests.conftest import planted_routing

    monkeypatch.setattr(summaries, "Partners", _partners_of(kept_bytes))
    backend = SyntheticBackend(planted_routing(n_items=5))
    db = tmp_path / "batched.duckdb"
    with open_store(db) as store:
        model = w.ensure_model(store, backend.info())
        plan = plan_trace(backend, synthetic_corpus(backend.plan))
        run = w.create_run(
            store, kind="trace", model_id=model, corpus_id=None, backend="synthetic", params={},
            n_planned=len(plan.sequences), weight_bound=1.0,
        )  # fmt: skip
        writer = w.BatchWriter(store, run)
        for chunk in batches(plan.sequences, 4):
            keys = [w.SequenceKey(seq.seq_id, seq.item_id, seq.lang) for seq in chunk]
            writer.write([(keys, backend.trace([seq.text for seq in chunk]))])
        writer.close()
    assert_summaries_match_a_rebuild(db, 1, tmp_path)


def _partners_of(max_bytes: int) -> object:
    original = summaries.Partners

    def make() -> summaries.Partners:
        return original(max_bytes=max_bytes)

    return make


KILL_AFTER_FIRST_STEP = """
import os, signal, sys
from store import open_store, upgrades
upgrades.SEQUENCES_PER_STEP = 16
upgrades.progress_bar = lambda description: lambda done, total: os.kill(os.getpid(), signal.SIGKILL)
open_store(sys.argv[1])
"""


# Columns that later migrations add to an old table (NULL until the user sets them): not the old contents.
ADDED_COLUMNS = {"runs": ("name", "note")}


def _contents(db: Path) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        contents = []
        for table in ("runs", "sequences", "tokens", "routes", "router_probs"):
            columns = [row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()]
            old = ", ".join(column for column in columns if column not in ADDED_COLUMNS.get(table, ()))
            contents.append(
                con.execute(f"SELECT count(*), sum(hash(t)) FROM (SELECT {old} FROM {table}) AS t").fetchone()
            )
        return contents


def test_an_interrupted_upgrade_leaves_the_store_as_it_was_and_usable(old_store: Path):
    before = _contents(old_store)
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST_STEP, str(old_store)], check=False)
    assert killed.returncode == -9  # killed after summarising its first 16 sequences
    with duckdb.connect(str(old_store), read_only=True) as con:  # as the release that wrote it opens it
        assert migrations.applied(con) == [1, 2, 3, 4]
        assert "sequence_routing" not in migrations.user_tables(con)
    assert _contents(old_store) == before
    open_store(old_store).close()  # the next upgrade starts afresh and completes
    with open_store(old_store, read_only=True) as store:
        assert migrations.applied(store.con)[-1] == migrations.available()[-1][0]
        found = store.con.execute("SELECT count(DISTINCT seq_id) FROM sequence_routing WHERE run_id = 1").fetchone()
        assert found == (108,)
    assert _contents(old_store) == before


def test_a_store_from_a_newer_polyroute_is_refused_with_the_fix(tmp_path: Path):
    db = tmp_path / "newer.duckdb"
    open_store(db).close()
    with duckdb.connect(str(db)) as con:
        con.execute(f"INSERT INTO {migrations.LEDGER} (version, name) VALUES (999, 'future')")
    for read_only in (True, False):
        with pytest.raises(StoreError, match=r"newer Polyroute .*upgrade Polyroute"):
            open_store(db, read_only=read_only)
