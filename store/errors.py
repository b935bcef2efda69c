"""Store errors: every `duckdb.Error` leaves this package as one of these, with the fix in its message."""

from moe_core.errors import FixableError


class StoreError(FixableError):
    """The store cannot do what was asked; the message says why and what to do (a parameter as `{name}`)."""


class StoreMissing(StoreError):
    """No store file where one was expected."""


class StoreLocked(StoreError):
    """Another process holds the store file (DuckDB allows one writing process)."""


class StoreFull(StoreError):
    """The disk holding the store has no room left."""


class StoreCorrupt(StoreError):
    """The file is not a DuckDB database, is damaged, or is a DuckDB file that is not a Polyroute store."""


class SqlRefused(StoreError):
    """A console statement that is not a single read-only query."""
