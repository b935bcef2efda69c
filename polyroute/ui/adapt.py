"""The Adapt page's work (RISE): the subnetwork a choice selects, previewed from the store without a
model; training it as a background job of the app (`polyroute.background.adapt`); and an
adaptation run read back from the store: its experts on a layer x expert map, and each language's
held-out loss before and after.

A finished adaptation is always shown from what the store holds, so the page shows the same
numbers for a run just trained and for one reopened later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from moe_core.analysis.rise import ZONES, ZoneRule, depth_zones
from moe_core.errors import PolyrouteError
from moe_core.model_identity import config_hash
from polyroute.ui.charts import with_language_facts
from polyroute.ui.data import Version, shared_store
from polyroute.ui.draw import draw
from polyroute.ui.forms import folder_problem
from polyroute.ui.frame import explained, lang_name
from polyroute.workflows.adapt import AdaptRequest, Subnetwork, estimate, select
from store import SharedStore
from store import queries as q
from store.writer import AdaptedExpert

ZONE_COLOURS = ("#4c78a8", "#f58518", "#54a24b")  # shallow, middle, deep
BEFORE, AFTER = "before training", "after training"
LOSS_COLUMNS = ("loss before", "loss after", "change")


# Choosing the experts, without a model. ---------------------------------------------------------


def ratio_problem(ratios: tuple[float, float, float]) -> str:
    """What is wrong with the three zone shares, in the page's words ("" when nothing)."""
    if min(ratios) < 0:
        return "The zone shares cannot be negative."
    if not np.isclose(sum(ratios), 1.0):
        return f"The three zone shares must add up to 1; they add up to {sum(ratios):.2f}."
    return ""


ZONE_RULE_WORDS = {
    "reference": "reference: as the RISE authors' code (zones cut at layers round(0.375 L) and round(0.625 L); "
    "a zone too small for its share hands the rest to the zone with the most room)",
    "fraction": "fraction: zones cut where layer / L passes 37.5% and 62.5%; a zone too small for its share "
    "hands the rest to the zone of the largest share",
}


@st.cache_data(show_spinner="Scoring the experts…", max_entries=64)
def preview(
    path: str,
    run_id: int,
    run_version: Version,
    target: str,
    budget: int,
    ratios: tuple[float, float, float],
    alpha: float,
    zones: ZoneRule = "reference",
) -> Subnetwork:
    """The experts RISE selects for `target` from trace run `run_id` (`polyroute.workflows.adapt.select`)."""
    del run_version  # part of the cache key only
    with shared_store(path).reading() as store:
        return select(store, run_id, target, budget, ratios, alpha, zones)


def time_estimate(store: SharedStore, request: AdaptRequest, model_id: str, langs: list[str]) -> str:
    """What the page says before Train: how long it should take, and which "before" losses are stored."""
    with store.reading() as reader:
        found = estimate(reader, request, model_id, langs)
    reused = (
        f" The loss before training of {', '.join(map(lang_name, found.reused))} is stored from an earlier "
        "adaptation of this model and is not measured again."
        if found.reused
        else ""
    )
    if found.seconds is None:
        return (
            "No time estimate yet: no adaptation of this model in this store has measured its speed. Once training "
            f"starts, the progress bar says the time left.{reused}"
        )
    return (
        f"Should take about {found.seconds:.0f} s (at {found.step_seconds:.2f} s a training step, as the last "
        f"adaptation of this model here measured).{reused}"
    )


@st.cache_data(show_spinner=False, max_entries=16)
def model_problem(folder: str, path: str, model_id: str) -> str:
    """Why `folder` cannot be trained for a run that traced `model_id` ("" when it can)."""
    if problem := folder_problem(folder):
        return problem
    # The identity is the hash the trace recorded (read without loading the model or importing torch).
    with shared_store(path).reading() as store:
        traced = q.model_config_hash(store, model_id)
    if config_hash(Path(folder)) != traced:
        return (
            f"{folder} is not {model_id}, the model this run traced (their configs differ): enter the folder of "
            "that checkpoint, or trace this model on the Collect page first."
        )
    return ""


# An adaptation run, as the store holds it. ------------------------------------------------------


