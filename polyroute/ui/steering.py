"""The Steering page's work: the model loaded once per folder, plans from presets or controls,
generation without and with a plan, the words that changed, and the per-layer mass chart.

Routing mass is measured as `polyroute steer` measures it (`polyroute.workflows.steer.mass_rows`), so the page and
the CLI report the same numbers for the same plan and prompt.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import altair as alt
import pandas as pd
import streamlit as st

from moe_core.analysis.zones import zone_band
from moe_core.backends.base import Backend
from moe_core.records import ModelInfo
from moe_core.steering import LayerExperts, SteeringPlan
from polyroute import plans
from polyroute.ui.data import Version, shared_store
from polyroute.workflows.steer import mass_rows, shown, steer_prompt

if TYPE_CHECKING:  # torch loads only when a model does
    from moe_core.backends.hf import HFBackend

UNSTEERED, STEERED = "without steering", "with the plan"
LANGUAGE, EXCLUSIVE = "push a language's experts (soft)", "silence a language's exclusive experts (ablate)"


@st.cache_resource(show_spinner="Loading the model…", max_entries=2)
def load_backend(folder: str) -> HFBackend:
    """The model in `folder`, loaded once per process (a failed load is not cached: a fixed folder retries)."""
    from moe_core.backends.hf import HFBackend
    from polyroute.workflows.common import quiet_libraries

    quiet_libraries()
    return HFBackend(folder)


def middle_band(layers: Sequence[int], n_layers: int) -> tuple[int, int]:
    """The MoE layers of the middle depth zone (docs/methods.md steers there): `zones.zone_band`."""
    return zone_band(layers, n_layers, "middle")


@st.cache_data(show_spinner="Finding the experts…", max_entries=64)
def preset_plan(
    path: str, run_id: int, run_version: Version, kind: str, lang: str, ref: str, band: tuple[int, int], level: float
) -> SteeringPlan:
    """A plan from the stored run: `lang`'s experts against `ref` (Delta > `level`), or its exclusive
    experts (share > `level`) ablated, in the layers `band`."""
    del run_version  # part of the cache key only
    with shared_store(path).reading() as store:
        if kind == LANGUAGE:
            return plans.language_experts(store, run_id, lang, ref=ref, tau=level, layers=band)
        return plans.exclusive_experts(store, run_id, lang, window=band, thr=level)


def controlled_plan(
    info: ModelInfo, method: str, strength: float, band: tuple[int, int], experts: Sequence[int]
) -> SteeringPlan:
    """The same experts in every MoE layer of `band`."""
    layers = [layer for layer in info.moe_layers if band[0] <= layer <= band[1]]
    entries = tuple(LayerExperts(layer=layer, experts=tuple(sorted(experts))) for layer in layers)
    return SteeringPlan(
        method=method,
        band=band,
        experts=entries,
        strength=strength,
        source=f"chosen by hand: experts {', '.join(map(str, sorted(experts)))} in {layers_text(band)}",
    )


def layers_text(band: tuple[int, int]) -> str:
    return f"layer {band[0]}" if band[0] == band[1] else f"layers {band[0]}-{band[1]}"


def check(plan: SteeringPlan, info: ModelInfo) -> None:
    """Refuse (PlanError) a plan naming layers or experts this model does not have, before it runs."""
    plan.check_against(n_layers=info.n_layers, moe_layers=info.moe_layers, n_experts=info.n_experts, top_k=info.top_k)


def plan_frame(plan: SteeringPlan) -> pd.DataFrame:
    """One row per layer the plan lists: its experts, and whether the band steers it."""
    first, last = plan.band
    strength = f"{plan.strength:g}" if plan.method in ("soft", "adaptive") else "-"
    return pd.DataFrame(
        [
            {
                "layer": entry.layer,
                "experts": ", ".join(map(str, entry.experts)),
                "method": plan.method,
                "strength": strength,
                "steered": "yes" if first <= entry.layer <= last else "no (outside the band)",
            }
            for entry in plan.experts
        ]
    )


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """One prompt generated without and with a plan, and the routing mass per layer of each."""

    plain: str
    steered: str
    masses: pd.DataFrame  # layer, generation, mass, experts, in_band


def compare(backend: Backend, prompt: str, max_new_tokens: int, plan: SteeringPlan) -> Comparison:
    done = steer_prompt(backend, prompt, plan, max_new_tokens)
    n_experts = backend.info().n_experts
    masses = pd.DataFrame(mass_rows(plan, done.plain.routing, done.steered.routing, n_experts, (UNSTEERED, STEERED)))
    return Comparison(plain=done.plain.texts[0], steered=done.steered.texts[0], masses=masses)


def mass_chart(masses: pd.DataFrame, band: tuple[int, int]) -> alt.Chart:
    """Bars per MoE layer, unsteered and steered side by side."""
    return (
        alt.Chart(masses, title=f"Routing mass on the plan's experts, per layer (steered: {layers_text(band)})")
        .mark_bar()
        .encode(
            x=alt.X("layer:O", title="Decoder layer", axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("generation:N", sort=[UNSTEERED, STEERED]),
            y=alt.Y("mass:Q", title="Mean routing mass on the plan's experts", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("generation:N", title="Generation", sort=[UNSTEERED, STEERED]),
            tooltip=[
                alt.Tooltip("layer:O", title="layer"),
                alt.Tooltip("generation:N", title="generation"),
                alt.Tooltip("mass:Q", title="mass", format=".3f"),
                alt.Tooltip("experts:N", title="experts"),
                alt.Tooltip("in_band:N", title="steered layer"),
            ],
        )
    )


_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:])")


def escaped(text: str) -> str:
    """`text` shown literally by Streamlit's markdown (no emphasis, links, colour directives or LaTeX)."""
    return _SPECIAL.sub(r"\\\1", text)


def marked_diff(plain: str, steered: str) -> tuple[str, str]:
    """Both texts as markdown, word by word: words only the unsteered text has on red, words only
    the steered text has on green."""
    before, after = plain.split(), steered.split()
    left: list[str] = []
    right: list[str] = []
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes():
        old, new = " ".join(map(escaped, before[a0:a1])), " ".join(map(escaped, after[b0:b1]))
        if op == "equal":
            left.append(old)
            right.append(new)
            continue
        if old:
            left.append(f":red-background[{old}]")
        if new:
            right.append(f":green-background[{new}]")
    return _or_empty(" ".join(left), plain), _or_empty(" ".join(right), steered)


def _or_empty(markdown: str, text: str) -> str:
    return markdown if text.strip() else f"*{shown(text)}*"
