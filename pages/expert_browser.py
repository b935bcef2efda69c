"""Expert browser: one expert of a run (a layer and an expert, kept in the URL): how often each language
sends tokens to it, in its layer and the layers around, the tokens sent to it most in each language
with their sentences, the experts chosen with it, and what the analyses call it."""

from __future__ import annotations

import streamlit as st

from polyroute.ui.charts import GROUPINGS, ranked_bars, with_language_facts
from polyroute.ui.colours import group_values
from polyroute.ui.data import analysis, middle_band, table
from polyroute.ui.draw import draw
from polyroute.ui.expert_charts import neighbourhood_heatmap, partner_bars
from polyroute.ui.expert_links import with_browser_links
from polyroute.ui.frame import among, between, choose_run, choose_store, explained, lang_name, page, url_widget
from polyroute.ui.words import page_words

page(
    "Expert browser",
    "One expert of a run: which languages send it their tokens, in its layer and the layers around it, which "
    "tokens, which experts it works with, and what the analyses call it.",
    looking_at="An MoE layer sends each token to a few of its experts (its top-k). Choose a layer and an expert: "
    "the bars show, for each language, the share of its tokens sent to that expert (a uniform router would send "
    "k / E of them); the heatmap shows the same expert number in the layers around it.\n\n"
    "The tokens table lists, per language, the tokens sent to the expert most, each in its sentence (the token "
    "in ⟦ ⟧). They come from a sample: the sentences of each language that send the expert the most tokens. "
    "The experts chosen with it are those that the same tokens also chose in this layer.\n\n"
    "At the top, the labels other pages give it: **shared** (every language uses it, none dominates), "
    "**exclusive** (one language holds most of its use), **language-specific** (a language uses it much more "
    "than the reference language), in a language's **RISE subnetwork**, or trained by an adaptation.",
)
choice = choose_run(choose_store())
layout, run_id = choice.layout, choice.run.run_id
layers = [int(layer) for layer in layout.layers]
pick_layer, pick_expert, pick_sample, pick_colour = st.columns([1, 1, 1, 2])
layer = pick_layer.selectbox(
    "Layer",
    layers,
    help="The decoder layer (one with a router).",
    **url_widget("layer", f"browser_layer_{run_id}", middle_band(layout)[0], parse=int, fix=among(layers)),
)
expert = pick_expert.number_input(
    "Expert",
    min_value=0,
    max_value=layout.n_experts - 1,
    step=1,
    help=f"The expert's number in its layer, 0 to {layout.n_experts - 1}.",
    **url_widget("expert", f"browser_expert_{run_id}", 0, parse=int, fix=between(0, layout.n_experts - 1)),
)
sequences = pick_sample.number_input(
    "Sentences per language",
    min_value=1,
    max_value=200,
    step=5,
    help="How many sentences of each language the tokens and the co-chosen experts are read from: those that "
    "send the expert the most tokens.",
    **url_widget("sentences", "browser_sequences", 20, parse=int, fix=between(1, 200)),
)
colour = pick_colour.radio(
    "Colour the languages by",
    list(GROUPINGS),
    format_func=lambda option: GROUPINGS[option].lower(),
    horizontal=True,
    **url_widget("colour", "browser_colour", "family", fix=among(list(GROUPINGS))),
)
with explained(), st.spinner("Reading the expert's tokens ..."):
    found = analysis(
        choice.path, run_id, choice.version, "expert", ref=choice.ref,
        layer=int(layer), expert=int(expert), sequences=int(sequences),
    )  # fmt: skip
name = f"expert {expert} of layer {layer}"

st.subheader(f"What the analyses call {name}")
labels = table(found, "labels")
if labels.empty:
    st.markdown("None of the shared, exclusive, language-specific or RISE analyses singles it out (default settings).")
for row in labels.itertuples():
    who = f" for {lang_name(row.lang)}" if row.lang else ""
    value = f"{row.value:.3g}" if isinstance(row.value, float) else row.value
    st.markdown(f"- **{row.label}**{who}: {row.measure} {value} · *{row.analysis}* analysis, {row.params}")
for note in found.notes:
    st.caption(page_words(note))

languages = with_language_facts(table(found, "by_language"))
legend = group_values(choice.langs, colour)
uniform = layout.top_k / layout.n_experts
draw(
    ranked_bars(
        languages,
        value="frequency",
        value_title="Share of the language's tokens sent to it",
        title=f"How often each language sends a token to {name} (uniform: {uniform:.3f})",
        colour=colour,
        legend=legend,
    ),
    width="stretch",
)
around = with_language_facts(table(found, "neighbourhood"))
order = languages.sort_values("frequency", ascending=False)["name"].tolist()
draw(
    neighbourhood_heatmap(around, title=f"Expert {expert} in layers {found.params['neighbourhood']}", order=order),
    width="stretch",
)

st.subheader("The tokens sent to it most")
st.caption(
    f"From the {found.summary['sampled_sequences']} sampled sentences: per language, the tokens sent to it most, "
    "how often (sent to it / seen), their mean weight on it, and one of its sentences. Special tokens (start of "
    "text, chat template) are left out."
)
tokens = table(found, "top_tokens")
shown_langs = sorted(tokens["lang"].unique())
if not shown_langs:
    st.info(f"No sentence of the run sends a token to {name}.", icon=":material/info:")
    st.stop()
token_lang = st.selectbox(
    "Language",
    shown_langs,
    format_func=lang_name,
    **url_widget(
        "token_lang",
        "browser_token_lang",
        choice.ref if choice.ref in shown_langs else shown_langs[0],
        fix=among(shown_langs),
    ),
)
st.dataframe(
    tokens[tokens["lang"] == token_lang].drop(columns=["lang", "token_id"]),
    hide_index=True,
    width="stretch",
    column_config={
        "routed": st.column_config.NumberColumn("sent to it", help="Times the token was sent to the expert"),
        "seen": st.column_config.NumberColumn("seen", help="Times the token occurs in the sampled sentences"),
        "context": st.column_config.TextColumn("in its sentence", width="large"),
    },
)

st.subheader("The experts chosen with it")
partners = table(found, "coselected")
if partners.empty:
    st.caption(f"No sampled token chose another expert beside {name}.")
    st.stop()
draw(partner_bars(partners, title=f"Experts the tokens of {name} also chose in layer {layer}"))
st.caption(
    "Share: of the sampled tokens sent to it, how many also chose that expert; frequency: the share of all the "
    "layer's tokens that chose it (a partner far above its frequency works with this expert)."
)
st.dataframe(**with_browser_links(partners.assign(layer=int(layer)), run_id), hide_index=True, width="stretch")
