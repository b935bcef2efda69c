"""Form pieces that the pages running a model share (Collect, Steering, Evaluate, Adapt): the model
field (a checkpoint folder here, or the servers chosen in the sidebar) and the gate that says whether
this page may start its background job now.

Each piece returns the problem in the page's words ("" when there is none); the page shows it beside
its form and disables its button, and the form stays drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyroute.background import Job, busy_message, writing_job
from polyroute.ui.model_place import ModelPlace
from store import SharedStore

NO_SERVER = "Enter the URL of a GPU server (`polyroute serve`) in the sidebar."


def folder_problem(folder: str | Path) -> str:
    """Why `folder` is no model checkpoint ("" when it has a config.json)."""
    if not (Path(folder) / "config.json").is_file():
        return f"{folder} is not a model folder (it has no config.json): enter the folder of a checkpoint."
    return ""


def model_problem(place: ModelPlace, folder: str | Path) -> str:
    """What the model field lacks: a server URL (on a GPU server) or a checkpoint folder (here)."""
    if place.remote:
        return "" if place.servers else NO_SERVER
    return folder_problem(folder)


@dataclass(frozen=True, kw_only=True)
class JobGate:
    """Whether a page may start its job: `running` while any job writes the store (the button stays
    disabled), `problem` when the store is read-only here or another kind of job writes it."""

    running: bool = False
    problem: str = ""


def job_gate(store: SharedStore | None, job_class: type[Job[Any]], *, cannot: str, waits: str) -> JobGate:
    """The gate of a page whose job is `job_class`: `cannot` ends "this app opened the store read-only,
    so it cannot ...", `waits` names the job before "waits: <the other job>"."""
    if store is None:
        return JobGate()
    writer = writing_job(store)  # this page's job, or another writing the store
    if not store.writable:
        problem = f"This app opened the store read-only, so it cannot {cannot}: {store.why_read_only}"
    elif writer is not None and writer.kind != job_class.kind:
        problem = f"{waits} waits: {busy_message(writer, store)}."
    else:
        problem = ""
    return JobGate(running=writer is not None, problem=problem)
