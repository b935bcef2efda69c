"""Evaluate: run an evaluation (here or on a GPU server, in the background), then task scores per
language with and without steering plans (from this page or `polyroute eval`), the sweep of a
plan's strength or layer window, and whether languages that route far from the reference language
score lower."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from polyroute.ui import evaluate as e
from polyroute.ui.charts import (
    GROUPINGS,
    correlation_scatter,
    sweep_lines,
    with_language_facts,
)
from polyroute.ui.data import analysis, table
from polyroute.ui.draw import draw
from polyroute.ui.frame import choose_run, choose_store, explained, kept, lang_name, page
from polyroute.ui.model_place import choose_place
from store import queries as q

page(
    "Evaluate",
    "How well the model does a task in each language, unsteered and with steering plans, and whether the "
    "languages whose routing differs most from the reference language score lowest.",
    looking_at="An evaluation scores the model on a task in each language, once as it is (unsteered) and once "
    "for each steering setting. The bars compare the variants per language; the scatter asks whether languages "
    "that route far from the reference language (their divergence in the middle band) score lower.",
)
store = choose_store()
place = choose_place()
with explained(), store.reading() as reader:
    results = pd.DataFrame([vars(row) for row in q.eval_results(reader)])
    # Only runs with scores: a failed run has none to show.
    scored = set(results["run_id"]) if not results.empty else set()
    runs = {run.run_id: run for run in q.list_runs(reader) if run.kind == "evaluation" and run.run_id in scored}
if not runs:
    st.info(
        "This store holds no evaluation yet: run one below, or from a terminal with `polyroute eval` "
        "(`polyroute eval -h` lists what it takes).",
        icon=":material/info:",
    )
with st.expander("Run an evaluation", expanded=not runs, icon=":material/play_arrow:"):
    e.launcher(store, place)
e.show_progress(store)  # right under the form's button, and above the scores of the new run
if not runs:
    st.stop()  # the form above is how to make one


def run_label(run_id: int) -> str:
    run = runs[run_id]
    return (
        f"run {run_id} · {run.params.get('task', '?')} · {run.model_id} · {len(run.params.get('langs', []))} languages"
    )


pick_run, pick_metric = st.columns([3, 2])
run_ids = sorted(runs, reverse=True)
run_id = pick_run.selectbox("Evaluation", run_ids, key=kept("evaluate_run", run_ids, run_ids[0]), format_func=run_label)
scores = with_language_facts(results[results["run_id"] == run_id])
metrics = sorted(scores["metric"].unique())
metric = pick_metric.selectbox("Score", metrics, key=kept("evaluate_metric", metrics, metrics[0]))
shown = scores[scores["metric"] == metric]

draw(
    e.score_bars(shown, value_title=metric, title=f"{metric} per language, {e.variant_words(shown)}"),
    width="stretch",
)
swept = shown[shown["variant"].str.contains("=")]
if not swept.empty:
    setting = swept["variant"].str.split("=").str[0].iloc[0]
    points = swept["variant"].str.split("=", n=1).str[1]
    swept = swept.assign(point=pd.to_numeric(points) if setting == "strength" else points)
    draw(
        sweep_lines(swept, setting=setting, value_title=metric, title=f"{metric} as the plan's {setting} changes"),
        width="stretch",
    )
with st.expander("The scores as a table"):
    st.dataframe(
        shown.pivot_table(index=["lang", "name"], columns="variant", values="value").reset_index(),
        hide_index=True,
        width="stretch",
    )
with st.expander("The answers, item by item", expanded=True):
    st.caption("What the model read (the prompt) and wrote for each item, one column per variant.")
    st.dataframe(e.answers_frame(store, run_id), hide_index=True, width="stretch", key="evaluate_answers")

st.subheader("Does routing divergence predict the score?")
st.caption(
    "Each dot is a language: how far its routing is from the reference language's in the middle layers (from "
    "the trace run chosen in the sidebar) against its score. A falling cloud means languages that route "
    "unlike the reference do worse."
)
choice = choose_run(store)
variants = sorted(shown["variant"].unique(), key=lambda name: name != "unsteered")
variant = st.selectbox("Scores of", variants, key=kept("evaluate_variant", variants, variants[0]))
by_lang = dict(
    zip(shown[shown["variant"] == variant]["lang"], shown[shown["variant"] == variant]["value"], strict=True)
)
if problem := e.correlation_problem(by_lang, choice.ref, choice.langs):
    st.info(problem, icon=":material/info:")
    st.stop()
source_col, colour_col = st.columns(2)
sources = list(e.DISTRIBUTIONS)
source = source_col.radio(
    "Routing distribution", sources, key=kept("distribution", sources, "soft"), format_func=e.DISTRIBUTIONS.__getitem__,
    help="Which routing the divergence compares: the router's full probabilities (soft), the weights it applied "
    "to its top-k experts (weight), or only which experts it chose (hard).",
)  # fmt: skip
colour = colour_col.radio(
    "Colour by", list(GROUPINGS), format_func=GROUPINGS.__getitem__, horizontal=True, key="evaluate_colour"
)
with explained():
    found = analysis(
        choice.path, choice.run.run_id, choice.version, "correlation", ref=choice.ref, source=source, scores=by_lang,
        score_name="score",
    )  # fmt: skip
summary = found.summary
draw(
    correlation_scatter(
        with_language_facts(table(found, "by_language")),
        score_title=f"{metric} ({variant})",
        title=f"Divergence from {lang_name(choice.ref)} ({source}) against {metric}, {summary['n']} languages",
        colour=colour,
    ),
    width="stretch",
)
st.caption(
    f"Pearson r = {summary['pearson_r']} (p = {summary['pearson_p']}), "
    f"Spearman rho = {summary['spearman_rho']} (p = {summary['spearman_p']})."
)
