"""Polyroute's home page: what the store holds. The explorer pages arrive in `pages/`.

Run it with `make run` (or `streamlit run app.py`); the store file comes from $POLYROUTE_DB.
"""

from __future__ import annotations

import streamlit as st

from polyroute import default_db
from store import StoreError, open_store
from store.queries import list_corpora, list_runs

DEFAULT_STORE = str(default_db())

st.set_page_config(page_title="Polyroute", page_icon="🔀", layout="wide")
st.title("Polyroute")
st.caption("See how Mixture-of-Experts language models route the world's languages, token by token and layer by layer.")

store_path = st.sidebar.text_input(
    "Store file", value=DEFAULT_STORE, help="A DuckDB file written by `polyroute trace`."
)

try:
    with open_store(store_path, read_only=True) as store:
        runs = list_runs(store)
        corpora = list_corpora(store)
except StoreError as error:
    st.info(f"{error}")
    st.markdown(
        "To fill a store, trace a parallel corpus with a local MoE model:\n\n"
        "```\npolyroute trace --model MODEL_DIR --corpus builtin --langs eng_Latn,deu_Latn,jpn_Jpan "
        f"--db {store_path}\n```\n\n"
        "or build the demo store (a tiny MoE trained on the built-in corpus, every language, under a minute on a CPU):"
        f"\n\n```\npolyroute demo --db {store_path}\n```"
    )
    st.stop()

st.subheader("Runs in this store")
if not runs:
    st.write("The store is empty: trace a corpus with `polyroute trace` to add a run.")
else:
    st.dataframe(
        [
            {
                "run": run.run_id,
                "kind": run.kind,
                "model": run.model_id,
                "corpus": run.corpus_id,
                "languages": ", ".join(run.params.get("langs", [])),
                "status": run.status,
                "sequences": f"{run.n_stored} / {run.n_planned}",
                "tokens": run.n_tokens,
                "created": run.created_at.strftime("%Y-%m-%d %H:%M"),
            }
            for run in runs
        ],
        hide_index=True,
        width="stretch",
    )

st.subheader("Parallel corpora in this store")
st.caption("Texts with the same item mean the same thing in every language; the template made them from the source.")
st.dataframe(
    [
        {
            "corpus": corpus.corpus_id,
            "from": corpus.source,
            "items": corpus.n_items,
            "languages": len(corpus.langs),
            "template": corpus.template,
        }
        for corpus in corpora
    ],
    hide_index=True,
    width="stretch",
)
