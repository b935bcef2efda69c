"""Token paths: one aligned sentence in several languages, every token's experts layer by layer
side by side, and how the tokens of a sentence (or one token) move between experts from layer to layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import streamlit as st

from moe_core.analysis.flow import expert_flow
from polyroute.ui.data import item_paths, traced_items
from polyroute.ui.frame import choose_run, choose_store, explained, kept, lang_name, page
from polyroute.ui.token_charts import flow_chart, path_grid, side_by_side, token_label

WHOLE, ONE = "the whole sentence", "one token"


def default_langs(langs: Sequence[str], ref: str) -> list[str]:
    """The reference language, the first language in another script, and another in the reference's."""
    script = ref.rpartition("_")[2]
    other = next((lang for lang in langs if lang.rpartition("_")[2] != script), None)
    same = next((lang for lang in langs if lang != ref and lang.rpartition("_")[2] == script), None)
    chosen = [lang for lang in (ref, other, same) if lang]
    return chosen + [lang for lang in langs if lang not in chosen][: max(0, 3 - len(chosen))]


page(
    "Token paths",
    "One sentence in several languages: which expert each token is sent to in every MoE layer, "
    "and how the tokens move between experts from one layer to the next.",
)
choice = choose_run(choose_store())
n_experts = choice.layout.n_experts
with explained():
    items = {item.item_id: item for item in traced_items(choice.path, choice.run.run_id, choice.version, choice.ref)}

langs = st.multiselect(
    "Languages",
    choice.langs,
    key=kept("token_paths_langs", choice.langs, default_langs(choice.langs, choice.ref)),
    format_func=lang_name,
    help="Two or more languages to compare; the sentences mean the same in each.",
)
most = max(len(item.langs) for item in items.values())
first_widest = next(item_id for item_id, item in items.items() if len(item.langs) == most)


def item_label(item_id: str) -> str:
    item = items[item_id]
    text = item.text or item_id
    text = text if len(text) <= 90 else text[:89] + "…"
    traced = sum(lang in item.langs for lang in langs)
    return text if traced == len(langs) else f"{text}  ({traced} of {len(langs)} chosen languages)"


item_id = st.selectbox(
    "Sentence",
    list(items),
    key=kept("token_paths_item", list(items), first_widest),
    format_func=item_label,
    help="An aligned item of the corpus: the same sentence in every language of the run.",
)
if not langs:
    st.info("Choose one or more languages above to see their token paths.", icon=":material/info:")
    st.stop()
with explained():
    paths = item_paths(choice.path, choice.run.run_id, choice.version, item_id, tuple(langs))
missing = [lang for lang in langs if lang not in items[item_id].langs]
if missing:
    st.info(f"This sentence was not traced in {', '.join(map(lang_name, missing))}.", icon=":material/info:")
if not paths:
    st.stop()

st.subheader("Each token's experts, layer by layer")
st.caption(
    "Columns are the tokens of each sentence in the order the model reads them (left to right, also for "
    "right-to-left scripts), rows the MoE layers; a cell's colour and number are the expert that gets most of "
    "the token's weight there. Hover over a cell for all its experts and weights."
)
for path in paths:
    st.markdown(f"**{lang_name(path.lang)}**: {path.text or '(text not in the store)'}")
places = st.columns(len(paths)) if side_by_side(paths) else [st.container() for _ in paths]
for place, path in zip(places, paths, strict=True):
    place.altair_chart(path_grid(path, n_experts), width="stretch")

st.subheader("How the tokens move between experts")
st.caption(
    "Experts are dots in a column per MoE layer; a line joins an expert to one in the next layer, as wide as "
    "the tokens that take that step (each token's weight is shared among its experts)."
)
pick_lang, pick_scope, pick_token = st.columns([2, 2, 3])
by_lang = {path.lang: path for path in paths}
flow_lang = pick_lang.selectbox(
    "Language", list(by_lang), key=kept("token_paths_flow_lang", list(by_lang), paths[0].lang), format_func=lang_name
)
scope = pick_scope.radio("Show", [WHOLE, ONE], key=kept("token_paths_flow_scope", [WHOLE, ONE], WHOLE))
path = by_lang[flow_lang]
# The sentence's own tokens: a start-of-text or template token routes alike in every language.
own = ~path.special if not path.special.all() else np.ones(len(path.pieces), dtype=bool)
experts, weights = path.experts[own], None if path.weights is None else path.weights[own]
title = f"{lang_name(path.lang)}: the whole sentence ({int(own.sum())} tokens of its own)"
if scope == ONE:
    positions = list(range(len(path.pieces)))
    first_text = next((pos for pos in positions if not path.special[pos]), 0)
    pos = pick_token.selectbox(
        "Token",
        positions,
        key=kept("token_paths_flow_token", positions, first_text),
        format_func=lambda pos: token_label(path, pos),
    )
    experts, weights = path.experts[pos : pos + 1], None if path.weights is None else path.weights[pos : pos + 1]
    title = f"{lang_name(path.lang)}: token {token_label(path, pos)}"
if path.weights is None:
    st.caption("This run stored expert ids only, without weights: each of a token's experts counts equally.")
flow = expert_flow(experts, weights, n_experts)
if len(flow) == 0:
    st.info("This model has a single MoE layer, so there is no next layer for tokens to move to.")
    st.stop()
chart, hidden = flow_chart(flow, path.layers, len(experts), title)
st.altair_chart(chart, width="stretch")
if hidden:
    st.caption(f"{hidden} weaker lines are left out so that the strongest ones stay readable.")
