"""Altair charts of the Divergence and Expert sharing pages: per-layer curves with the middle band
shaded, ranked bars, the language similarity heatmap and the expert-sharing graph.

Each takes a tidy DataFrame and returns a chart with its title, axis titles, legend and tooltips.
"""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import networkx as nx
import pandas as pd

from moe_core.languages import find_lang, language
from polyroute.run_data import lang_facts

GROUPINGS = {"family": "Language family", "script": "Script", "resource_class": "Resource class (0-5)"}


def with_language_facts(frame: pd.DataFrame, column: str = "lang") -> pd.DataFrame:
    """`frame` plus each language's English name, family, script and resource class."""
    codes = frame[column].unique()
    facts = pd.DataFrame(
        [{column: code, "name": _name(code), **lang_facts(code)} for code in codes],
        columns=[column, "name", *GROUPINGS],
    )
    facts["resource_class"] = facts["resource_class"].astype("string")
    return frame.drop(columns=[c for c in facts.columns if c != column and c in frame.columns]).merge(facts, on=column)


def _name(code: str) -> str:
    found = find_lang(code)
    return language(found).name if found else code


def layer_curves(
    frame: pd.DataFrame,
    *,
    value: str,
    value_title: str,
    title: str,
    subtitle: str = "",
    colour: str,
    band: tuple[int, int] | None,
) -> alt.TopLevelMixin:
    """One line per language over the MoE layers, coloured by a language grouping; the band shaded.

    frame: one row per (lang, layer) with `value`, plus the columns of `with_language_facts`.
    """
    hover = alt.selection_point(fields=["lang"], on="pointerover", nearest=True, empty=False)
    base = alt.Chart(frame).encode(
        x=alt.X("layer:Q", title="Decoder layer", axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y(f"{value}:Q", title=value_title),
        color=alt.Color(f"{colour}:N", title=GROUPINGS[colour]),
        detail="lang:N",
        tooltip=[
            alt.Tooltip("name:N", title="language"),
            alt.Tooltip("lang:N", title="code"),
            alt.Tooltip(f"{colour}:N", title=GROUPINGS[colour]),
            alt.Tooltip("layer:Q", title="layer"),
            alt.Tooltip(f"{value}:Q", title=value_title, format=".3f"),
        ],
    )
    lines = base.mark_line(point=True).encode(
        opacity=alt.condition(hover, alt.value(1.0), alt.value(0.55)),
        strokeWidth=alt.condition(hover, alt.value(3.5), alt.value(1.5)),
    )
    layers: list[alt.Chart] = []
    if band is not None:
        shade = pd.DataFrame({"start": [band[0] - 0.5], "end": [band[1] + 0.5], "label": ["middle band"]})
        layers.append(
            alt.Chart(shade)
            .mark_rect(opacity=0.12, color="#4c78a8")
            .encode(x="start:Q", x2="end:Q", tooltip=alt.Tooltip("label:N", title="shaded"))
        )
    layers += [lines.add_params(hover)]
    return alt.layer(*layers).properties(title=alt.Title(title, subtitle=subtitle), height=340)


def ranked_bars(frame: pd.DataFrame, *, value: str, value_title: str, title: str, colour: str) -> alt.Chart:
    """One horizontal bar per language, highest first, coloured by a language grouping."""
    shown = frame.dropna(subset=[value])
    return (
        alt.Chart(shown)
        .mark_bar()
        .encode(
            y=alt.Y("name:N", sort="-x", title="Language", axis=alt.Axis(labelLimit=220, labelOverlap=False)),
            x=alt.X(f"{value}:Q", title=value_title),
            color=alt.Color(f"{colour}:N", title=GROUPINGS[colour]),
            tooltip=[
                alt.Tooltip("name:N", title="language"),
                alt.Tooltip("lang:N", title="code"),
                alt.Tooltip(f"{colour}:N", title=GROUPINGS[colour]),
                alt.Tooltip(f"{value}:Q", title=value_title, format=".3f"),
            ],
        )
        .properties(title=title, height=max(160, 20 * len(shown)))
    )


def similarity_heatmap(frame: pd.DataFrame, order: Sequence[str], *, title: str, value_title: str) -> alt.Chart:
    """The language x language similarity matrix, rows and columns in `order` (clusters together).

    frame: one row per (lang_a, lang_b) with `similarity`, `name_a`, `name_b`, `cluster_a`, `cluster_b`.
    """
    return (
        alt.Chart(frame)
        .mark_rect()
        .encode(
            x=alt.X("lang_b:N", sort=list(order), title="Language", axis=alt.Axis(labelAngle=-60, labelOverlap=False)),
            y=alt.Y("lang_a:N", sort=list(order), title="Language", axis=alt.Axis(labelOverlap=False)),
            color=alt.Color("similarity:Q", title=value_title, scale=alt.Scale(scheme="viridis")),
            tooltip=[
                alt.Tooltip("name_a:N", title="language"),
                alt.Tooltip("cluster_a:N", title="its cluster"),
                alt.Tooltip("name_b:N", title="other language"),
                alt.Tooltip("cluster_b:N", title="its cluster"),
                alt.Tooltip("similarity:Q", title=value_title, format=".3f"),
            ],
        )
        .properties(title=title, width=max(240, 18 * len(order)), height=max(240, 18 * len(order)))
    )


def sharing_graph(nodes: pd.DataFrame, edges: pd.DataFrame, *, title: str) -> alt.TopLevelMixin:
    """Languages as dots placed by a force layout of their shared experts, links for what they share.

    nodes: lang, name, family, community; edges: lang_a, lang_b, shared_experts.
    """
    graph = nx.Graph()
    graph.add_nodes_from(nodes["lang"])
    graph.add_weighted_edges_from(edges[["lang_a", "lang_b", "shared_experts"]].itertuples(index=False))
    # Seeded, so the picture does not jump between reruns.
    position = nx.spring_layout(graph, weight="weight", seed=0)
    placed = nodes.assign(
        x=[position[lang][0] for lang in nodes["lang"]],
        y=[position[lang][1] for lang in nodes["lang"]],
        community=nodes["community"].map(lambda c: f"community {c}"),
    )
    links = pd.DataFrame(
        [
            {
                "link": f"{a} - {b}",
                "x": position[end][0],
                "y": position[end][1],
                "shared_experts": shared,
            }
            for a, b, shared in edges[["lang_a", "lang_b", "shared_experts"]].itertuples(index=False)
            for end in (a, b)
        ],
        columns=["link", "x", "y", "shared_experts"],
    )
    no_axis = alt.Axis(labels=False, ticks=False, grid=False, domain=False, title=None)
    link_marks = (
        alt.Chart(links)
        .mark_line(color="#9aa5b1")
        .encode(
            x=alt.X("x:Q", axis=no_axis),
            y=alt.Y("y:Q", axis=no_axis),
            detail="link:N",
            opacity=alt.Opacity("shared_experts:Q", title="Shared experts", scale=alt.Scale(range=[0.08, 0.7])),
            tooltip=[alt.Tooltip("link:N", title="languages"), alt.Tooltip("shared_experts:Q", title="shared")],
        )
    )
    node_marks = (
        alt.Chart(placed)
        .mark_point(filled=True, size=260, opacity=1)
        .encode(
            x="x:Q",
            y="y:Q",
            color=alt.Color("family:N", title="Language family"),
            shape=alt.Shape("community:N", title="Community"),
            tooltip=[
                alt.Tooltip("name:N", title="language"),
                alt.Tooltip("lang:N", title="code"),
                alt.Tooltip("family:N", title="family"),
                alt.Tooltip("community:N", title="community"),
            ],
        )
    )
    labels = alt.Chart(placed).mark_text(dy=-14, fontSize=11).encode(x="x:Q", y="y:Q", text="name:N")
    return alt.layer(link_marks, node_marks, labels).properties(title=title, height=620)


def _score_axis(frame: pd.DataFrame, title: str) -> alt.Y:
    """A score axis from 0 that stays readable when every score is 0 (a tiny model on a hard task)."""
    top = float(frame["value"].max()) if len(frame) else 0.0
    return alt.Y(
        "value:Q", title=title, scale=alt.Scale(domain=[0, top if top > 0 else 1.0]), axis=alt.Axis(format="~g")
    )


def variant_bars(frame: pd.DataFrame, *, value_title: str, title: str) -> alt.Chart:
    """One group of bars per language, one bar per variant (unsteered, a plan, sweep points).

    frame: lang, name, variant, value, n.
    """
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("name:N", title="Language", axis=alt.Axis(labelAngle=-45, labelOverlap=False)),
            xOffset=alt.XOffset("variant:N"),
            y=_score_axis(frame, value_title),
            color=alt.Color("variant:N", title="Variant"),
            tooltip=[
                alt.Tooltip("name:N", title="language"),
                alt.Tooltip("variant:N", title="variant"),
                alt.Tooltip("value:Q", title=value_title, format=".3f"),
                alt.Tooltip("n:Q", title="items"),
            ],
        )
        .properties(title=title, height=320)
    )


