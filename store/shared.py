"""One store file shared by a long-lived process that serves many users at once (the app).

DuckDB lets one process write a file, and within a process every connection to it must use the
same settings. So the app opens each store once, for writing when it can: it then owns the file
while it runs, its collections write through that one instance while every page reads through a
cursor of its own, and readers see each batch as soon as it commits. When another process is
already reading the file, the app opens it read-only instead and says that it cannot collect.

The instance never touches files other than the store (external access off) and its settings are
locked, which is what lets the SQL console run users' queries on it (`store.sandbox`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from store.connection import Store, open_store
from store.errors import StoreLocked, StoreMissing

# No files but the store, and no extension fetched or loaded behind a query's back.
LOCKED_DOWN = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}
# One query must not take the machine: past this DuckDB spills to a folder beside the store (its
# default `<store>.tmp`), and refuses what cannot spill. POLYROUTE_MEMORY_LIMIT overrides it.
MEMORY_LIMIT = "2GB"


def bounded(file: Path) -> dict[str, str]:
    """DuckDB settings that bound the app's memory and keep its spilled data beside the store."""
    return {"memory_limit": os.environ.get("POLYROUTE_MEMORY_LIMIT", MEMORY_LIMIT), "temp_directory": f"{file}.tmp"}


class SharedStore:
    """A store file opened once for a process; `reading()` and `writing()` hand out cursors."""

    def __init__(self, path: str | Path) -> None:
        file = Path(path).expanduser()
        if not file.is_file():  # a mistyped path must not become a new, empty store
            raise StoreMissing(f"no store at {file}: build one with `polyroute demo --db {file}`, or choose another")
        try:
            self._store = open_store(file, config={**LOCKED_DOWN, **bounded(file)})
            self.why_read_only = ""
        except StoreLocked as locked:
            # Another process reads the file: we may read too, but not write while it has it open.
            self._store = open_store(file, read_only=True, config={**LOCKED_DOWN, **bounded(file)})
            self.why_read_only = str(locked)
        self._store.con.execute("SET lock_configuration = true")
        self.path = self._store.path

    @property
    def writable(self) -> bool:
        return not self._store.read_only

    @contextmanager
    def reading(self, *, snapshot: bool = True) -> Iterator[Store]:
        """A store on a fresh cursor, in one snapshot: every read in the block sees the batches
        committed when it began and nothing later, so a run being collected reads consistently.
        Without `snapshot` the caller begins its own transaction (the SQL console's read-only one)."""
        cursor = self._store.con.cursor()
        try:
            if snapshot:
                cursor.begin()
            yield Store(self.path, cursor, read_only=True, shared=True)
        finally:
            cursor.close()  # ends the snapshot: nothing was written in it

    @contextmanager
    def writing(self) -> Iterator[Store]:
        """A writable store on a fresh cursor (refused, with the reason, when the file is read-only here)."""
        if not self.writable:
            raise StoreLocked(self.why_read_only)
        cursor = self._store.con.cursor()
        try:
            yield Store(self.path, cursor, read_only=False, shared=True)
        finally:
            cursor.close()

    def close(self) -> None:
        self._store.close()
