"""Altair charts of the Divergence and Expert sharing pages: per-layer curves with the middle band
shaded, ranked bars, the language similarity heatmap and the expert-sharing graph.

Each takes a tidy DataFrame and returns a chart with its title, axis titles, legend and tooltips.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import altair as alt
import networkx as nx
import pandas as pd

from moe_core.languages import find_lang, language
from polyroute.run_data import lang_facts
from polyroute.ui.colours import fixed_scale

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


def group_colour(frame: pd.DataFrame, colour: str, legend: Sequence[str] | None = None) -> alt.Color:
    """Colour by a language grouping, each value in the app's fixed colour; `legend` lists the values
    the legend shows (default: those in `frame`), so several charts of a page share one legend."""
    values = legend if legend is not None else frame[colour].dropna().unique()
    return alt.Color(
        f"{colour}:N",
        title=GROUPINGS[colour],
        scale=fixed_scale(colour, values),
        # Beside the chart, names cut at 150 px; the chart is made tall enough for it (`legend_height`):
        # a legend taller than its chart is cut off at the chart's foot.
        legend=alt.Legend(labelLimit=150, symbolLimit=0),
    )


def legend_height(n_values: int) -> int:
    """The height a chart needs for a legend of `n_values` entries beside it (and its title)."""
    return 30 * n_values + 110


def layer_curves(
    frame: pd.DataFrame,
    *,
    value: str,
    value_title: str,
    title: str,
    subtitle: str = "",
    colour: str,
    band: tuple[int, int] | None,
    legend: Sequence[str] | None = None,
) -> alt.TopLevelMixin:
    """One line per language over the MoE layers, coloured by a language grouping; the band shaded.

    frame: one row per (lang, layer) with `value`, plus the columns of `with_language_facts`.
    """
    hover = alt.selection_point(fields=["lang"], on="pointerover", nearest=True, empty=False)
    # The model's own layers, half a layer either side for the band's shade: Vega's "nice" rounding
    # would run a 48-layer model's axis to 50.
    span = [float(frame["layer"].min()) - 0.5, float(frame["layer"].max()) + 0.5] if len(frame) else None
    base = alt.Chart(frame).encode(
        x=alt.X(
            "layer:Q",
            title="Decoder layer",
            axis=alt.Axis(tickMinStep=1, format="d"),
            scale=alt.Scale(domain=span, nice=False) if span else alt.Undefined,
        ),
        y=alt.Y(f"{value}:Q", title=value_title),
        color=group_colour(frame, colour, legend),
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
    shown = len(legend) if legend is not None else frame[colour].nunique()
    return alt.layer(*layers).properties(
        title=alt.Title(title, subtitle=subtitle), height=max(340, legend_height(shown))
    )


def ranked_bars(
    frame: pd.DataFrame, *, value: str, value_title: str, title: str, colour: str, legend: Sequence[str] | None = None
) -> alt.Chart:
    """One horizontal bar per language, highest first, coloured by a language grouping; bars keep
    their thickness whatever the number of languages (the chart grows, never squashes)."""
    shown = frame.dropna(subset=[value])
    n_legend = len(legend) if legend is not None else shown[colour].nunique()
    return (
        alt.Chart(shown)
        .mark_bar(size=16)  # bars as thick with 2 languages as with 100
        .encode(
            y=alt.Y("name:N", sort="-x", title="Language", axis=alt.Axis(labelLimit=220, labelOverlap=False)),
            x=alt.X(f"{value}:Q", title=value_title),
            color=group_colour(shown, colour, legend),
            tooltip=[
                alt.Tooltip("name:N", title="language"),
                alt.Tooltip("lang:N", title="code"),
                alt.Tooltip(f"{colour}:N", title=GROUPINGS[colour]),
                alt.Tooltip(f"{value}:Q", title=value_title, format=".3f"),
            ],
        )
        .properties(title=title, height=max(22 * len(shown), legend_height(n_legend) - 60, 120))
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


GRAPH_HEIGHT = 620  # pixels; labels are placed for a graph about GRAPH_WIDTH wide
GRAPH_WIDTH = 900
COMMUNITY_COLOURS = (
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#1f78b4", "#b2df8a",
    "#fb9a99", "#cab2d6", "#666666",
)  # fmt: skip


def strongest_links(edges: pd.DataFrame, per_lang: int, min_shared: int = 1) -> pd.DataFrame:
    """The links to draw: each language's `per_lang` strongest ones (a link stays when it is among
    either end's strongest), sharing at least `min_shared` experts. A graph of 100 languages keeps
    about `per_lang` x 100 links instead of 4950, and every language keeps its closest ones."""
    strong = edges[edges["shared_experts"] >= min_shared]
    if strong.empty:
        return strong
    ends = pd.concat(
        [
            strong.assign(end=strong["lang_a"], other=strong["lang_b"]),
            strong.assign(end=strong["lang_b"], other=strong["lang_a"]),
        ]
    ).sort_values(["end", "shared_experts", "other"], ascending=[True, False, True])
    top = ends.groupby("end").head(per_lang)
    keep = {tuple(sorted(pair)) for pair in zip(top["lang_a"], top["lang_b"], strict=True)}
    chosen = [tuple(sorted(pair)) in keep for pair in zip(strong["lang_a"], strong["lang_b"], strict=True)]
    return strong[chosen]


def _label_places(placed: pd.DataFrame, width: int = GRAPH_WIDTH) -> pd.DataFrame:
    """Where each language's name goes: the first of eight spots around its dot (above first) that
    overlaps no dot and no name placed before it, biggest communities first; a name with no free
    spot is left to the tooltip. Positions are in the layout's units, assuming GRAPH_WIDTH x
    GRAPH_HEIGHT pixels."""
    x_span = max(float(placed["x"].max() - placed["x"].min()), 1e-9)
    y_span = max(float(placed["y"].max() - placed["y"].min()), 1e-9)
    # The chart pads its domain a little; pixels per layout unit, approximately.
    sx, sy = width * 0.9 / x_span, GRAPH_HEIGHT * 0.85 / y_span
    dots = [(float(x) * sx, float(y) * sy) for x, y in zip(placed["x"], placed["y"], strict=True)]
    boxes: list[tuple[float, float, float, float]] = [(x - 8, y - 8, x + 8, y + 8) for x, y in dots]
    label_x, label_y, shown = [], [], []
    for (x, y), name in zip(dots, placed["name"], strict=True):
        half_w, half_h = 3.3 * len(name) + 2, 7.0
        spots = [
            (0, 15), (0, -15), (half_w + 11, 0), (-half_w - 11, 0),
            (half_w + 6, 13), (-half_w - 6, 13), (half_w + 6, -13), (-half_w - 6, -13),
        ]  # fmt: skip
        for dx, dy in spots:
            cx, cy = x + dx, y + dy  # y grows upward in the layout: +dy is above
            box = (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
            own = (x - 8, y - 8, x + 8, y + 8)
            if not any(_overlap(box, other) for other in boxes if other != own):
                boxes.append(box)
                label_x.append(cx / sx)
                label_y.append(cy / sy)
                shown.append(name)
                break
        else:
            label_x.append(x / sx)
            label_y.append(y / sy)
            shown.append("")
    return placed.assign(label_x=label_x, label_y=label_y, label=shown)


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _layout(langs: Sequence[str], edges: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """Positions where languages that share more experts sit closer: Kamada-Kawai on distances
    `most + 1 - shared` between every pair (a pair that shares none: the farthest), so every
    language has a place relative to all others, whatever links are drawn, and separate groups
    do not fly apart."""
    most = int(edges["shared_experts"].max()) if len(edges) else 0
    shared = {(a, b): int(n) for a, b, n in edges[["lang_a", "lang_b", "shared_experts"]].itertuples(index=False)}
    distance: dict[str, dict[str, float]] = {a: {} for a in langs}
    for i, a in enumerate(langs):
        for b in langs[i + 1 :]:
            n = shared.get((a, b), shared.get((b, a), 0))
            distance[a][b] = distance[b][a] = float(most + 1 - n)
    graph = nx.complete_graph(langs) if len(langs) > 1 else nx.empty_graph(langs)
    if len(langs) < 3:
        return {lang: (float(i), 0.0) for i, lang in enumerate(langs)}
    start = nx.circular_layout(sorted(langs))  # seeded by the order, so reruns give the same picture
    placed = nx.kamada_kawai_layout(graph, dist=distance, pos=start)
    return {lang: (float(x), float(y)) for lang, (x, y) in placed.items()}


def sharing_graph(
    nodes: pd.DataFrame,
    edges: pd.DataFrame,
    *,
    title: str,
    colour: str = "community",
    legend: Sequence[str] = (),
    all_edges: pd.DataFrame | None = None,
    width: int = GRAPH_WIDTH,
) -> alt.TopLevelMixin:
    """Languages as dots placed by a force layout of the links drawn, a line for each link as
    thick as the experts the two languages share, dots coloured by community (or by a language
    grouping, in the app's fixed colours), names placed so that they do not cover each other.

    nodes: lang, name, family, script, resource_class, community; edges: lang_a, lang_b, shared_experts
    (the links to draw: see `strongest_links`); all_edges: every pair's link, which places the dots
    (default `edges`); width: about how wide it will be drawn, in pixels, for placing the names.
    """
    position = _layout(list(nodes["lang"]), edges if all_edges is None else all_edges)
    placed = nodes.assign(
        x=[position[lang][0] for lang in nodes["lang"]],
        y=[position[lang][1] for lang in nodes["lang"]],
        community=nodes["community"].map(lambda c: f"community {c}"),
    )
    # Bigger communities first: their names are placed before the names of loners.
    size = placed["community"].map(placed["community"].value_counts())
    placed = _label_places(placed.assign(_size=size).sort_values(["_size", "lang"], ascending=[False, True]), width)
    placed = placed.drop(columns="_size")
    links = pd.DataFrame(
        [
            {"link": f"{a} - {b}", "x": position[end][0], "y": position[end][1], "shared_experts": int(shared)}
            for a, b, shared in edges[["lang_a", "lang_b", "shared_experts"]].itertuples(index=False)
            for end in (a, b)
        ],
        columns=["link", "x", "y", "shared_experts"],
    )
    no_axis = alt.Axis(labels=False, ticks=False, grid=False, domain=False, title=None)
    most = int(links["shared_experts"].max()) if len(links) else 1
    least = int(links["shared_experts"].min()) if len(links) else 1
    link_marks = (
        alt.Chart(links)
        .mark_line(color="#8a96a3", opacity=0.45)
        .encode(
            x=alt.X("x:Q", axis=no_axis),
            y=alt.Y("y:Q", axis=no_axis),
            detail="link:N",
            strokeWidth=alt.StrokeWidth(
                "shared_experts:Q",
                title="Shared experts",
                scale=alt.Scale(domain=[least, max(most, least + 1)], range=[0.8, 5]),
                legend=alt.Legend(format="d", values=sorted({least, (least + most) // 2, most}), orient="bottom"),
            ),
            tooltip=[
                alt.Tooltip("link:N", title="languages"),
                alt.Tooltip("shared_experts:Q", title="shared", format="d"),
            ],
        )
    )
    if colour == "community":
        communities = sorted(placed["community"].unique(), key=lambda c: int(c.split()[-1]))
        scale = alt.Scale(
            domain=communities, range=[COMMUNITY_COLOURS[i % len(COMMUNITY_COLOURS)] for i in range(len(communities))]
        )
        fill = alt.Color(
            "community:N",
            title="Community",
            scale=scale,
            legend=alt.Legend(symbolLimit=0, symbolSize=140, orient="bottom"),
        )
    else:
        fill = group_colour(placed, colour, legend or None)
    node_marks = (
        alt.Chart(placed)
        .mark_circle(size=180, opacity=1, stroke="white", strokeWidth=1.5)
        .encode(
            x="x:Q",
            y="y:Q",
            color=fill,
            tooltip=[
                alt.Tooltip("name:N", title="language"),
                alt.Tooltip("lang:N", title="code"),
                alt.Tooltip("family:N", title="family"),
                alt.Tooltip("script:N", title="script"),
                alt.Tooltip("community:N", title="community"),
            ],
        )
    )
    labels = (
        alt.Chart(placed).mark_text(fontSize=11, fill="#31333f").encode(x="label_x:Q", y="label_y:Q", text="label:N")
    )
    return alt.layer(link_marks, node_marks, labels).properties(title=title, height=GRAPH_HEIGHT)


def _names_expr(frame: pd.DataFrame) -> str:
    """A legend label expression that shows a language's name for its code."""
    names = dict(zip(frame["lang"], frame["name"], strict=False))
    return f"{json.dumps(names)}[datum.value] || datum.value"


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
    n_langs = frame["lang"].nunique()
    columns = 1 if n_langs <= 12 else 2 if n_langs <= 40 else 3  # a long legend in columns, not cut off
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
            color=alt.Color(
                "lang:N",
                title="Language",
                scale=fixed_scale("lang", frame["lang"].unique()),
                legend=alt.Legend(labelExpr=_names_expr(frame), labelLimit=150, columns=columns),
            ),
            tooltip=[
                alt.Tooltip("name:N", title="language"),
                alt.Tooltip("point:N", title=setting),
                alt.Tooltip("value:Q", title=value_title, format=".3f"),
            ],
        )
        .properties(title=title, height=max(320, legend_height(-(-n_langs // columns))))
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
            color=group_colour(frame, colour),
            tooltip=[
                alt.Tooltip("name:N", title="language"),
                alt.Tooltip("divergence:Q", title="divergence", format=".3f"),
                alt.Tooltip("score:Q", title=score_title, format=".3f"),
            ],
        )
        .properties(title=title, height=340)
    )
