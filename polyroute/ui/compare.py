"""The Compare runs page's work: the runs one can compare, and its three charts (divergence on
normalised depth, a steered run minus the unsteered one, each language's middle-band mean per run),
every run in its fixed colour (`colours.run_colour`)."""

from __future__ import annotations

import altair as alt
import pandas as pd

from polyroute.ui.charts import legend_height
from polyroute.ui.colours import run_scale
from polyroute.ui.frame import lang_name
from store import SharedStore
from store import queries as q


def traced_runs(store: SharedStore) -> list[q.RunRow]:
    """The store's trace runs that hold sequences, oldest first."""
    with store.reading() as reader:
        return [run for run in q.list_runs(reader) if run.kind == "trace" and run.n_stored > 0]


def common_langs(runs: list[q.RunRow]) -> list[str]:
    """The languages every run traced (a reference must be one of them), A to Z."""
    return sorted(set.intersection(*(set(run.params.get("langs", [])) for run in runs))) if runs else []


def _run_colour(frame: pd.DataFrame) -> alt.Color:
    labels = dict(zip(frame["label"], frame["run"], strict=True))
    return alt.Color("label:N", title="Run", scale=run_scale(labels), legend=alt.Legend(labelLimit=260))


def depth_curves(frame: pd.DataFrame, *, title: str, subtitle: str) -> alt.Chart:
    """One line per run over normalised depth (layer / (layers - 1)), so models of any depth line up.

    frame: one row per (run, layer) with run, label, layer, depth and divergence.
    """
    return (
        alt.Chart(frame.dropna(subset=["divergence"]), title=alt.Title(title, subtitle=subtitle))
        .mark_line(point=True)
        .encode(
            x=alt.X("depth:Q", title="Depth (layer / (layers - 1))", scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("divergence:Q", title="Divergence from the reference (0-1)"),
            color=_run_colour(frame),
            tooltip=[
                alt.Tooltip("label:N", title="run"),
                alt.Tooltip("layer:Q", title="layer"),
                alt.Tooltip("depth:Q", title="depth", format=".2f"),
                alt.Tooltip("divergence:Q", title="divergence", format=".3f"),
            ],
        )
        .properties(height=360)
    )


def difference_curves(frame: pd.DataFrame, *, title: str, subtitle: str) -> alt.TopLevelMixin:
    """Steered minus unsteered divergence per decoder layer, one line per steered run, zero marked.

    frame: one row per (steered run, layer) with run, label, layer and difference.
    """
    zero = alt.Chart(pd.DataFrame({"zero": [0.0]})).mark_rule(color="#9a9a9a").encode(y="zero:Q")
    lines = (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X("layer:Q", title="Decoder layer", axis=alt.Axis(tickMinStep=1, format="d")),
            # Two lines: on one, the axis title outgrows a short plot and pushes the chart's title out of view.
            y=alt.Y("difference:Q", title=["Divergence,", "steered minus unsteered"]),
            color=_run_colour(frame),
            tooltip=[
                alt.Tooltip("label:N", title="run"),
                alt.Tooltip("layer:Q", title="layer"),
                alt.Tooltip("difference:Q", title="difference", format="+.3f"),
            ],
        )
    )
    return alt.layer(zero, lines, title=alt.Title(title, subtitle=subtitle)).properties(height=320)


def runs_without_band(frame: pd.DataFrame) -> list[int]:
    """The runs of a `band_mean` table with no middle-band mean (a model with no MoE layer in the middle zone)."""
    return sorted(set(frame["run"]) - set(frame.dropna(subset=["divergence"])["run"]))


def band_bars(frame: pd.DataFrame, *, title: str) -> alt.Chart:
    """Each language's middle-band mean, one bar per run side by side.

    frame: one row per (run, language) with run, label, lang and divergence.
    """
    shown = frame.dropna(subset=["divergence"]).assign(name=lambda rows: rows["lang"].map(lang_name))
    n_langs = max(shown["lang"].nunique(), 1)
    n_runs = max(shown["run"].nunique(), 1)
    return (
        alt.Chart(shown, title=title)
        .mark_bar()
        .encode(
            y=alt.Y("name:N", title="Language", sort="ascending", axis=alt.Axis(labelLimit=220)),
            yOffset=alt.YOffset("label:N"),
            x=alt.X("divergence:Q", title="Mean divergence in the middle band"),
            color=_run_colour(shown),
            tooltip=[
                alt.Tooltip("label:N", title="run"),
                alt.Tooltip("name:N", title="language"),
                alt.Tooltip("divergence:Q", title="band mean", format=".3f"),
            ],
        )
        .properties(height=max(legend_height(n_runs), 14 * n_runs * n_langs + 40))
    )
