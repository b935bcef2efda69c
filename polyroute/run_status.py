"""Which runs still marked `running` are alive, and which were interrupted (their process died).

A run records its writer (process id, host, and a token of that process) in its params when it
is created. DuckDB lets one process at a time write a store file, and no other process open it
while that one does: so whoever has the store open and sees a run marked `running` either is its
writer (this process, as the app is for a collection it runs) or knows that the writer is gone.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from store.queries import RunRow

INTERRUPTED = "interrupted"
_PROCESS = uuid.uuid4().hex  # this process, told apart from an earlier one that had the same pid


def writer_record() -> dict[str, Any]:
    """What a new run keeps in its params about the process that writes it."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "process": _PROCESS}


def shown_status(run: RunRow) -> str:
    """The run's status, with `interrupted` for a run marked running whose process is not this one."""
    if run.status != "running":
        return run.status
    writer = run.params.get("writer") or {}
    alive = writer.get("process") == _PROCESS and writer.get("pid") == os.getpid()
    return run.status if alive else INTERRUPTED


def interrupted_note(run: RunRow) -> str:
    """Where an interrupted run came from, for the line that tells how to finish it."""
    writer = run.params.get("writer") or {}
    if "pid" in writer:
        return f"its process {writer['pid']} on {writer.get('host', 'an unknown host')} stopped before it ended"
    return "its process stopped before it ended"
