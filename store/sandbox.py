"""The read-only SQL console behind `polyroute sql` (and the app's SQL page).

A statement runs in a read-only transaction on a connection with external access disabled and
the configuration locked (its own read-only connection from the CLI, a cursor of the app's
shared store in the app), so it can neither write, nor read files, nor loosen those settings; only a
single SELECT-like statement is accepted; results stop at a row cap and a timer interrupts
queries that run too long.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from store.connection import Store, open_store, translate
from store.errors import SqlRefused, StoreError
from store.shared import LOCKED_DOWN, SharedStore

READ_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


@dataclass(frozen=True, kw_only=True)
class SqlResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool  # more rows existed than the cap


def check_statement(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse anything but one read-only statement, saying what was found."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as error:
        raise SqlRefused(f"the SQL does not parse: {str(error).splitlines()[0]}") from None
    if len(statements) != 1:
        raise SqlRefused(f"one statement at a time, please ({len(statements)} given)")
    kind = statements[0].type
    if kind not in READ_STATEMENTS:
        name = str(kind).rsplit(".", 1)[-1]
        raise SqlRefused(f"only read-only queries (SELECT, WITH ... SELECT) run here; this is a {name} statement")


def run_sql(source: str | Path | SharedStore, sql: str, *, max_rows: int = 1000, timeout_s: float = 10.0) -> SqlResult:
    """Run one read-only query on a store (a file, or the app's shared store) and return at most
    `max_rows` rows, stopping it after `timeout_s` seconds."""
    if isinstance(source, SharedStore):
        with source.reading() as store:
            return _run(store, sql, max_rows, timeout_s)
    store = open_store(source, read_only=True, config=LOCKED_DOWN)
    try:
        store.con.execute("SET lock_configuration = true")
        return _run(store, sql, max_rows, timeout_s)
    finally:
        store.close()


def _run(store: Store, sql: str, max_rows: int, timeout_s: float) -> SqlResult:
    con = store.con
    try:
        check_statement(con, sql)
        # Read-only even on the app's writable instance: a SELECT that writes (nextval) is refused too.
        con.execute("BEGIN TRANSACTION READ ONLY")
        timer = threading.Timer(timeout_s, con.interrupt)
        timer.start()
        try:
            cursor = con.execute(sql)
            columns = [d[0] for d in cursor.description or []]
            rows = cursor.fetchmany(max_rows + 1)
        finally:
            timer.cancel()
            con.execute("ROLLBACK")
    except duckdb.InterruptException:
        raise SqlRefused(f"the query ran longer than {timeout_s:g} s and was stopped; narrow it down") from None
    except (duckdb.PermissionException, duckdb.TransactionException) as error:
        raise SqlRefused(f"not allowed here: {str(error).splitlines()[0]}") from None
    except duckdb.Error as error:
        translated = translate(error, store.path)
        if type(translated) is StoreError:  # a plain query error: say it without the store prefix
            raise SqlRefused(str(translated).replace(f"store {store.path}: ", "")) from None
        raise translated from None
    return SqlResult(columns=columns, rows=rows[:max_rows], truncated=len(rows) > max_rows)
