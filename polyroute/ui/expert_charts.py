"""Charts of the Expert browser: one expert's use per language over the layers around its own (a
heatmap), and the experts chosen with it (bars in the experts' colours of the Token paths page).
The use per language in its layer is `charts.ranked_bars`."""

from __future__ import annotations

import altair as alt
import pandas as pd

from polyroute.ui.token_charts import expert_colour

SHOWN_PARTNERS = 20  # co-selected experts drawn: the legend and the axis stay readable
AXES_AND_TITLE_PX = 80  # a chart's title, its x axis's labels and title, and padding


def neighbourhood_heatmap(frame: pd.DataFrame, *, title: str, order: list[str]) -> alt.Chart:
    """Languages (rows, in `order`) x MoE layers (columns): the share of each language's tokens whose
    top-k holds the expert. frame: one row per (lang, layer) with name, frequency and rank."""
    return (
        alt.Chart(frame)
        .mark_rect()
        .encode(
            x=alt.X("layer:O", title="Decoder layer", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("name:N", title="Language", sort=order, axis=alt.Axis(labelLimit=220, labelOverlap=False)),
            color=alt.Color("frequency:Q", title="Share of tokens", scale=alt.Scale(scheme="viridis", domainMin=0)),
            tooltip=[
                alt.Tooltip("name:N", title="language"),
                alt.Tooltip("layer:O", title="layer"),
                alt.Tooltip("frequency:Q", title="share of its tokens", format=".3f"),
                alt.Tooltip("rank:Q", title="rank among the layer's experts"),
            ],
        )
        # 18 px a language in the plot: the height also holds the title and the layer axis.
        .properties(title=title, height=18 * len(order) + AXES_AND_TITLE_PX)
    )


def partner_bars(frame: pd.DataFrame, *, title: str) -> alt.Chart:
    """The experts most often in the same token's top-k as the browsed one: one bar each (the
    `SHOWN_PARTNERS` strongest), as the share of its tokens. frame: expert, tokens, share, frequency."""
    shown = frame.nlargest(SHOWN_PARTNERS, "tokens").assign(label=lambda f: "expert " + f["expert"].astype(str))
    experts = shown["label"].tolist()
    return (
        alt.Chart(shown)
        .mark_bar()
        .encode(
            x=alt.X("label:N", title="Expert chosen with it", sort=experts, axis=alt.Axis(labelAngle=-45)),
            # Two lines: on one, the axis title outgrows the plot and pushes the chart's title out of view.
            y=alt.Y("share:Q", title=["Share of its tokens", "that also chose it"], scale=alt.Scale(domain=[0, 1])),
            color=alt.Color(
                "label:N",
                title="Expert",
                scale=alt.Scale(domain=experts, range=[expert_colour(int(e)) for e in shown["expert"]]),
                legend=alt.Legend(columns=2 if len(experts) > 10 else 1),
            ),
            tooltip=[
                alt.Tooltip("label:N", title="expert"),
                alt.Tooltip("tokens:Q", title="tokens that chose both"),
                alt.Tooltip("share:Q", title="share of its tokens", format=".3f"),
                alt.Tooltip("frequency:Q", title="share of all the layer's tokens", format=".3f"),
            ],
        )
        .properties(title=title, height=300)
    )
