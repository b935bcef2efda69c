"""The SQL console's sandbox (`store.sandbox`): hostile statements are refused with a message that
names the problem, on a store file (the CLI) and on the app's shared store alike, and leave the
file and its folder as they were; the row cap, the time cap, and the examples on real stores."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from store import SharedStore, SqlRefused, sandbox
from store.sandbox import EXAMPLES, TABLES, run_sql
from tests.helpers import file_digest, opened

FILES = "reading files is not allowed here"
ONE = "one statement at a time"

# (statement, what its refusal must say); {dir} is the store's own folder, which must stay as it was.
HOSTILE = [
    ("INSERT INTO languages (lang, iso639_3, script) VALUES ('xxx_Latn', 'xxx', 'Latn')", "not INSERT"),
    ("INSERT OR REPLACE INTO runs SELECT * FROM runs", "not INSERT"),
    ("UPDATE runs SET status = 'failed'", "not UPDATE"),
    ("DELETE FROM route_lists", "not DELETE"),
    ("TRUNCATE runs", "not TRUNCATE"),
    ("/* looks harmless */ DROP VIEW routes", "not DROP"),
    ("CREATE TABLE notes (note VARCHAR)", "not CREATE"),
    ("CREATE TEMP TABLE scratch AS SELECT * FROM runs", "not CREATE"),
    ("CREATE MACRO twice(x) AS x * 2", "not CREATE"),
    ("CREATE SEQUENCE extra_ids", "not CREATE"),
    ("CREATE SECRET key (TYPE s3, KEY_ID 'a', SECRET 'b')", "not CREATE"),
    ("ALTER TABLE runs ADD COLUMN note VARCHAR", "not ALTER"),
    ("MERGE INTO runs USING (SELECT 1 AS run_id) AS s ON runs.run_id = s.run_id WHEN MATCHED THEN DELETE", "not MERGE"),
    ("WITH gone AS (DELETE FROM runs RETURNING *) SELECT * FROM gone", "does not parse"),
    ("ATTACH '{dir}/other.duckdb' AS other", "not ATTACH"),
    ("ATTACH ':memory:' AS scratch", "not ATTACH"),
    ("DETACH s", "not DETACH"),
    ("USE system", "not USE"),
    ("COPY runs TO '{dir}/runs.csv'", "not COPY"),
    ("COPY (SELECT * FROM routes) TO '{dir}/routes.parquet' (FORMAT parquet)", "not COPY"),
    ("COPY runs FROM '/etc/hosts'", "not COPY"),
    ("EXPORT DATABASE '{dir}/export'", "not EXPORT"),
    ("IMPORT DATABASE '{dir}'", "not allowed here"),
    ("INSTALL httpfs", "not INSTALL"),
    ("FORCE INSTALL httpfs", "not FORCE INSTALL"),
    ("LOAD httpfs", "not LOAD"),
    ("LOAD '{dir}/evil.duckdb_extension'", "not LOAD"),
    ("UPDATE EXTENSIONS", "not UPDATE"),
    ("SET enable_external_access = true", "not SET"),
    ("SET GLOBAL lock_configuration = false", "not SET"),
    ("SET threads = 1", "not SET"),
    ("RESET memory_limit", "not RESET"),
    ("SET VARIABLE leaked = 42", "not SET"),
    ("PRAGMA enable_profiling", "not PRAGMA"),
    ("PRAGMA threads = 1", "not PRAGMA"),
    ("CALL enable_logging()", "not CALL"),
    ("CHECKPOINT", "not CHECKPOINT"),
    ("FORCE CHECKPOINT", "not FORCE CHECKPOINT"),
    ("VACUUM", "not VACUUM"),
    ("ANALYZE", "not ANALYZE"),
    ("BEGIN TRANSACTION", "not BEGIN"),
    ("COMMIT", "not COMMIT"),
    ("PREPARE wipe AS DELETE FROM runs", "not PREPARE"),
    # SELECTs that change the database or its settings; enable_logging to a file aborted the process.
    ("SELECT * FROM checkpoint()", "checkpoint() is not available"),
    ("SELECT * FROM runs WHERE EXISTS (FROM system.main.force_checkpoint())", "force_checkpoint() is not available"),
    ("SELECT * FROM enable_logging(storage='file', storage_path='{dir}/logs')", "enable_logging() is not available"),
    ("SELECT nextval('run_ids')", "nextval() would change the store"),
    ("SELECT run_id, main.NEXTVAL('run_ids') FROM runs", "nextval() would change the store"),
    ("SELECT * FROM query('SELECT * FROM read_csv(''/etc/passwd'')')", "query() is not available"),
    ("SELECT * FROM read_csv('/etc/passwd')", FILES),
    ("SELECT * FROM read_csv_auto('/etc/passwd')", FILES),
    ("SELECT * FROM read_parquet('{dir}/*.parquet')", FILES),
    ("SELECT * FROM read_json('/etc/passwd')", FILES),
    ("SELECT * FROM read_json_auto('/etc/passwd')", FILES),
    ("SELECT * FROM glob('/etc/*')", FILES),
    ("SELECT * FROM read_text('/etc/passwd')", FILES),
    ("SELECT * FROM read_blob('/etc/passwd')", FILES),
    ("SELECT * FROM read_duckdb('{dir}/s.duckdb')", FILES),
    ("SELECT * FROM sniff_csv('/etc/passwd')", FILES),
    ("SELECT * FROM sqlite_scan('{dir}/other.db', 'runs')", FILES),
    ("SELECT * FROM read_csv('https://example.com/data.csv')", FILES),
    ("SELECT * FROM '/etc/passwd'", FILES),
    ("FROM 'runs.csv'", FILES),
    ("SELECT 1; SELECT 2", ONE),
    ("SELECT count(*) FROM runs; DROP TABLE runs", ONE),
    ("EXPLAIN ANALYZE DELETE FROM runs", "not DELETE"),
    ("EXPLAIN ANALYZE SELECT * FROM checkpoint()", "checkpoint() is not available"),
]


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, tiny_store: Path) -> Path:
    """The tiny store (every table filled, logits too), alone in a folder of its own."""
    db = tmp_path_factory.mktemp("sandbox") / "store" / "s.duckdb"
    db.parent.mkdir()
    shutil.copyfile(tiny_store, db)
    return db


def test_the_hostile_list_is_long_enough_and_its_sequence_is_real(traced):
    assert len(HOSTILE) >= 25
    assert run_sql(traced, "SELECT sequence_name FROM duckdb_sequences()").rows == [("run_ids",)]


@pytest.mark.parametrize("kind", ["path", "shared"])
@pytest.mark.parametrize(("statement", "message"), HOSTILE)
def test_a_hostile_statement_is_refused_and_changes_nothing(traced, kind, statement, message):
    before, files = file_digest(traced), sorted(traced.parent.iterdir())
    with opened(kind, traced) as source, pytest.raises(SqlRefused) as refused:
        run_sql(source, statement.replace("{dir}", str(traced.parent)))
    assert message in str(refused.value)
    assert file_digest(traced) == before
    assert sorted(traced.parent.iterdir()) == files  # no COPY, EXPORT, ATTACH or log file appeared


def test_one_shared_store_keeps_its_settings_through_every_hostile_statement(traced):
    before = file_digest(traced)
    # Read past the console, which refuses duckdb_settings(): settings hold the machine's paths.
    settings = "SELECT name, value FROM duckdb_settings() ORDER BY name"
    with opened("shared", traced) as shared:
        assert isinstance(shared, SharedStore)
        with shared.reading() as store:
            was = store.con.execute(settings).fetchall()
        for statement, _ in HOSTILE:
            with pytest.raises(SqlRefused):
                run_sql(shared, statement.replace("{dir}", str(traced.parent)))
        with shared.reading() as store:
            assert store.con.execute(settings).fetchall() == was
        assert run_sql(shared, "SELECT count(*) FROM sequences").rows == [(4,)]
    assert file_digest(traced) == before


@pytest.mark.parametrize(
    "statement", ["SELECT nextval('run_ids')", "SELECT * FROM read_csv('/etc/passwd')", "FROM '/etc/passwd'"]
)
def test_without_the_statement_check_the_connection_still_refuses(traced, monkeypatch, statement):
    # The read-only transaction and the locked-down connection hold even for what the check would miss.
    monkeypatch.setattr(sandbox, "check_statement", lambda con, sql: None)
    before = file_digest(traced)
    with opened("shared", traced) as shared, pytest.raises(SqlRefused):
        run_sql(shared, statement)
    assert file_digest(traced) == before


@pytest.mark.parametrize(
    ("statement", "rows"),
    [
        ("SUMMARIZE runs", 14),
        ("DESCRIBE routes", 7),
        ("SHOW TABLES", 19),
        ("FROM sequences SELECT lang WHERE seq_id = 0", 1),
        ("VALUES (1), (2)", 2),
        ("PIVOT sequences ON lang IN ('eng_Latn', 'deu_Latn') USING count(*) GROUP BY run_id", 1),
        ("SELECT table_name FROM duckdb_tables() WHERE table_name = 'runs'", 1),
        ("SELECT * FROM range(3)", 3),
        ("EXPLAIN SELECT count(*) FROM routes", 1),
        ("-- a comment first\nSELECT count(*) FROM runs;", 1),
    ],
)
def test_useful_reads_still_run(traced, statement, rows):
    assert len(run_sql(traced, statement).rows) == rows


@pytest.mark.parametrize(("sql", "message"), [("", "no query to run"), ("selec 1", "does not parse")])
def test_empty_and_broken_sql_say_what_is_wrong(traced, sql, message):
    with pytest.raises(SqlRefused, match=message):
        run_sql(traced, sql)


def test_an_unknown_table_lists_the_tables(traced):
    with pytest.raises(SqlRefused, match="Table with name tokenz does not exist") as refused:
        run_sql(traced, "SELECT * FROM tokenz")
    assert "router_probs" in str(refused.value)


@pytest.mark.parametrize("kind", ["path", "shared"])
def test_results_stop_at_the_row_cap(traced, kind):
    with opened(kind, traced) as source:
        capped = run_sql(source, "SELECT * FROM range(50)", max_rows=10)
        assert capped.rows == [(i,) for i in range(10)] and capped.truncated and capped.columns == ["range"]
        exact = run_sql(source, "SELECT * FROM range(10)", max_rows=10)
        assert len(exact.rows) == 10 and not exact.truncated


@pytest.mark.parametrize("kind", ["path", "shared"])
def test_a_slow_query_is_stopped_and_the_store_still_answers(traced, kind):
    with opened(kind, traced) as source:
        started = time.monotonic()
        with pytest.raises(SqlRefused, match=r"ran longer than 0\.5 s and was stopped"):
            run_sql(source, "SELECT count(*) FROM range(1000000) a, range(1000000) b", timeout_s=0.5)
        assert time.monotonic() - started < 5
        assert run_sql(source, "SELECT count(*) FROM runs").rows == [(3,)]  # the trace, an evaluation, an adaptation


def test_the_examples_cover_every_public_table(traced):
    internal = "('schema_migrations', 'route_lists')"
    found = run_sql(traced, f"SELECT table_name FROM information_schema.tables WHERE table_name NOT IN {internal}")
    assert {row[0] for row in found.rows} == set(TABLES)
    for table in TABLES:
        assert [title for title, sql in EXAMPLES.items() if re.search(rf"\b(FROM|JOIN)\s+{table}\b", sql)], table


@pytest.mark.parametrize("title", list(EXAMPLES))
def test_every_example_returns_rows_on_a_full_store(traced, title):
    with opened("shared", traced) as shared:
        assert run_sql(shared, EXAMPLES[title]).rows


def test_a_trace_only_store_leaves_only_the_logits_evaluation_and_adaptation_examples_empty(planted_store, tmp_path):
    copy = tmp_path / "planted.duckdb"  # a copy: other tests hold the session's store their own way
    shutil.copy(planted_store, copy)
    with opened("shared", copy) as shared:
        empty = {title for title, sql in EXAMPLES.items() if not run_sql(shared, sql).rows}
    declared = {title for title, sql in EXAMPLES.items() if sql.startswith(("-- Empty unless", "-- Empty until"))}
    assert empty == declared
    only_after = ("--save-logits", "polyroute eval", "polyroute adapt")
    assert empty and all(any(what in title for what in only_after) for title in empty)
