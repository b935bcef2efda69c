"""Ordered schema migrations: `migrations/NNN_name.sql`, each applied once. Every pending migration
and its data step (`store.upgrades.DATA_STEPS`) run in one transaction: the SQL in version order,
then the data steps in the order `DATA_STEPS` lists them (they read through today's queries, so
they need today's schema)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

import duckdb

LEDGER = "schema_migrations"


def available() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped with Polyroute, in order."""
    found = []
    for entry in resources.files("store").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            number, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append((int(number), name, entry.read_text(encoding="utf-8")))
    return sorted(found)


def applied(con: duckdb.DuckDBPyConnection) -> list[int]:
    if not _has_table(con, LEDGER):
        return []
    return [row[0] for row in con.execute(f"SELECT version FROM {LEDGER} ORDER BY version").fetchall()]


def user_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()").fetchall()
    return [row[0] for row in rows]


def migrate(con: duckdb.DuckDBPyConnection, progress: Callable[[int, int], None] | None = None) -> None:
    """Apply every migration not yet in the ledger; a data step reports to `progress` (default: a
    progress bar on stderr)."""
    from store import upgrades  # here, not on top: upgrades reads through queries, which import the connection

    con.execute(
        f"CREATE TABLE IF NOT EXISTS {LEDGER} "
        "(version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP DEFAULT current_timestamp)"
    )
    done = set(applied(con))
    pending = [(version, name, sql) for version, name, sql in available() if version not in done]
    if not pending:
        return
    con.begin()
    try:
        for version, name, sql in pending:
            con.execute(sql)
            con.execute(f"INSERT INTO {LEDGER} (version, name) VALUES (?, ?)", [version, name])
        names = {version: name for version, name, _ in pending}
        for version, step in upgrades.DATA_STEPS.items():
            if version in names:
                step(con, progress or upgrades.progress_bar(f"upgrading the store: {names[version]}"))
        con.commit()
    except BaseException:  # an interrupted upgrade leaves the store as it was
        con.rollback()
        raise
    # Schema changes go into the database file at once: with DuckDB 1.5.6, a read-only connection
    # failed to replay our ALTER TABLEs from the write-ahead log of a killed writer (test_resume).
    con.execute("CHECKPOINT")


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return name in user_tables(con)