def expert_frame(experts: list[AdaptedExpert]) -> pd.DataFrame:
    """The selected experts as a table, in selection order."""
    return pd.DataFrame(
        [
            {
                "rank": e.rank,
                "zone": e.zone,
                "layer": e.layer,
                "expert": e.expert,
                "score": e.score,
                "specificity": e.specificity,
                "overlap": e.overlap,
                "target frequency": e.target_freq,
                "mean frequency": e.mean_freq,
            }
            for e in experts
        ],
        columns=[
            "rank", "zone", "layer", "expert", "score", "specificity", "overlap", "target frequency", "mean frequency"
        ],
    )  # fmt: skip


def map_frame(
    layers: list[int], n_layers: int, n_experts: int, experts: list[AdaptedExpert], zone_rule: ZoneRule = "fraction"
) -> pd.DataFrame:
    """One row per (MoE layer, expert): its zone (by `zone_rule`), and rank and scores when it is selected."""
    zones = depth_zones(np.asarray(layers), n_layers, zone_rule)
    chosen = {(e.layer, e.expert): e for e in experts}
    rows = []
    for layer, zone in zip(layers, zones, strict=True):
        for expert in range(n_experts):
            found = chosen.get((layer, expert))
            rows.append(
                {
                    "layer": layer,
                    "expert": expert,
                    "zone": ZONES[zone],
                    "selected": "yes" if found else "no",
                    "rank": found.rank if found else None,
                    "score": found.score if found else None,
                    "specificity": found.specificity if found else None,
                    "overlap": found.overlap if found else None,
                    "target_freq": found.target_freq if found else None,
                }
            )
    return pd.DataFrame(rows)


NUMBERED_CELLS_MAX = 32  # experts a row holds while a cell, at the page's width, fits a two-digit rank


