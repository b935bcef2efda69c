"""Compare runs: several runs' divergence from one reference language on one depth axis (models of
different depth line up), steered runs against the unsteered run of their model layer by layer,
and each language's middle-band mean per run."""

from __future__ import annotations

import streamlit as st

from polyroute.analyses.routing import run_label
from polyroute.ui.compare import (
    band_bars,
    common_langs,
    depth_curves,
    difference_curves,
    runs_without_band,
    traced_runs,
)
from polyroute.ui.data import comparison, table, version
from polyroute.ui.draw import draw
from polyroute.ui.frame import among, choose_store, explained, lang_name, page, parse_list, subset_of, url_widget
from polyroute.ui.words import page_words

ALL = "all"  # the curves' language choice: the mean over every compared language

page(
    "Compare runs",
    "Several runs side by side: how far each routes from the reference language at every depth, what a steering "
    "plan changed, and each language's mean in the middle band.",
    looking_at="Each line is one run: its mean divergence from the reference language (0 = the same experts, "
    "1 = nothing in common), drawn over depth from the first layer (0) to the last (1), so that models of "
    "different depth line up. A run traced with a steering plan is also drawn against an unsteered run of the "
    "same model: above zero it routes further from the reference than without the plan, below zero closer. "
    "The bars give each language's mean over each run's middle band.",
)
store = choose_store()
runs = {run.run_id: run for run in traced_runs(store)}
if len(runs) < 2:
    st.info("Comparing needs two traced runs or more: trace another on the **Collect** page.", icon=":material/info:")
    st.stop()
ids = list(runs)
chosen = st.multiselect(
    "Runs",
    ids,
    format_func=lambda run_id: run_label(runs[run_id]),
    help="A steered run is compared with an unsteered run of the same model when one is chosen too.",
    **url_widget("runs", "compare_runs", ids[-2:], parse=parse_list(int), fix=subset_of(ids)),
)
if len(chosen) < 2:
    st.info("Choose two runs or more.", icon=":material/info:")
    st.stop()
shared = common_langs([runs[run_id] for run_id in chosen])
if not shared:
    st.warning("The chosen runs have no language in common to be the reference: choose others.")
    st.stop()
controls = st.columns(2)
ref = controls[0].selectbox(
    "Reference language",
    shared,
    format_func=lang_name,
    help="Only a language every chosen run traced.",
    **url_widget("ref", "compare_ref", "eng_Latn" if "eng_Latn" in shared else shared[0], fix=among(shared)),
)
versions = tuple(version(runs[run_id]) for run_id in chosen)
with explained(), st.spinner("Comparing the runs ..."):
    result = comparison(str(store.path), tuple(chosen), versions, "divergence", ref=ref)
for note in result.notes:
    st.info(page_words(note), icon=":material/info:")
langs = result.params["langs"].split(",") if result.params["langs"] else []
lang = controls[1].selectbox(
    "Curves of",
    [ALL, *langs],
    format_func=lambda code: "every language (mean)" if code == ALL else lang_name(code),
    **url_widget("lang", "compare_lang", ALL, fix=among([ALL, *langs])),
)

by_layer = table(result, "by_layer")
curves = table(result, "mean_by_layer") if lang == ALL else by_layer[by_layer["lang"] == lang]
whose = "the mean over the languages" if lang == ALL else lang_name(lang)
draw(
    depth_curves(
        curves,
        title=f"Routing divergence from {lang_name(ref)} by depth: {whose}",
        subtitle="Depth = layer / (layers - 1): the first layer is 0 and the last is 1 in every model.",
    ),
    width="stretch",
)

differences = curves.dropna(subset=["difference"])
if differences.empty:
    st.info(
        "None of the chosen runs is a steered run with an unsteered run of the same model beside it: choose both "
        "to see what the plan changed.",
        icon=":material/info:",
    )
else:
    draw(
        difference_curves(
            differences,
            title=f"What steering changed: divergence from {lang_name(ref)}, steered minus unsteered ({whose})",
            subtitle="Per decoder layer of the model, against an unsteered run of the same model.",
        ),
        width="stretch",
    )

band_means = table(result, "band_mean")
bandless = runs_without_band(band_means)
if len(bandless) == len(chosen):
    st.info(
        "None of these runs' models has a MoE layer in the middle zone of its depth (37.5-62.5%), so there is no "
        "middle-band mean to compare.",
        icon=":material/info:",
    )
else:
    draw(
        band_bars(band_means, title=f"Mean divergence from {lang_name(ref)} in each run's middle band"),
        width="stretch",
    )
    if bandless:
        st.caption(
            f"Not drawn: {', '.join(f'run {run_id}' for run_id in bandless)}, whose model has no MoE layer in the "
            "middle zone of its depth (37.5-62.5%)."
        )
with st.expander("The runs and the numbers behind the charts"):
    st.dataframe(table(result, "runs"), hide_index=True, width="stretch")
    st.dataframe(table(result, "band_mean"), hide_index=True, width="stretch")
