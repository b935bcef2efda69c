"""Managing runs: a name and a note the user gives a run, and deleting a run with every row it owns.

`RUN_TABLES` lists every table holding rows of a run (by its `run_id` column); the tests compare it
with the schema, so a table added by a later migration cannot be left out of a deletion.
"""

from __future__ import annotations

import duckdb

from store.connection import Store
from store.errors import StoreError

RUN_TABLES = (
    "sequences",
    "tokens",
    "route_lists",
    "router_probs",
    "router_logits",
    "generations",
    "eval_results",
    "adaptation_experts",
    "sequence_routing",
    "language_routing",
    "language_expert_routing",
    "language_pair_divergence",
)


class UnknownRun(StoreError):
    """A run id the store does not hold."""


def rename_run(store: Store, run_id: int, name: str) -> None:
    """Give run `run_id` the name `name` (surrounding spaces dropped; it must not be empty)."""
    name = name.strip()
    if not name:
        raise StoreError("a run's name must not be empty: give a name, or keep the run id alone")
    _set(store, run_id, "name", name)


def annotate_run(store: Store, run_id: int, note: str) -> None:
    """Keep `note` with run `run_id` (an empty note removes it)."""
    _set(store, run_id, "note", note.strip() or None)


def delete_run(store: Store, run_id: int) -> dict[str, int]:
    """Delete run `run_id` and every row it owns, in one transaction; returns the rows deleted per
    table (the run's own row under `runs`). Models, languages and corpora stay: other runs share them."""
    deleted: dict[str, int] = {}
    with store.transaction() as con:
        _check_exists(con, store, run_id)
        for table in (*RUN_TABLES, "runs"):
            row = con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id]).fetchone()
            deleted[table] = int(row[0]) if row else 0
    return deleted


def tables_with_run_id(store: Store) -> list[str]:
    """The base tables of the schema that have a `run_id` column (views left out), sorted."""
    rows = store.con.execute(
        "SELECT c.table_name FROM information_schema.columns AS c "
        "JOIN information_schema.tables AS t USING (table_catalog, table_schema, table_name) "
        "WHERE c.column_name = 'run_id' AND t.table_type = 'BASE TABLE' AND c.table_catalog = current_database() "
        "ORDER BY 1"
    ).fetchall()
    return [row[0] for row in rows]


def _set(store: Store, run_id: int, column: str, value: str | None) -> None:
    with store.transaction() as con:
        _check_exists(con, store, run_id)
        con.execute(f"UPDATE runs SET {column} = ? WHERE run_id = ?", [value, run_id])


def no_such_run(store: Store, run_id: int) -> UnknownRun:
    return UnknownRun(f"there is no run {run_id} in {store.path}: see the runs it holds with `polyroute runs`")


def _check_exists(con: duckdb.DuckDBPyConnection, store: Store, run_id: int) -> None:
    found = con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]).fetchone()
    if not found or not found[0]:
        raise no_such_run(store, run_id)
