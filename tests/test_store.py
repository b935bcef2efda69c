"""The store: migrations, the all-or-nothing batch writer, weight coding, and DuckDB errors as fixes."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from moe_core.records import ModelInfo, RoutingBatch
from store import StoreCorrupt, StoreError, StoreLocked, StoreMissing, migrations, open_store
from store import writer as w
from tests.helpers import file_digest, snapshot, store_held_by_another_process

INFO = ModelInfo(
    model_id="toy", arch="ToyForCausalLM", family="toy", source="/nowhere", n_layers=2, moe_layers=(0, 1),
    n_experts=4, top_k=2, n_shared_experts=0, scoring="softmax->topk", soft_rule="softmax", weight_bound=1.0,
    config_hash="abc",
)  # fmt: skip


def _batch(lengths: list[int], *, weights: float = 0.5, layers=(0, 1), k: int = 2, e: int = 4) -> RoutingBatch:
    rng = np.random.default_rng(0)
    n = sum(lengths)
    ids = np.stack([rng.permutation(e)[:k] for _ in range(n * len(layers))]).reshape(n, len(layers), k)
    probs = rng.dirichlet(np.ones(e), size=(len(lengths), len(layers))).astype(np.float32)
    return RoutingBatch(
        layers=np.array(layers),
        seq_lengths=np.array(lengths),
        token_ids=np.arange(n),
        pieces=[f"t{i}" for i in range(n)],
        special=np.zeros(n, bool),
        generated=np.zeros(n, bool),
        expert_ids=ids.astype(np.int16),
        expert_weights=np.full((n, len(layers), k), weights, np.float32),
        router_probs=probs,
    )


@pytest.fixture
def store(tmp_path):
    with open_store(tmp_path / "s.duckdb") as opened:
        yield opened


def _run(store, bound: float = 1.0) -> int:
    w.ensure_model(store, INFO)
    return w.create_run(
        store, kind="trace", model_id="toy", corpus_id=None, backend="hf", params={}, n_planned=3, weight_bound=bound
    )


def test_migrations_are_applied_once_and_in_order(tmp_path):
    db = tmp_path / "s.duckdb"
    open_store(db).close()
    with open_store(db) as again:
        assert migrations.applied(again.con) == [v for v, _, _ in migrations.available()]
        tables = set(migrations.user_tables(again.con))
    assert {"models", "languages", "corpora", "texts", "runs", "sequences", "tokens", "route_lists"} <= tables


def test_a_store_from_an_older_schema_is_migrated_and_keeps_its_rows(tmp_path):
    db = tmp_path / "old.duckdb"
    version, name, first = migrations.available()[0]
    con = duckdb.connect(str(db))
    con.execute(first)
    con.execute(f"CREATE TABLE {migrations.LEDGER} (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP)")
    con.execute(f"INSERT INTO {migrations.LEDGER} VALUES (?, ?, now())", [version, name])
    con.execute("INSERT INTO corpora VALUES ('c-1', 'c.jsonl', 'jsonl', 'h', 1, ['eng_Latn'], now())")
    con.execute("INSERT INTO texts VALUES ('c-1', 'a', 'eng_Latn', 'Hello there.', 0)")
    con.close()
    open_store(db).close()
    with open_store(db, read_only=True) as store:
        assert migrations.applied(store.con) == [v for v, _, _ in migrations.available()]
        assert store.con.execute("SELECT text, split, fields FROM texts").fetchall() == [("Hello there.", None, None)]


def test_a_batch_is_stored_whole_with_routes_in_order(store):
    run = _run(store)
    batch = _batch([3, 2])
    w.BatchWriter(store, run).write([([w.SequenceKey(0, "a", "eng_Latn"), w.SequenceKey(1, "a", "deu_Latn")], batch)])
    con = store.con
    assert con.execute("SELECT count(*) FROM tokens").fetchone()[0] == 5
    stored = con.execute("SELECT seq_id, layer, len(experts) FROM route_lists").fetchall()
    assert stored == [(0, 0, 6), (0, 1, 6), (1, 0, 4), (1, 1, 4)], "a row per (seq, layer) in order, as zone maps need"
    routes = con.execute(
        "SELECT seq_id, pos, layer, rank, expert, weight FROM routes ORDER BY seq_id, pos, layer, rank"
    ).fetchnumpy()
    assert len(routes["seq_id"]) == 5 * 2 * 2
    assert routes["pos"].tolist() == [p for p in (0, 1, 2) for _ in range(4)] + [p for p in (0, 1) for _ in range(4)]
    np.testing.assert_array_equal(routes["expert"], batch.expert_ids.reshape(-1))
    np.testing.assert_allclose(routes["weight"], 0.5, atol=1 / 65535)
    probs = con.execute("SELECT probs FROM router_probs ORDER BY seq_id, layer").fetchall()
    np.testing.assert_allclose(np.array([p[0] for p in probs]), batch.router_probs.reshape(-1, 4), rtol=1e-6)


def test_storing_a_sequence_twice_writes_nothing(store):
    run = _run(store)
    writer = w.BatchWriter(store, run)
    writer.write([([w.SequenceKey(0, "a", "eng_Latn")], _batch([3]))])
    before = store.con.execute("SELECT count(*) FROM routes").fetchone()[0]
    with pytest.raises(StoreError, match="already holds"):
        writer.write([([w.SequenceKey(1, "b", "eng_Latn"), w.SequenceKey(0, "a", "eng_Latn")], _batch([2, 3]))])
    assert store.con.execute("SELECT count(*) FROM routes").fetchone()[0] == before
    assert store.con.execute("SELECT count(*) FROM sequences").fetchone()[0] == 1


def test_weights_beyond_the_declared_bound_are_refused(store):
    run = _run(store, bound=1.0)
    with pytest.raises(StoreError, match="weight bound"):
        w.BatchWriter(store, run).write([([w.SequenceKey(0, "a", "eng_Latn")], _batch([2], weights=2.5))])
    assert store.con.execute("SELECT count(*) FROM sequences").fetchone()[0] == 0


def test_scaled_weights_keep_their_resolution(store):
    run = _run(store, bound=2.5)
    w.BatchWriter(store, run).write([([w.SequenceKey(0, "a", "eng_Latn")], _batch([2], weights=2.2))])
    weights = store.con.execute("SELECT weight FROM routes").fetchnumpy()["weight"]
    np.testing.assert_allclose(weights, 2.2, atol=2.5 / 65535)


def test_id_only_batches_store_null_weights(store):
    run = _run(store)
    batch = _batch([2])
    id_only = RoutingBatch(**{**{f: getattr(batch, f) for f in batch.__dataclass_fields__ if f != "offsets"},
                              "expert_weights": None, "router_probs": None})  # fmt: skip
    w.BatchWriter(store, run).write([([w.SequenceKey(0, "a", "eng_Latn")], id_only)])
    assert store.con.execute("SELECT count(*) FROM routes WHERE weight IS NULL").fetchone()[0] == 8


def test_a_model_name_taken_by_another_model_gets_a_suffix(store):
    assert w.ensure_model(store, INFO) == "toy"
    assert w.ensure_model(store, INFO) == "toy"
    other = ModelInfo(**{**INFO.__dict__, "config_hash": "def12345xyz"})
    assert w.ensure_model(store, other) == "toy@def12345"


def test_a_corrupt_file_is_refused_and_left_untouched(tmp_path):
    db = tmp_path / "broken.duckdb"
    db.write_bytes(b"this is not a database" * 500)
    before = file_digest(db)
    with pytest.raises(StoreCorrupt, match="damaged or not a DuckDB database"):
        open_store(db)
    assert file_digest(db) == before


def test_a_foreign_duckdb_file_is_refused_and_left_untouched(tmp_path):
    db = tmp_path / "other.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE invoices (id INTEGER)")
    con.close()
    before = file_digest(db)
    with pytest.raises(StoreCorrupt, match="not a Polyroute store"):
        open_store(db)
    assert file_digest(db) == before


def test_a_locked_store_names_the_process_that_holds_it(tmp_path):
    db = tmp_path / "s.duckdb"
    with open_store(db) as store:
        _run(store)
    before = snapshot(db)
    with store_held_by_another_process(db) as pid:
        for read_only in (False, True):
            with pytest.raises(StoreLocked, match=f"in use by process {pid}"):
                open_store(db, read_only=read_only)
    assert snapshot(db) == before


def test_reading_a_missing_store_says_how_to_make_one(tmp_path):
    with pytest.raises(StoreMissing, match="polyroute trace"):
        open_store(tmp_path / "nothing.duckdb", read_only=True)
