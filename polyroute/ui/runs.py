"""The Overview's runs: the table of every run (with its name and note), and the form that renames,
annotates or deletes one; deleting asks for a confirmation first.

Renaming and notes go through `store.runs`; a deletion through `polyroute.background`, which refuses
it while a job writes the run.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from polyroute.background import delete_unwritten_run
from polyroute.run_status import shown_status
from polyroute.ui.frame import explained, run_title
from store import SharedStore
from store import queries as q
from store.runs import annotate_run, rename_run

CONFIRMING = "runs_confirm_delete"  # the run whose deletion waits for a yes


def runs_table(runs: Sequence[q.RunRow]) -> None:
    """Every run with its name, note, status and how far it got."""
    st.dataframe(
        [
            {
                "run": run.run_id,
                "name": run.name or "",
                "kind": run.kind,
                "model": run.model_id,
                "corpus": run.corpus_id,
                "languages": len(run.params.get("langs", [])),
                "status": shown_status(run),
                "sequences": f"{run.n_stored} / {run.n_planned}",
                "tokens": run.n_tokens,
                "created": run.created_at.strftime("%Y-%m-%d %H:%M"),
                "note": run.note or "",
            }
            for run in runs
        ],
        hide_index=True,
        width="stretch",
    )


def manage_runs(store: SharedStore, runs: Sequence[q.RunRow]) -> None:
    """Rename, annotate or delete one run (only where this app may write the store)."""
    if not store.writable:
        return
    by_id = {run.run_id: run for run in runs}
    with st.expander("Rename, annotate or delete a run", icon=":material/edit:"):
        run_id = st.selectbox("Run", list(by_id), format_func=lambda run_id: run_title(by_id[run_id]), key="manage_run")
        run = by_id[run_id]
        with st.form(f"run_{run_id}_form", border=False):
            name = st.text_input("Name", value=run.name or "", key=f"run_{run_id}_name")
            note = st.text_area("Note", value=run.note or "", key=f"run_{run_id}_note")
            if st.form_submit_button("Save name and note", icon=":material/save:"):
                with explained(), store.writing() as writer:
                    if name.strip() != (run.name or ""):
                        rename_run(writer, run_id, name)
                    annotate_run(writer, run_id, note)
                st.rerun()
        if st.session_state.get(CONFIRMING) != run_id:
            st.button("Delete this run …", key="run_delete", icon=":material/delete:", on_click=_ask, args=(run_id,))
            return
        st.warning(
            f"Delete {run_title(run)} and everything it stored ({run.n_stored:,} of {run.n_planned:,}, "
            f"{run.n_tokens:,} tokens)? This cannot be undone.",
            icon=":material/warning:",
        )
        yes, no = st.columns(2)
        if yes.button("Yes, delete it", key="run_delete_yes", type="primary"):
            st.session_state.pop(CONFIRMING, None)
            with explained():
                delete_unwritten_run(store, run_id)
            st.session_state.pop("manage_run", None)
            st.toast(f"Deleted {run_title(run)}.", icon=":material/delete:")
            st.rerun()
        no.button("Keep it", key="run_delete_no", on_click=_ask, args=(None,))


def _ask(run_id: int | None) -> None:
    st.session_state[CONFIRMING] = run_id
