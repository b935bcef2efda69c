"""Links to the Expert browser: every page that names an expert of a run opens it there with the
run, the layer and the expert in the link (`?run=..&layer=..&expert=..`, and the store when the
URL names one), from a table's link column or from a picker of the experts it names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pandas as pd
import streamlit as st

BROWSER = "pages/expert_browser.py"
BROWSER_URL = "expert_browser"  # the page's path in the app's URLs, relative to the page that links
LINK_COLUMN = "browse"


def expert_query(run_id: int, layer: int, expert: int) -> dict[str, str]:
    """The URL parameters that open expert `expert` of decoder layer `layer` of run `run_id`."""
    query = {"run": str(run_id), "layer": str(layer), "expert": str(expert)}
    store = st.query_params.get("store")
    return {"store": store, **query} if store else query


def expert_url(run_id: int, layer: int, expert: int) -> str:
    """A relative link to the Expert browser on that expert (for a table's link column)."""
    return f"{BROWSER_URL}?{urlencode(expert_query(run_id, layer, expert))}"


def link_expert(run_id: int, layer: int, expert: int, label: str | None = None, place: Any = st) -> None:
    """A link to the Expert browser on that expert."""
    place.page_link(
        BROWSER,
        label=label or f"Expert {expert} of layer {layer} in the Expert browser",
        icon=":material/manage_search:",
        query_params=expert_query(run_id, layer, expert),
    )


def with_browser_links(frame: pd.DataFrame, run_id: int) -> dict[str, Any]:
    """`st.dataframe` arguments for a table with `layer` and `expert` columns: the table with a last
    column of links that open each row's expert in the Expert browser."""
    linked = frame.assign(
        **{
            LINK_COLUMN: [
                expert_url(run_id, int(layer), int(expert))
                for layer, expert in zip(frame["layer"], frame["expert"], strict=True)
            ]
        }
    )
    config = st.column_config.LinkColumn(
        "Expert browser", display_text="open", help="Open this expert in the Expert browser"
    )
    return {"data": linked, "column_config": {LINK_COLUMN: config}}


def most_visited(experts: np.ndarray, layers: Sequence[int]) -> list[tuple[int, int, str]]:
    """Every (layer, expert) some token's top-k holds, with how many tokens, most first (ties: lower
    layer, then lower expert): choices for `expert_picker`. experts: [T, Y, k] ids (distinct within
    a token's top-k) of T tokens over the MoE `layers` [Y]."""
    experts = np.asarray(experts, dtype=np.int64)
    n_experts = int(experts.max(initial=-1)) + 1
    counts = np.stack([np.bincount(experts[:, y].reshape(-1), minlength=n_experts) for y in range(len(layers))])
    y, e = np.nonzero(counts)
    order = np.lexsort((e, y, -counts[y, e]))
    return [(int(layers[y[i]]), int(e[i]), f"{counts[y[i], e[i]]} tokens") for i in order]


def expert_picker(run_id: int, experts: Sequence[tuple[int, int, str]], key: str) -> None:
    """A choice among `experts` ((layer, expert, a note on it) each) and a link that opens the chosen
    one in the Expert browser."""
    if not experts:
        return
    pick, go = st.columns([3, 2], vertical_alignment="bottom")
    chosen = pick.selectbox(
        "Look closer at an expert",
        list(experts),
        format_func=lambda entry: f"layer {entry[0]} · expert {entry[1]}" + (f" ({entry[2]})" if entry[2] else ""),
        key=key,
        help="Its languages, the tokens sent to it and the experts chosen with it, in the Expert browser.",
    )
    link_expert(run_id, chosen[0], chosen[1], place=go)