def sweep_lines(frame: pd.DataFrame, *, setting: str, value_title: str, title: str) -> alt.Chart:
    """A score against a swept setting (steering strength, or the layer window), one line per language.

    frame: lang, name, point (the setting's value: a number, or early/middle/late), value.
    """
    numeric = setting == "strength"
    return (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X(
                "point:Q" if numeric else "point:N",
                title="Steering strength (lambda)" if numeric else "Layer window steered",
                sort=None if numeric else ["early", "middle", "late"],
                # Ticks at the swept points only: a grid line every 0.2 says nothing here.
                axis=alt.Axis(values=sorted(float(v) for v in frame["point"].unique())) if numeric else alt.Axis(),
            ),
            y=_score_axis(frame, value_title),
            color=alt.Color("name:N", title="Language"),
            tooltip=[
                alt.Tooltip("name:N", title="language"),
                alt.Tooltip("point:N", title=setting),
                alt.Tooltip("value:Q", title=value_title, format=".3f"),
            ],
        )
        .properties(title=title, height=320)
    )


def correlation_scatter(frame: pd.DataFrame, *, score_title: str, title: str, colour: str) -> alt.Chart:
    """Each language's middle-band divergence from the reference against its score.

    frame: lang, name, divergence, score, plus the columns of `with_language_facts`.
    """
    return (
        alt.Chart(frame)
        .mark_circle(size=120, opacity=0.85)
        .encode(
            x=alt.X("divergence:Q", title="Mean divergence from the reference in the middle band"),
            y=alt.Y("score:Q", title=score_title),
            color=alt.Color(f"{colour}:N", title=GROUPINGS[colour]),
            tooltip=[
                alt.Tooltip("name:N", title="language"),
                alt.Tooltip("divergence:Q", title="divergence", format=".3f"),
                alt.Tooltip("score:Q", title=score_title, format=".3f"),
            ],
        )
        .properties(title=title, height=340)
    )
