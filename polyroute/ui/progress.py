"""A background job's progress on its page (Collect, Evaluate, Adapt): a bar and a Cancel button
while it runs, what came of it once it ends, and one rerun of the whole page then, so that the
page's button comes back and the new run is listed.

The job runs in a thread of the app (`polyroute.background`) and never touches Streamlit; this fragment
polls its snapshot every 2 s while it runs. Polling each second kept other sessions' widgets from
ever loading on a busy 2-core machine (five browsers and a collection at once; tests/test_browser.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from polyroute.background import CANCELLED, DONE, Job
from polyroute.ui.words import error_words

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
    its success, a failure is a warning. Cancel stops the job at its next safe point (between batches
    or training steps); its run keeps what it stored. `ended(state)` runs once when the job ends while a session of
    this page watched it (or started it: `started(key)`), just before the page reruns."""
    watching = f"{key}_was_running"

    def status() -> None:
        job = find()
        if job is None:
            return
        state = job.snapshot()
        if state.running:
            bar, button = st.columns([5, 1], vertical_alignment="bottom")
            text = running(state) + (" · cancelling at the next batch …" if state.cancelling else "")
            bar.progress(state.fraction, text=text)
            button.button(
                "Cancel", key=f"{key}_cancel", on_click=job.cancel, disabled=state.cancelling, icon=":material/stop:"
            )
        elif state.stage == DONE and state.outcome is not None:
            done(state, state.outcome)
        elif state.stage == CANCELLED:
            st.info(cancelled_message(job, state), icon=":material/stop_circle:")
        else:
            said = error_words(state.failure) if state.failure else state.error
            st.warning(f"The {job.kind} stopped: {said}", icon=":material/error:")
        if st.session_state.get(watching) and not state.running:
            st.session_state[watching] = False
            if ended is not None:
                ended(state)
            st.rerun()
        st.session_state[watching] = state.running

    job = find()
    live = job is not None and job.snapshot().running
    st.fragment(status, run_every=2.0 if live else None)()


def cancelled_message(job: Job[Any], state: State) -> str:
    """What a cancelled job left: its run, marked cancelled, with what it stored before it stopped."""
    what = job.what[0].upper() + job.what[1:]
    if state.run_id is None:
        return f"{what} was cancelled before it stored anything."
    message = f"{what} was cancelled: run {state.run_id} keeps what it stored and is marked cancelled."
    if job.resumable:
        message += f" Finish it later with `polyroute trace --resume {state.run_id}`, or delete it on the Overview."
    return message


def started(key: str) -> None:
    """Call after starting the job `follow(..., key)` draws, then rerun: the page polls it from then on."""
    st.session_state[f"{key}_was_running"] = True
    st.rerun()
