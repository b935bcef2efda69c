"""Altair charts of the Token paths page: each language's layer x token grid of experts, and the
flow of tokens from the experts of one MoE layer to those of the next.

An expert has the same colour in every chart (its id picks it from one palette), so a grid and the
flow beside it can be read together, and so can two items or two languages. A long sentence wraps:
its grid is cut into blocks of a few tokens, one under the other like lines of text, each block
with its tokens written above it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Final

import altair as alt
import numpy as np
import pandas as pd

from polyroute.ui.frame import lang_name
from store.token_paths import TokenPath

CELL = 20  # pixels per token and per layer in a grid
SIDE_BY_SIDE_WIDTH = 800  # grids that fit in this many pixels together are shown side by side
# Streamlit fits the whole chart (axes, legend, title) into its height; only the width should fit.
FIT_WIDTH = alt.AutoSizeParams(type="fit-x", contains="padding")
MIN_TEXT_STEP = 13  # narrower cells cannot hold an expert's number
TOKENS_PER_ROW = 24  # a grid wraps after this many tokens (the page lets the reader choose)
# Twenty colours no two of which look alike: Tableau 10 less its grey, then eleven darker, brighter
# or paler ones. Past 20 experts they repeat, and the number in the cell tells experts apart.
PALETTE: Final = (
    "#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b", "#b279a2", "#ff9da6", "#9d755d",
    "#1b3a6b", "#8c3b00", "#00bcd4", "#5b2a86", "#c51b7d", "#a6d854", "#000000", "#009e73", "#ffff99",
    "#d9d9d9", "#4b5320",
)  # fmt: skip
MAX_LINKS_PER_STEP = 40  # more lines than this between two layers hide each other


def _ink(colour: str) -> str:
    """Black or white, whichever reads better on `colour` (#rrggbb)."""
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 150 else "white"


def shown_piece(piece: str) -> str:
    """A token's text made visible: spaces as ␣, line breaks as ⏎; an empty piece (a byte token that
    completes a character the token before it began) as …."""
    return piece.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥") or "…"


def token_label(path: TokenPath, pos: int) -> str:
    return f"{pos} · {shown_piece(path.pieces[pos])}"


def expert_colour(expert: int) -> str:
    return PALETTE[expert % len(PALETTE)]


def colours_repeat(n_experts: int) -> bool:
    """Whether some experts share a colour (the palette has fewer colours than the model has experts)."""
    return n_experts > len(PALETTE)


def expert_colours(n_experts: int) -> alt.Scale:
    return alt.Scale(domain=list(range(n_experts)), range=[expert_colour(e) for e in range(n_experts)])


def grid_frame(path: TokenPath, per_row: int = TOKENS_PER_ROW) -> pd.DataFrame:
    """One row per (token, MoE layer): its experts, strongest first, with their weights, and where
    the cell goes when the grid wraps after `per_row` tokens (`column`, and `line`: blocks one
    under the other, each a line of token text and then a line per layer)."""
    n_tokens, n_layers, top_k = path.experts.shape
    pos, layer = (grid.ravel() for grid in np.meshgrid(np.arange(n_tokens), np.arange(n_layers), indexing="ij"))
    if path.weights is None:
        experts = path.experts.reshape(-1, top_k)
        described = [", ".join(map(str, row)) + " (weights not stored)" for row in experts.tolist()]
    else:
        # The model's top-k order is strongest first already, but a stored order is no promise.
        order = np.argsort(-np.nan_to_num(path.weights, nan=-1.0), axis=-1, kind="stable")
        experts = np.take_along_axis(path.experts, order, axis=-1).reshape(-1, top_k)
        weights = np.take_along_axis(path.weights, order, axis=-1).reshape(-1, top_k)
        described = [
            ", ".join(f"{e} ({w:.2f})" for e, w in zip(es, ws, strict=True))
            for es, ws in zip(experts.tolist(), weights.tolist(), strict=True)
        ]
    block = pos // per_row
    lines_per_block = n_layers + 1
    return pd.DataFrame(
        {
            "language": lang_name(path.lang),
            "position": pos,
            "token": [shown_piece(path.pieces[p]) for p in pos],
            "layer": path.layers[layer],
            "expert": experts[:, 0],
            "experts": described,
            "column": pos % per_row,
            "line": block * lines_per_block + 1 + layer,
            "label_line": block * lines_per_block,
            "ink": [_ink(expert_colour(int(e))) for e in experts[:, 0]],
        }
    )


def path_grid(path: TokenPath, n_experts: int, per_row: int = TOKENS_PER_ROW) -> alt.LayerChart:
    """The grid of one language, as wide as its container, wrapped after `per_row` tokens: in each
    block a line with the tokens' text, then a line per MoE layer; a cell's colour is the token's
    strongest expert there, also written in the cell when it fits."""
    n_tokens, n_layers = len(path.pieces), len(path.layers)
    per_row = max(1, min(per_row, n_tokens))
    frame = grid_frame(path, per_row)
    column = f"(width / {per_row})"  # a token's width in pixels, as drawn
    x = alt.X("column:O", title=None, axis=None, scale=alt.Scale(paddingInner=0.06, domain=list(range(per_row))))
    # The y axis names the layers; the text lines of the blocks get no name.
    n_blocks = -(-n_tokens // per_row)
    names = {
        str(block * (n_layers + 1) + 1 + i): str(int(layer))
        for block in range(n_blocks)
        for i, layer in enumerate(path.layers)
    }
    y_axis = alt.Axis(labelExpr=f"{json.dumps(names)}[datum.value] || ''", ticks=False, domain=False, title="MoE layer")
    y_scale = alt.Scale(paddingInner=0.06, domain=list(range(n_blocks * (n_layers + 1))))
    y = alt.Y("line:O", axis=y_axis, scale=y_scale)
    tooltip = [
        alt.Tooltip("language:N"),
        alt.Tooltip("position:Q", title="token position"),
        alt.Tooltip("token:N"),
        alt.Tooltip("layer:O", title="MoE layer"),
        alt.Tooltip("experts:N", title="experts (weight), strongest first"),
    ]
    base = alt.Chart(frame).encode(x=x, y=y, tooltip=tooltip)
    # Past 20 experts the palette repeats, so a legend would give one colour to several experts: then
    # the number in the cell, or the tooltip, tells them apart (`colours_repeat` says so on the page).
    legend = (
        None
        if colours_repeat(n_experts)
        else alt.Legend(
            orient="top",
            direction="horizontal",
            titleOrient="left",
            columns=alt.ExprRef(expr=f"min({n_experts}, max(1, floor((width - 110) / 42)))"),
        )
    )
    marks = [
        base.mark_rect().encode(
            color=alt.Color("expert:N", scale=expert_colours(n_experts), title="strongest expert", legend=legend)
        )
    ]
    row = CELL if n_layers <= 16 else CELL // 2
    if row >= MIN_TEXT_STEP:
        # The number shows only where the columns, as drawn, are wide enough for it.
        marks.append(
            base.mark_text(fontSize=10).encode(
                text="expert:N",
                color=alt.Color("ink:N", scale=None),
                opacity=alt.condition(f"{column} >= {MIN_TEXT_STEP}", alt.value(1), alt.value(0)),
            )
        )
    # The tokens' text above each block, once per token, as large as its column allows.
    marks.append(
        alt.Chart(frame)
        .transform_filter(f"datum.layer == {int(path.layers[0])}")
        .mark_text(
            baseline="middle",
            fontSize=alt.ExprRef(expr=f"clamp({column} / 2.2, 8, 12)"),
            limit=alt.ExprRef(expr=f"{column} - 1"),
        )
        .encode(
            x=x,
            y=alt.Y("label_line:O", axis=y_axis, scale=y_scale),
            text="token:N",
            tooltip=[alt.Tooltip("position:Q", title="token position"), alt.Tooltip("token:N")],
        )
    )
    return alt.LayerChart(layer=marks).properties(
        title=alt.TitleParams(lang_name(path.lang), subtitle=f"{n_tokens} tokens", anchor="start"),
        height=row * n_blocks * (n_layers + 1),
        autosize=FIT_WIDTH,
    )


def side_by_side(paths: Sequence[TokenPath]) -> bool:
    """Whether the grids fit next to each other at full cell size (else they go one above the other)."""
    return len(paths) > 1 and sum(CELL * len(path.pieces) for path in paths) <= SIDE_BY_SIDE_WIDTH


def legend_values(largest: float) -> list[float]:
    """Three round sizes for a legend up to `largest` (a zero-width line or dot shows nothing)."""
    return sorted({float(f"{largest * share:.2g}") for share in (0.25, 0.5, 1.0)})


def flow_frames(flow: np.ndarray, layers: np.ndarray, n_tokens: int) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """The links of a flow [Y-1, E, E] (Y >= 2; the strongest `MAX_LINKS_PER_STEP` of each step
    between layers), its nodes, and how many links with mass were left out."""
    step, source, target = np.nonzero(flow)
    moved = flow[step, source, target]
    order = np.lexsort((-moved, step))  # by step, strongest first within a step
    step, source, target, moved = step[order], source[order], target[order], moved[order]
    keep = np.arange(len(step)) - np.searchsorted(step, step) < MAX_LINKS_PER_STEP
    links = pd.DataFrame(
        {
            "from_layer": layers[step[keep]],
            "from_expert": source[keep],
            "to_layer": layers[step[keep] + 1],
            "to_expert": target[keep],
            "moved": moved[keep],
            "share": moved[keep] / max(n_tokens, 1),
        }
    )
    # What a node holds is what leaves it, or, at the last layer, what arrives.
    held = np.concatenate([flow.sum(axis=2), flow[-1:].sum(axis=1)])
    node_layer, node_expert = np.nonzero(held)
    nodes = pd.DataFrame(
        {
            "layer": layers[node_layer],
            "expert": node_expert,
            "held": held[node_layer, node_expert],
            "share": held[node_layer, node_expert] / max(n_tokens, 1),
        }
    )
    return links, nodes, int((~keep).sum())


def flow_chart(flow: np.ndarray, layers: np.ndarray, n_tokens: int, title: str) -> tuple[alt.LayerChart, int]:
    """Experts as dots in a column per MoE layer, and a line from an expert to each expert of the
    next layer that tokens move to, as wide as the tokens that move (flow [Y-1, E, E], Y >= 2);
    and how many weak lines were left out (`MAX_LINKS_PER_STEP` per step)."""
    links, nodes, hidden = flow_frames(flow, layers, n_tokens)
    n_experts = flow.shape[1]
    x_scale = alt.Scale(domain=[float(layers.min()) - 0.3, float(layers.max()) + 0.3], nice=False)
    x_axis = alt.Axis(values=[int(layer) for layer in layers], format="d", grid=False)
    # Expert 0 at the top, as in a list; the axis names every expert while they fit.
    y_scale = alt.Scale(domain=[-0.5, n_experts - 0.5], reverse=True, nice=False, zero=False)
    y_axis = alt.Axis(values=list(range(n_experts)) if n_experts <= 32 else alt.Undefined, format="d", grid=False)
    # The y axis names the experts: their colours tie the dots and lines to the grids above.
    colours = expert_colours(n_experts)
    lines = (
        alt.Chart(links)
        .mark_rule(opacity=0.55, strokeCap="round")
        .encode(
            x=alt.X("from_layer:Q", scale=x_scale, axis=x_axis, title="MoE layer"),
            x2="to_layer:Q",
            y=alt.Y("from_expert:Q", scale=y_scale, axis=y_axis, title="expert"),
            y2="to_expert:Q",
            strokeWidth=alt.StrokeWidth(
                "moved:Q",
                scale=alt.Scale(domain=[0, float(links["moved"].max())], range=[0.5, 14]),
                title="tokens moved",
                legend=alt.Legend(values=legend_values(float(links["moved"].max())), format=".2~f"),
            ),
            color=alt.Color("from_expert:N", scale=colours, legend=None),
            tooltip=[
                alt.Tooltip("from_layer:O", title="from layer"),
                alt.Tooltip("from_expert:O", title="from expert"),
                alt.Tooltip("to_layer:O", title="to layer"),
                alt.Tooltip("to_expert:O", title="to expert"),
                alt.Tooltip("moved:Q", title="tokens moved", format=".2f"),
                alt.Tooltip("share:Q", title="share of the tokens", format=".0%"),
            ],
        )
    )
    dots = (
        alt.Chart(nodes)
        .mark_circle(opacity=1, stroke="white", strokeWidth=1)
        .encode(
            x=alt.X("layer:Q", scale=x_scale, axis=x_axis, title="MoE layer"),
            y=alt.Y("expert:Q", scale=y_scale, axis=y_axis, title="expert"),
            size=alt.Size(
                "held:Q",
                title="tokens at the expert",
                scale=alt.Scale(domain=[0, float(nodes["held"].max())], range=[10, 500]),
                legend=alt.Legend(values=legend_values(float(nodes["held"].max())), format=".2~f"),
            ),
            color=alt.Color("expert:N", scale=colours, legend=None),
            tooltip=[
                alt.Tooltip("layer:O", title="MoE layer"),
                alt.Tooltip("expert:O"),
                alt.Tooltip("held:Q", title="tokens at the expert", format=".2f"),
                alt.Tooltip("share:Q", title="share of the tokens", format=".0%"),
            ],
        )
    )
    chart = alt.LayerChart(layer=[lines, dots]).properties(
        title=alt.TitleParams(title, anchor="start"),
        height=max(240, min(18 * n_experts, 900)),
        autosize=FIT_WIDTH,
    )
    return chart, hidden
