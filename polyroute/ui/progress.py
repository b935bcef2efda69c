"""A background job's progress on its page (Collect, Evaluate, Adapt): a bar while it runs, what came
of it once it ends, and one rerun of the whole page then, so that the page's button comes back and
the new run is listed.

The job runs in a thread of the app (`polyroute.background`) and never touches Streamlit; this fragment
polls its snapshot every 2 s while it runs. Polling each second kept other sessions' widgets from
ever loading on a busy 2-core machine (five browsers and a collection at once; tests/test_browser.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from polyroute.background import DONE, Job

State = Any  # a job's own JobState subclass, with a `fraction` in [0, 1]


def follow(
    find: Callable[[], Job[Any] | None],
    key: str,
    *,
    running: Callable[[State], str],
    done: Callable[[State, Any], None],
    ended: Callable[[State], None] | None = None,
) -> None:
    """Draw the job `find()` returns: `running(state)` is the bar's text, `done(state, outcome)` draws
    its success, a failure is a warning. `ended(state)` runs once when the job ends while a session of
    this page watched it (or started it: `started(key)`), just before the page reruns."""
    watching = f"{key}_was_running"

    def status() -> None:
        job = find()
        if job is None:
            return
        state = job.snapshot()
        if state.running:
            st.progress(state.fraction, text=running(state))
        elif state.stage == DONE and state.outcome is not None:
            done(state, state.outcome)
        else:
            st.warning(f"The {job.kind} stopped: {state.error}", icon=":material/error:")
        if st.session_state.get(watching) and not state.running:
            st.session_state[watching] = False
            if ended is not None:
                ended(state)
            st.rerun()
        st.session_state[watching] = state.running

    job = find()
    live = job is not None and job.snapshot().running
    st.fragment(status, run_every=2.0 if live else None)()


def started(key: str) -> None:
    """Call after starting the job `follow(..., key)` draws, then rerun: the page polls it from then on."""
    st.session_state[f"{key}_was_running"] = True
    st.rerun()
