"""Opening a store: one DuckDB file, migrated on open, with DuckDB's errors turned into fixes.

A process that opens the store for writing is its only writer (DuckDB allows one writing
process). Opening never changes a file that is not a Polyroute store, and a failed open leaves
the file as it was. A new store is made under a temporary name beside its path and linked into
place once complete, so a full disk or a read-only folder leaves either a whole store or none.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb

from store import migrations
from store.errors import StoreCorrupt, StoreError, StoreFull, StoreLocked, StoreMissing

_PID = re.compile(r"PID (\d+)")
_CORRUPT_HINTS = ("not a valid duckdb database", "corrupt", "checksum", "serializ", "invalid block", "magic")
_FULL_HINTS = ("no space left on device", "disk quota exceeded")
_READ_ONLY_HINTS = ("permission denied", "read-only file system")


def translate(error: duckdb.Error, path: Path) -> StoreError:
    """The domain error for a DuckDB error on the store at `path`."""
    text = str(error)
    if "Could not set lock" in text or "Conflicting lock" in text:
        match = _PID.search(text)
        holder = f"process {match.group(1)}{_command(match.group(1))}" if match else "another process"
        return StoreLocked(
            f"store {path} is in use by {holder}: close the Polyroute app or command that has it open, "
            "or pass {db} another file"
        )
    if any(hint in text.lower() for hint in _FULL_HINTS):
        return StoreFull(
            f"the disk of store {path} is full ({text.splitlines()[0]}): free some space, or pass {{db}} a file "
            "on another disk; every batch committed before is kept"
        )
    if any(hint in text.lower() for hint in _READ_ONLY_HINTS):
        return StoreError(
            f"store {path} cannot be written ({text.splitlines()[0]}): pass {{db}} a file in a folder you may write"
        )
    if any(hint in text.lower() for hint in _CORRUPT_HINTS):
        return StoreCorrupt(
            f"store {path} is damaged or not a DuckDB database ({text.splitlines()[0]}); it was left untouched: "
            "move it aside or pass {db} another file"
        )
    return StoreError(f"store {path}: {text.splitlines()[0]}")


def translate_os_error(error: OSError, path: Path) -> StoreError:
    """The domain error for a file-system error while making the store at `path`."""
    what = f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFull(f"no room for a new store at {path} ({what}): free some space, or pass {{db}} another disk")
    if error.errno in (errno.EEXIST, errno.ENOTDIR):
        return StoreError(
            f"cannot make store {path}: a file stands where its folder should be ({what}); pass {{db}} another path"
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StoreError(
            f"cannot make store {path} ({what}): pass {{db}} a file in a folder you may write, "
            "or change its permissions"
        )
    return StoreError(f"cannot make store {path} ({what}): pass {{db}} another file")


def _command(pid: str) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""
    return f", `{command[:80]}`" if command else ""


class Store:
    """An open store: the connection, its file, and a transaction helper."""

    def __init__(self, path: Path, con: duckdb.DuckDBPyConnection, *, read_only: bool, shared: bool = False) -> None:
        self.path = path
        self.con = con
        self.read_only = read_only
        self.shared = shared  # one instance serves a long-lived process (the app): global settings stay put

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def transaction(self, con: duckdb.DuckDBPyConnection | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """All or nothing: commits when the block ends, rolls back when it raises."""
        cursor = con or self.con
        cursor.begin()
        try:
            yield cursor
        except BaseException as error:
            cursor.rollback()
            if isinstance(error, duckdb.Error):
                raise translate(error, self.path) from error
            raise
        try:
            cursor.commit()
        except duckdb.Error as error:
            raise translate(error, self.path) from error


# DuckDB folds its write-ahead log into the file when a commit takes the log past
# checkpoint_threshold, and a commit that large by itself skips the log and goes straight to the file
# (auto_checkpoint_skip_wal_threshold, 100 kB). A trace writes groups of about 128 MB
# (moe_core.pipeline): at 64 MB each goes to the file once, compressed, instead of to the log and
# again at a fold. Measured with the writer (bench/scale.py, 500M decisions): its commits took 82
# ms per million decisions, against 102 with a 1 GB log folded four times (7-8 s each). Small
# commits (a small run's, the app's) collect in the log: at DuckDB's default of 16 MB a fold after
# each one recompressed the tables' last, partly filled row groups (10M decisions in 2M groups: 2.7
# of the writer's 7.2 CPU seconds). A run's writer checkpoints when it ends
# (store.writer.checkpoint), and DuckDB when the store is closed.
#
# Nor does a checkpoint merge row groups (max_vacuum_tasks 0). Each fold leaves every table's last row
# group partly filled, and DuckDB's merge rewrites it with the next fold's rows, and more of what is
# already stored as the store grows: in a 200M-decision build (bench/scale.py) the writer's three folds
# took 4.9, 4.7 and 12.3 s with merging and 3.7, 3.3 and 3.8 s without. Deleting a run loses nothing
# by it: a run's writer checkpoints when it ends, so the run's rows fill row groups of their own, and
# DuckDB drops emptied row groups whole.
WRITE_SETTINGS = {"checkpoint_threshold": "64MB", "max_vacuum_tasks": 0}


def open_store(path: str | Path, *, read_only: bool = False, config: dict[str, Any] | None = None) -> Store:
    """Open (for writing: create and migrate) the store at `path`, with DuckDB settings `config`."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise StoreError(f"{file} is a folder, not a store file: pass {{db}} a file, e.g. {file / 'polyroute.duckdb'}")
    if read_only and not file.is_file():
        raise StoreMissing(f"no store at {file}: build one with `polyroute trace ... --db {file}` or pass {{db}}")
    if not read_only and not file.exists():
        _create(file)
    settings = dict(config or {}) if read_only else {**WRITE_SETTINGS, **(config or {})}
    try:
        con = duckdb.connect(str(file), read_only=read_only, config=settings)
        _no_progress_bar(con)
    except duckdb.Error as error:
        raise translate(error, file) from error
    try:
        _check_schema(con, file, read_only=read_only)
    except duckdb.Error as error:
        con.close()
        raise translate(error, file) from error
    except StoreError:
        con.close()
        raise
    return Store(file, con, read_only=read_only)


