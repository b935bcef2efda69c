"""Form pieces that the pages running a model share (Collect, Steering, Evaluate, Adapt): the model
field (a checkpoint folder here, or the servers chosen in the sidebar), the gate that says whether
this page may start its background job now, and the Collect page's optional steering plan.

Each piece returns the problem in the page's words ("" when there is none); the page shows it beside
its form and disables its button, and the form stays drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from moe_core.steering import PlanError, SteeringPlan
from polyroute.background import Job, busy_message, writing_job
from polyroute.ui.model_place import ModelPlace
from store import SharedStore
from store import queries as q

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


NO_PLAN, UPLOADED = "none", "upload"


def steering_plan_field(place: ModelPlace, runs: Sequence[q.RunRow]) -> tuple[SteeringPlan | None, str]:
    """An optional steering plan to trace with: none, a plan file uploaded (as `polyroute plan -o`
    writes it), or the plan of a steered run already in the store. Returns (plan, problem)."""
    stored = {f"run {run.run_id}": run.plan for run in runs if run.plan is not None}
    choice = st.selectbox(
        "Steering plan",
        [NO_PLAN, UPLOADED, *stored],
        format_func=lambda option: {NO_PLAN: "none (trace as the model routes)", UPLOADED: "upload a plan file"}.get(
            option, f"the plan of {option}"
        ),
        key="collect_plan",
        help="Trace with the routers steered by a plan (made with `polyroute plan` or on the Steering page): the "
        "run is marked steered and can be compared with an unsteered one on the Compare runs page.",
    )
    if choice == NO_PLAN:
        return None, ""
    if place.remote:
        return None, "A steered collection runs on a model on this machine: choose no steering plan for a server."
    if choice == UPLOADED:
        upload = st.file_uploader("Plan file (JSON)", type=["json"], key="collect_plan_file")
        if upload is None:
            return None, "Upload a plan file, or choose no steering plan."
        text = upload.getvalue().decode("utf-8", errors="replace")
    else:
        text = stored[choice] or ""
    try:
        plan = SteeringPlan.from_json(text)
    except PlanError as error:
        return None, f"That steering plan cannot be used: {error}"
    st.caption(f"Steering: {plan.method}, layers {plan.band[0]}-{plan.band[1]}, {plan.source or 'no source given'}.")
    return plan, ""