def expert_map(frame: pd.DataFrame, *, title: str) -> alt.LayerChart:
    """Every MoE layer's experts as a grid coloured by depth zone: the selected ones solid and
    numbered by rank, the others faint. With more than NUMBERED_CELLS_MAX experts a cell is a few
    pixels wide, so each selected one also gets a square that overflows it, its rank above."""
    n_layers = frame["layer"].nunique()
    narrow = frame["expert"].nunique() > NUMBERED_CELLS_MAX
    base = alt.Chart(frame).encode(
        x=alt.X("expert:O", title="Expert", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("layer:O", title="Decoder layer"),
    )
    # One colour channel for both marks: the layers share its scale and its legend.
    zone_colour = alt.Color("zone:N", title="Depth zone", scale=alt.Scale(domain=list(ZONES), range=list(ZONE_COLOURS)))
    cells = base.mark_rect(stroke="white", strokeWidth=0.5 if narrow else 1.5).encode(
        color=zone_colour,
        opacity=alt.condition(alt.datum.selected == "yes", alt.value(1.0), alt.value(0.15)),
        tooltip=[
            alt.Tooltip("layer:O", title="layer"),
            alt.Tooltip("expert:O", title="expert"),
            alt.Tooltip("zone:N", title="zone"),
            alt.Tooltip("selected:N", title="selected"),
            alt.Tooltip("rank:Q", title="rank"),
            alt.Tooltip("score:Q", title="score (Spec or Ovlp)", format=".3f"),
            alt.Tooltip("specificity:Q", title="specificity S", format=".3f"),
            alt.Tooltip("overlap:Q", title="overlap O", format=".3f"),
            alt.Tooltip("target_freq:Q", title="target's activation frequency", format=".3f"),
        ],
    )
    chosen = base.transform_filter(alt.datum.selected == "yes")
    rank = alt.Text("rank:Q", format="d")
    if narrow:
        squares = chosen.mark_square(size=120, opacity=1, stroke="white", strokeWidth=1).encode(color=zone_colour)
        marks = [cells, squares, chosen.mark_text(color="#1f2933", fontWeight="bold", dy=-12).encode(text=rank)]
    else:
        marks = [cells, chosen.mark_text(color="white", fontWeight="bold").encode(text=rank)]
    subtitle = (
        f"{'Squares mark' if narrow else 'Solid cells are'} the selected experts, numbered in selection order; "
        "hover a cell for its scores."
    )
    return alt.LayerChart(
        layer=marks,
        title=alt.Title(title, subtitle=subtitle),
        # Streamlit fits the whole chart, titles and axes too, in this height: rows stay readable for a
        # few layers and fit the screen for 48.
        height=130 + (40 if n_layers <= 12 else 16) * n_layers,
    )


def loss_frame(scores: list[q.AdaptationScore], target: str) -> pd.DataFrame:
    """Each language's held-out loss before and after (target first, then by change), with perplexity."""
    scores = [s for s in scores if s.task == q.ADAPTATION_TASK]  # a benchmark's scores are not losses
    perplexity = {s.lang: s for s in scores if s.metric == "perplexity"}
    rows = [
        {
            "lang": s.lang,
            "target": s.lang == target,
            "before": s.before,
            "after": s.after,
            "change": s.change,
            "perplexity before": perplexity[s.lang].before if s.lang in perplexity else None,
            "perplexity after": perplexity[s.lang].after if s.lang in perplexity else None,
            "tokens": s.n,
        }
        for s in scores
        if s.metric == "loss"
    ]
    frame = with_language_facts(pd.DataFrame(rows))
    frame["language"] = frame["name"] + np.where(frame["target"], " (target)", "")
    return frame.sort_values(["target", "change"], ascending=[False, True], ignore_index=True)


def loss_chart(frame: pd.DataFrame, *, title: str) -> alt.LayerChart:
    """A dumbbell per language: held-out loss before and after training, the target on a band."""
    order = frame["language"].tolist()
    points = frame.melt(
        id_vars=["lang", "language", "target", "change"],
        value_vars=["before", "after"],
        var_name="when",
        value_name="loss",
    )
    points["when"] = points["when"].map({"before": BEFORE, "after": AFTER})
    y = alt.Y(
        "language:N",
        sort=order,
        title="Language (target first, then by change)",
        axis=alt.Axis(labelLimit=260, labelOverlap=False),
    )
    band = (
        alt.Chart(frame[frame["target"]]).mark_rect(color="#fde68a", opacity=0.6).encode(y=y)
    )  # the target's row, highlighted
    links = (
        alt.Chart(frame)
        .mark_rule(color="#9aa5b1", strokeWidth=2)
        .encode(y=y, x=alt.X("before:Q", title="Held-out loss (nats per token; lower is better)"), x2="after:Q")
    )
    dots = (
        alt.Chart(points)
        .mark_point(filled=True, size=90, opacity=1)
        .encode(
            y=y,
            x=alt.X("loss:Q", scale=alt.Scale(zero=False)),
            color=alt.Color(
                "when:N", title="Held-out loss", scale=alt.Scale(domain=[BEFORE, AFTER], range=["#9aa5b1", "#d62728"])
            ),
            tooltip=[
                alt.Tooltip("language:N", title="language"),
                alt.Tooltip("when:N", title="when"),
                alt.Tooltip("loss:Q", title="loss", format=".4f"),
                alt.Tooltip("change:Q", title="change (after - before)", format="+.4f"),
            ],
        )
    )
    # The height holds the title and axis too (Streamlit fits the whole chart in it): 22 px a language.
    return alt.LayerChart(layer=[band, links, dots], title=title, height=120 + 22 * len(frame))


def task_table(scores: list[q.AdaptationScore]) -> pd.DataFrame:
    """A benchmark's scores before and after (`polyroute adapt --task`), one row per language and metric."""
    rows = [
        {"task": s.task, "code": s.lang, "metric": s.metric, "before": s.before, "after": s.after, "change": s.change,
         "items": s.n}
        for s in scores
        if s.task != q.ADAPTATION_TASK
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["task", "code", "metric", "before", "after", "change", "items"])


def loss_table(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[
        ["lang", "name", "before", "after", "change", "perplexity before", "perplexity after", "tokens"]
    ].rename(columns={"lang": "code", "name": "language", "before": "loss before", "after": "loss after"})


@dataclass(frozen=True, kw_only=True)
class StoredAdaptation:
    """An adaptation run and what it stored, with the map of the trace run it chose from."""

    run: q.AdaptationRun
    experts: list[AdaptedExpert]
    scores: list[q.AdaptationScore]
    layout: q.RunLayout | None  # the trace run's (None when that run is gone)


def adaptation_runs(store: SharedStore) -> list[q.AdaptationRun]:
    with store.reading() as reader:
        return q.adaptation_runs(reader)


def stored_adaptation(store: SharedStore, run: q.AdaptationRun) -> StoredAdaptation:
    with store.reading() as reader:
        return StoredAdaptation(
            run=run,
            experts=q.adaptation_experts(reader, run.run_id),
            scores=q.adaptation_scores(reader, run.run_id),
            layout=q.run_layout(reader, run.trace_run),
        )


def run_label(run: q.AdaptationRun) -> str:
    state = "" if run.status == "complete" else f" · {run.status}"
    return f"run {run.run_id} · {run.target} · K={run.budget} · {run.created_at:%Y-%m-%d %H:%M}{state}"


def running_label(request: AdaptRequest, run_id: int | None) -> str:
    """The Past list's entry of the adaptation running now (its run is stored once the model loads)."""
    run = f"run {run_id}" if run_id is not None else "a new run"
    return f"{run} · {request.target} · K={request.budget} · running"


def merge(adapter_dir: str, out: str) -> Path:
    """The adapter merged into its base model: a full checkpoint in `out`."""
    from moe_core.adapt.checkpoint import merge_adapter

    if not out.strip():
        raise PolyrouteError("Enter a folder for the full checkpoint.")
    return merge_adapter(Path(adapter_dir), Path(out).expanduser())


def show_adaptation(stored: StoredAdaptation, key: str, *, with_map: bool = True) -> None:
    """Draw an adaptation run: the losses, its experts on the map (unless the page just drew them)
    and in a table, and its adapter."""
    run = stored.run
    target = lang_name(run.target)
    st.markdown(
        f"**Run {run.run_id}** trained {len(stored.experts)} experts of {run.model_id} for {target} "
        f"(budget K={run.budget}, chosen from trace run {run.trace_run})."
    )
    if stored.scores:
        frame = loss_frame(stored.scores, run.target)
        draw(
            loss_chart(frame, title=f"Held-out loss per language, before and after training for {target}"),
            width="stretch",
            key=f"{key}_losses",
        )
        st.dataframe(
            loss_table(frame), hide_index=True, width="stretch", key=f"{key}_loss_table",
            column_config={name: st.column_config.NumberColumn(format="%.4f") for name in LOSS_COLUMNS},
        )  # fmt: skip
    elif run.status == "running":
        st.info(f"Run {run.run_id} is running: its losses appear here when it ends.", icon=":material/info:")
    else:
        st.info(f"Run {run.run_id} stored no scores (its status is {run.status}).", icon=":material/info:")
    benchmark = task_table(stored.scores)
    if not benchmark.empty:
        st.markdown(f"**{', '.join(benchmark['task'].unique())} before and after training**")
        st.dataframe(benchmark, hide_index=True, width="stretch", key=f"{key}_task_table")
    if with_map and stored.layout is not None and stored.experts:
        layout = stored.layout
        # A run stored before the zone rule was a choice was selected with the fraction rule.
        rule = run.params.get("zones", "fraction")
        frame = map_frame([int(x) for x in layout.layers], layout.n_layers, layout.n_experts, stored.experts, rule)
        draw(expert_map(frame, title=f"The {len(stored.experts)} experts trained for {target}"), key=f"{key}_map")
    with st.expander(f"The {len(stored.experts)} trained experts"):
        st.dataframe(expert_frame(stored.experts), hide_index=True, key=f"{key}_experts")
    if run.adapter_dir and Path(run.adapter_dir).is_dir():
        st.caption(f"The trained weights (the adapter) are in `{run.adapter_dir}`.")
        with st.expander("Merge into a full checkpoint"):
            out = st.text_input("New checkpoint folder", value=f"{run.adapter_dir}-merged", key=f"{key}_merge_out")
            if st.button("Merge", key=f"{key}_merge"):
                with st.spinner("Writing the checkpoint…"), explained():
                    done = merge(run.adapter_dir, out)
                st.success(f"Saved the adapted model to `{done}`: load it like any checkpoint.")
    elif run.adapter_dir:
        st.caption(f"Its adapter folder `{run.adapter_dir}` is no longer on this machine.")
