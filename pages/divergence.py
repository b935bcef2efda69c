"""Divergence: per-layer divergence of each language from the reference language, the mean in an
adjustable middle band, and the routing entropy and within-sentence consistency curves."""

from __future__ import annotations

import streamlit as st

from polyroute.ui.charts import GROUPINGS, layer_curves, ranked_bars, with_language_facts
from polyroute.ui.colours import group_values
from polyroute.ui.data import analysis, middle_band, table
from polyroute.ui.draw import draw
from polyroute.ui.frame import (
    among,
    band_caption,
    band_of,
    choose_run,
    choose_store,
    chosen_count,
    explained,
    lang_name,
    langs_param,
    layers_text,
    page,
    parse_pair,
    show_langs,
    subset_of,
    url_widget,
)
from polyroute.ui.sources import choose_source
from polyroute.ui.words import page_words

page(
    "Divergence",
    "How differently each language routes from the reference language on the same sentences, layer by layer: "
    "0 means the same experts with the same weights, 1 means nothing in common.",
    looking_at="Each line is one language. For every MoE layer it says how differently that language's tokens "
    "are sent to the experts than the reference language's tokens of the same sentences.\n\n"
    "The lines usually make a **U**: high in the first layers, where each script has its own tokens, and in the "
    "last ones, where each language writes its own words; low in between. That **middle band** (shaded) is where "
    "a model shares meaning across languages, so it is where languages share experts, where steering a language "
    "toward another's experts works best, and where a language far from the rest is likely to be served worst. "
    "The bars rank the languages by their mean divergence in the band.\n\n"
    "The **routing distribution** says what is compared: the router's probabilities for every expert (soft), "
    "the weights it gave the experts it chose (weight), or only which experts it chose (hard).\n\n"
    "Below, two more curves per language: how spread out its routing is (normalised entropy) and how alike the "
    "tokens of one sentence route (consistency, a Jaccard overlap).",
)
choice = choose_run(choose_store())
run_id, layers = choice.run.run_id, [int(layer) for layer in choice.layout.layers]
others = [lang for lang in choice.langs if lang != choice.ref]

controls = st.columns([3, 2, 2, 2])
langs = controls[0].multiselect(
    "Languages",
    others,
    format_func=lang_name,
    help="Compared with the reference language chosen in the sidebar.",
    placeholder="Choose languages",
    **url_widget(
        "langs",
        f"divergence_langs_{run_id}",
        others,
        parse=langs_param(others),
        fix=subset_of(others),
        show=show_langs(others),
    ),
)
controls[0].caption(chosen_count(langs, others))
colour = controls[1].radio(
    "Colour by",
    list(GROUPINGS),
    format_func=GROUPINGS.__getitem__,
    horizontal=True,
    help="Each family, script and resource class keeps one colour on every page.",
    **url_widget("colour", "divergence_colour", "family", fix=among(list(GROUPINGS))),
)
band = (
    controls[2].select_slider(
        "Middle band (layers)",
        options=layers,
        help="The shaded layers; the bar chart averages divergence over them. Drag both ends onto one layer "
        "to look at a single layer.",
        **url_widget(
            "band",
            f"divergence_band_{run_id}",
            middle_band(choice.layout),
            parse=parse_pair,
            fix=band_of(layers),
            ranged=True,
        ),
    )
    if len(layers) > 1
    else (layers[0], layers[0])
)
band_caption(controls[2], f"divergence_band_{run_id}", band)
source = choose_source(controls[3], choice, "divergence_source")
legend = group_values(choice.langs, colour)
if not langs:
    st.info("Choose at least one language to compare with the reference.")
    st.stop()

selection = {"langs": (choice.ref, *langs), "ref": choice.ref}
with explained(), st.spinner("Computing the curves ..."):
    curves = analysis(choice.path, run_id, choice.version, "divergence", source=source, **selection)
    in_band = analysis(choice.path, run_id, choice.version, "divergence", layers=band, source=source, **selection)
    entropy = analysis(choice.path, run_id, choice.version, "entropy", source=source, **selection)
    consistency = analysis(choice.path, run_id, choice.version, "consistency", **selection)
for note in dict.fromkeys(curves.notes):
    st.info(page_words(note), icon=":material/info:")

by_layer = with_language_facts(table(curves, "by_layer"))
draw(
    layer_curves(
        by_layer[by_layer["lang"] != choice.ref],
        value="divergence",
        value_title="Divergence from the reference (0-1)",
        title=f"Routing divergence from {lang_name(choice.ref)}, per layer",
        subtitle="Averaged over the sentences both languages have; the shaded layers are the middle band.",
        colour=colour,
        band=band,
        legend=legend,
    ),
    width="stretch",
)
band_mean = with_language_facts(table(in_band, "band_mean"))
draw(
    ranked_bars(
        band_mean[band_mean["lang"] != choice.ref],
        value="divergence",
        value_title="Mean divergence in the band",
        title=f"Mean divergence from {lang_name(choice.ref)} in {layers_text(band)}",
        colour=colour,
        legend=legend,
    ),
    width="stretch",
)

for result, value, value_title, title, subtitle in (
    (
        entropy,
        "normalised",
        "Routing entropy / log(experts)",
        "Routing entropy per layer",
        "How spread out each language's routing is: 1 = every expert equally.",
    ),
    (
        consistency,
        "consistency",
        "Mean Jaccard of two tokens' experts",
        "Within-sentence consistency per layer",
        "How alike the tokens of one sentence route: 1 = all the same experts.",
    ),
):
    draw(
        layer_curves(
            with_language_facts(table(result, "by_layer")),
            value=value,
            value_title=value_title,
            title=title,
            subtitle=subtitle,
            colour=colour,
            band=band,
            legend=legend,
        ),
        width="stretch",
    )
with st.expander("The numbers behind the charts"):
    st.dataframe(by_layer, hide_index=True, width="stretch")
