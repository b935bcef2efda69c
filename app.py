"""Overview, the home page: what the store holds (models, runs, languages, corpora) and a map of
the pages; runs can be renamed, annotated, deleted and downloaded here. Run the app with `make run`
(or `streamlit run app.py`); the store is $POLYROUTE_DB.
"""

from __future__ import annotations

import streamlit as st

from polyroute.ui.frame import NAVIGATION, choose_store, explained, page
from polyroute.ui.run_download import run_download
from polyroute.ui.runs import manage_runs, runs_table
from store import queries as q

page(
    "Polyroute",
    "See how Mixture-of-Experts language models route the world's languages, token by token and layer by layer.",
    looking_at="A Mixture-of-Experts model sends every token to a few of its many experts, layer by layer. "
    "Polyroute records those choices for the same sentences in many languages and shows where languages share "
    "experts and where they part. A good first path: **Divergence** (how far each language routes from English, "
    "layer by layer: the U-shape), then **Expert sharing** (which languages group together), then **Token "
    "paths** (one sentence, token by token). **Steering** and **Adapt** change how the model routes; "
    "**Evaluate** measures what that does. Every page keeps its choices in its address: copy the link to share "
    "the view.",
)
store = choose_store()
with explained(), store.reading() as reader:
    models, runs = q.list_models(reader), q.list_runs(reader)
    languages, corpora = q.language_totals(reader), q.list_corpora(reader)

first, second, third, fourth = st.columns(4)
first.metric("Models", len(models))
second.metric("Runs", len(runs))
third.metric("Languages", len(languages))
fourth.metric("Tokens traced", f"{sum(run.n_tokens for run in runs):,}")
if not store.writable:
    st.info(f"This store is open read-only, so the Collect page cannot add runs: {store.why_read_only}")

st.subheader("Where to go")
for _, links in NAVIGATION:
    for link in (link for link in links if link.path != "app.py"):
        st.page_link(link.path, label=f"**{link.label}**: {link.about}", icon=link.icon)

st.subheader("Runs")
if not runs:
    st.write("The store holds no run yet: trace a corpus on the **Collect** page or with `polyroute trace`.")
else:
    runs_table(runs)
    manage_runs(store, runs)
    with st.expander("Download a run", icon=":material/folder_zip:"):
        run_download(store, runs, "overview_export")

st.subheader("Models")
st.caption("Each model's shape: decoder layers, how many of them route tokens to experts, and how many experts.")
st.dataframe(
    [
        {
            "model": model.model_id,
            "architecture": model.arch,
            "layers": model.n_layers,
            "MoE layers": model.n_moe_layers,
            "experts": model.n_experts,
            "top-k": model.top_k,
            "shared experts": model.n_shared_experts,
            "routing rule": model.scoring,
            "runs": model.n_runs,
        }
        for model in models
    ],
    hide_index=True,
    width="stretch",
)

st.subheader("Languages")
st.caption("Resource class runs from 0 (left behind) to 5 (winners), after Joshi et al. (2020).")
st.dataframe(
    [
        {
            "language": lang.lang,
            "name": lang.name,
            "family": lang.family,
            "script": lang.script,
            "resource class": lang.resource_class,
            "runs": lang.n_runs,
            "sequences": lang.n_sequences,
            "tokens": lang.n_tokens,
        }
        for lang in languages
    ],
    hide_index=True,
    width="stretch",
)

st.subheader("Parallel corpora")
st.caption("Texts with the same item mean the same thing in every language.")
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
