"""Small helpers shared by tests: store snapshots, a process that holds a store's lock, the
routing summaries checked against a rebuild from the stored rows."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

TABLES = ("models", "languages", "corpora", "texts", "runs", "sequences", "tokens", "route_lists", "router_probs")


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


SUMMARY_ORDER = {
    "sequence_routing": "seq_id, layer",
    "language_routing": "lang, layer",
    "language_expert_routing": "lang, layer, expert",
    "language_pair_divergence": "source, lang_a, lang_b, layer",
}


def assert_summaries_match_a_rebuild(db: Path, run_id: int, scratch: Path) -> None:
    """The summaries the writer kept for run `run_id` equal those rebuilt from its stored rows (on a
    copy in `scratch`), sums to rounding."""
    import shutil

    import pytest

    from store import open_store, upgrades

    rebuilt = scratch / f"rebuilt-{db.name}"
    shutil.copy(db, rebuilt)
    wal = Path(f"{db}.wal")  # a killed writer's last batches may be there still
    if wal.exists():
        shutil.copy(wal, f"{rebuilt}.wal")
    with open_store(rebuilt) as store:
        upgrades.rebuild_summaries(store, run_id)
    for table, order in SUMMARY_ORDER.items():
        query = f"SELECT * FROM {table} WHERE run_id = {run_id} ORDER BY {order}"
        with duckdb.connect(str(db), read_only=True) as kept, duckdb.connect(str(rebuilt), read_only=True) as again:
            written, expected = kept.execute(query).fetchall(), again.execute(query).fetchall()
        assert len(written) == len(expected), table
        assert written or table == "language_pair_divergence", table  # no pair yet: one language of each item
        for row, want in zip(written, expected, strict=True):
            for value, wanted in zip(row, want, strict=True):  # sums in another order: equal to rounding
                assert value == (pytest.approx(wanted, rel=1e-9, abs=1e-12) if isinstance(wanted, float) else wanted)
    rebuilt.unlink()
    Path(f"{rebuilt}.wal").unlink(missing_ok=True)


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
