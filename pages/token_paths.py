"""Token paths: one aligned sentence in several languages, every token's experts layer by layer
side by side, and how the tokens of a sentence (or one token) move between experts from layer to layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import streamlit as st

from moe_core.analysis.flow import expert_flow
from polyroute.ui.data import item_paths, traced_items
from polyroute.ui.draw import draw
from polyroute.ui.expert_links import expert_picker, most_visited
from polyroute.ui.frame import (
    among,
    choose_run,
    choose_store,
    chosen_count,
    explained,
    lang_name,
    on_a_phone,
    page,
    parse_list,
    subset_of,
    url_widget,
)
from polyroute.ui.token_charts import (
    PALETTE,
    TOKENS_PER_ROW,
    colours_repeat,
    flow_chart,
    path_grid,
    side_by_side,
    token_label,
)

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
    looking_at="Pick a sentence and a few languages: the same sentence is shown in each. In each grid, a column "
    "is one token (a word, a piece of a word or a few bytes, in the order the model reads them) and a line is "
    "one MoE layer; the colour and number of a cell say which expert got most of that token there. The same "
    "expert has the same colour everywhere on the page. Long sentences wrap into blocks, like lines of text, "
    "with the tokens written above each block.\n\n"
    "In the token text, **␣** is a space the token starts with or holds, **…** a token with no text of its own "
    "(a piece of a character split into bytes, finished by the next token), and **⏎** a line break.\n\n"
    "Languages in the same script often share experts in the first layers; in the middle layers, languages "
    "that mean the same thing tend to meet at the same experts.",
)
choice = choose_run(choose_store())
n_experts = choice.layout.n_experts
with explained():
    items = {item.item_id: item for item in traced_items(choice.path, choice.run.run_id, choice.version, choice.ref)}

pick_langs, pick_width = st.columns([4, 1])
langs = pick_langs.multiselect(
    "Languages",
    choice.langs,
    format_func=lang_name,
    help="Two or more languages to compare; the sentences mean the same in each.",
    placeholder="Choose languages",
    **url_widget(
        "langs",
        "token_paths_langs",
        default_langs(choice.langs, choice.ref),
        parse=parse_list(str),
        fix=subset_of(choice.langs),
    ),
)
pick_langs.caption(chosen_count(langs, choice.langs))
ROW_SIZES = [8, 12, 16, 24, 32, 48, 64]
per_row = pick_width.selectbox(
    "Tokens per line",
    ROW_SIZES,
    help="A long sentence wraps after this many tokens: fewer make bigger cells and labels.",
    **url_widget(
        "per_line", "token_paths_per_row", 8 if on_a_phone() else TOKENS_PER_ROW, parse=int, fix=among(ROW_SIZES)
    ),
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
    format_func=item_label,
    help="An aligned item of the corpus: the same sentence in every language of the run.",
    **url_widget("item", "token_paths_item", first_widest, fix=among(list(items))),
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
    "right-to-left scripts such as Arabic or Hebrew), rows the MoE layers; a cell's colour and number are the "
    "expert that gets most of the token's weight there. A long sentence wraps into blocks, with its tokens "
    "written above each. ␣ is a space, … a token with no text of its own (part of a character), ⏎ a line "
    "break. Hover over a cell for all its experts and weights."
    + (
        f" This model has {n_experts} experts and the palette {len(PALETTE)} colours, so colours repeat and the "
        "grids have no legend: the tooltip names each cell's experts."
        if colours_repeat(n_experts)
        else ""
    )
)
for path in paths:
    st.markdown(f"**{lang_name(path.lang)}**: {path.text or '(text not in the store)'}")
places = st.columns(len(paths)) if side_by_side(paths) else [st.container() for _ in paths]
for place, path in zip(places, paths, strict=True):
    draw(path_grid(path, n_experts, int(per_row)), place, width="stretch")
visited = most_visited(np.concatenate([path.experts for path in paths]), paths[0].layers)
expert_picker(choice.run.run_id, visited, "token_paths_browse")

st.subheader("How the tokens move between experts")
st.caption(
    "Experts are dots in a column per MoE layer; a line joins an expert to one in the next layer, as wide as "
    "the tokens that take that step (each token's weight is shared among its experts)."
)
pick_lang, pick_scope, pick_token = st.columns([2, 2, 3])
by_lang = {path.lang: path for path in paths}
flow_lang = pick_lang.selectbox(
    "Language",
    list(by_lang),
    format_func=lang_name,
    **url_widget("flow_lang", "token_paths_flow_lang", paths[0].lang, fix=among(list(by_lang))),
)
scope = pick_scope.radio(
    "Show", [WHOLE, ONE], **url_widget("flow", "token_paths_flow_scope", WHOLE, fix=among([WHOLE, ONE]))
)
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
        format_func=lambda pos: token_label(path, pos),
        **url_widget("token", "token_paths_flow_token", first_text, parse=int, fix=among(positions)),
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
draw(chart, width="stretch")
if hidden:
    st.caption(f"{hidden} weaker lines are left out so that the strongest ones stay readable.")
