"""Small helpers shared by tests: store snapshots, a process that holds a store's lock."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

TABLES = ("models", "languages", "corpora", "texts", "runs", "sequences", "tokens", "route_codes", "router_probs")


def snapshot(db: Path) -> dict[str, object]:
    """Row counts and a content digest of every table: equal snapshots = nothing changed."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        digest = {}
        for table in TABLES:
            rows = con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
            digest[table] = (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest())
        return digest
    finally:
        con.close()


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextmanager
def store_held_by_another_process(db: Path, *, read_only: bool = False) -> Iterator[int]:
    """Another process opens `db` (for writing, as the app would, or to read) until the block ends;
    yields its PID."""
    code = (
        "import duckdb, sys, time; con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == 'ro'); "
        "print('ready', flush=True); time.sleep(120)"
    )
    mode = "ro" if read_only else "rw"
    holder = subprocess.Popen([sys.executable, "-c", code, str(db), mode], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def trace_argv(db: Path, model: Path, corpus: Path, langs: str = "eng_Latn", *extra: str) -> list[str]:
    """`polyroute trace` arguments for a model, a corpus and languages, into the store `db`."""
    return ["trace", "--db", str(db), "--model", str(model), "--corpus", str(corpus), "--langs", langs, *extra]