def _create(file: Path) -> None:
    """A new, migrated and checkpointed store at `file`: complete, or (when anything fails) absent."""
    partial = file.with_name(f".{file.name}.{os.getpid()}.new")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(str(partial))
        try:
            migrations.migrate(con)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        # A link, not a rename: a store that another process made meanwhile at `file` is kept, not replaced.
        with suppress(FileExistsError):
            os.link(partial, file)
    except duckdb.Error as error:
        failed = translate(error, file)  # named by the store's path, not the temporary one
        raise type(failed)(str(failed).replace(str(partial), str(file))) from None
    except OSError as error:
        raise translate_os_error(error, file) from None
    finally:
        for leftover in (partial, partial.with_name(partial.name + ".wal")):
            with suppress(OSError):  # never made (its folder could not be): nothing to remove
                leftover.unlink(missing_ok=True)


def discard_if_unused(path: str | Path) -> None:
    """Remove the store at `path` if it holds no run: what a command that failed before storing
    anything leaves of a store it created. A store that is locked, damaged or holds runs is kept."""
    file = Path(path).expanduser()
    if not file.is_file():
        return
    try:
        con = duckdb.connect(str(file), read_only=True)
        try:
            unused = con.execute("SELECT count(*) = 0 FROM runs").fetchone() == (True,)
        finally:
            con.close()
    except duckdb.Error:
        return
    if unused:
        for part in (file, file.with_name(file.name + ".wal")):
            part.unlink(missing_ok=True)


def _check_schema(con: duckdb.DuckDBPyConnection, file: Path, *, read_only: bool) -> None:
    done = migrations.applied(con)
    latest = migrations.available()[-1][0]
    if not done and migrations.user_tables(con):
        raise StoreCorrupt(
            f"{file} is a DuckDB database but not a Polyroute store (it has other tables); "
            "it was left untouched: pass {db} another file"
        )
    if done and max(done) > latest:
        raise StoreError(f"store {file} was written by a newer Polyroute (schema {max(done)}); upgrade Polyroute")
    if read_only:
        if len(done) < latest:
            raise StoreError(
                f"store {file} was written by an earlier Polyroute: upgrade it in place with "
                f"`polyroute upgrade --db {file}`"
            )
        return
    migrations.migrate(con)


def _no_progress_bar(con: duckdb.DuckDBPyConnection) -> None:
    """DuckDB draws a progress bar on stdout for a query over 2 s: it would break CSV and JSON output."""
    # In a Jupyter kernel without ipywidgets DuckDB refuses to touch the setting, and draws no bar there.
    with suppress(duckdb.InvalidInputException):
        con.execute("SET enable_progress_bar = false")
