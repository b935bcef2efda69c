"""The Steering page's work: the model loaded once per folder, plans from presets or controls,
generation without and with a plan, the words that changed, and the per-layer mass chart.

Routing mass is measured as `polyroute steer` measures it (`polyroute.workflows.steer.mass_rows`), so the page and
the CLI report the same numbers for the same plan and prompt.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from moe_core.analysis.zones import zone_band
from moe_core.backends import import_model_libraries
from moe_core.backends.base import Backend
from moe_core.records import ModelInfo, RoutingBatch
from moe_core.steering import LayerExperts, SteeringPlan, layers_text
from moe_core.steering.presets import PRESETS, preset_names
from polyroute import plans
from polyroute.ui.colours import PALETTE, UNKNOWN
from polyroute.ui.data import Version, shared_store
from polyroute.ui.token_charts import shown_piece
from polyroute.ui.words import error_words
from polyroute.workflows.steer import mass_rows, shown, steer_prompt

if TYPE_CHECKING:  # torch loads only when a model does
    from moe_core.backends.hf import HFBackend

UNSTEERED, STEERED = "without steering", "with the plan"
LANGUAGE, EXCLUSIVE = "push a language's experts (soft)", "silence a language's exclusive experts (ablate)"
PUBLISHED = preset_names()  # 2601.14050's settings (moe_core/steering/presets.py)
PRESET_KINDS = (LANGUAGE, EXCLUSIVE, *PUBLISHED)
LEVEL_STEP = 0.05  # the threshold sliders' step: a suggested threshold is one of their values
GENERATION_COLOURS = alt.Scale(domain=[UNSTEERED, STEERED], range=[UNKNOWN, PALETTE[1]])
GAINED, KEPT, NONE = "gained a plan expert", "had a plan expert already", "no plan expert"


def preset_label(kind: str) -> str:
    """How the preset radio names a preset: ours as they are, a published one with what it does."""
    if kind not in PRESETS:
        return kind
    published = PRESETS[kind]
    does = "shared experts pushed (adaptive)" if published.kind == "shared" else "exclusive experts silenced (ablate)"
    return f"{kind}: {does}, as published for {published.task.split(' ')[0]}"


def preset_key(kind: str) -> str:
    """A preset as a widget key's part (letters, digits, _ and -): each preset keeps its own settings."""
    slug = {LANGUAGE: "language", EXCLUSIVE: "exclusive"}.get(kind, kind)
    return re.sub(r"[^A-Za-z0-9_-]", "_", slug)


def uses_language_experts(kind: str) -> bool:
    return kind == LANGUAGE


def is_shared(kind: str) -> bool:
    return kind in PRESETS and PRESETS[kind].kind == "shared"


def steers_with_strength(kind: str) -> bool:
    """Soft (language experts) and adaptive (shared experts) push by a strength; ablation has none."""
    return uses_language_experts(kind) or is_shared(kind)


@st.cache_resource(show_spinner="Loading the model…", max_entries=2)
def load_backend(folder: str) -> HFBackend:
    """The model in `folder`, loaded once per process (a failed load is not cached: a fixed folder retries)."""
    import_model_libraries()  # not beside the app's background import of them (moe_core.backends)
    from moe_core.backends.hf import HFBackend
    from polyroute.workflows.common import quiet_libraries

    quiet_libraries()
    return HFBackend(folder)


def middle_band(layers: Sequence[int], n_layers: int) -> tuple[int, int]:
    """The MoE layers of the middle depth zone (docs/methods.md steers there): `zones.zone_band`."""
    return zone_band(layers, n_layers, "middle")


def fitted_band(band: tuple[int, int], layers: Sequence[int], fallback: tuple[int, int]) -> tuple[int, int]:
    """`band` when both its ends are MoE layers of this model, else `fallback`."""
    return band if band[0] in layers and band[1] in layers and band[0] <= band[1] else fallback


def band_slider(label: str, layers: Sequence[int], default: tuple[int, int], key: str, help: str) -> tuple[int, int]:
    """A range of MoE layers, read "layer 2" when it holds one (never "2 2")."""
    if len(layers) == 1:
        st.caption(f"{label}: the model has one MoE layer, layer {layers[0]}.")
        return layers[0], layers[0]
    band = st.select_slider(label, list(layers), value=default, key=key, help=help)
    first, last = int(band[0]), int(band[1])
    if first == last:
        # Both ends on one layer: the slider would show its number twice; say it once, below.
        st.html(f"<style>.st-key-{key} [data-testid='stSliderThumbValue'] {{visibility: hidden;}}</style>")
    st.caption(f"Steers {layers_text((first, last))}.")
    return first, last


@dataclass(frozen=True, kw_only=True)
class PresetSettings:
    """A preset's choices on the page: the language (the pool's source for shared experts), the
    threshold (tau for language experts, thr otherwise), k, the band and the strength."""

    kind: str
    lang: str
    ref: str
    level: float
    k: int
    band: tuple[int, int]
    strength: float
    pool: tuple[str, ...] = ()  # shared experts only: the languages, source first


@st.cache_data(show_spinner="Finding the experts…", max_entries=64)
def preset_plan(path: str, run_id: int, run_version: Version, settings: PresetSettings) -> SteeringPlan:
    """The preset's plan from the stored run (plans.NoExpertsError when its settings find none)."""
    del run_version  # part of the cache key only
    with shared_store(path).reading() as store:
        if uses_language_experts(settings.kind):
            return plans.language_experts(
                store,
                run_id,
                settings.lang,
                ref=settings.ref,
                tau=settings.level,
                layers=settings.band,
                strength=settings.strength,
            )
        if is_shared(settings.kind):
            return plans.shared_experts(
                store,
                run_id,
                settings.pool,
                k=settings.k,
                thr=settings.level,
                layers=settings.band,
                strength=settings.strength,
            )
        return plans.exclusive_experts(
            store, run_id, settings.lang, window=settings.band, k=settings.k, thr=settings.level
        )


@dataclass(frozen=True, kw_only=True)
class Suggestion:
    """The nearest settings that find experts, each a slider value: the threshold with k as it is,
    and k with the threshold as it is (None where no value does)."""

    level: float | None
    k: int | None


@st.cache_data(show_spinner="Looking for settings that find experts…", max_entries=64)
def suggestion(path: str, run_id: int, run_version: Version, settings: PresetSettings) -> Suggestion:
    """Where the preset's settings would find experts, in the same band."""
    del run_version  # part of the cache key only
    with shared_store(path).reading() as store:
        if uses_language_experts(settings.kind):
            nearest = plans.language_nearest(store, run_id, settings.lang, ref=settings.ref, layers=settings.band)
        elif is_shared(settings.kind):
            nearest = plans.shared_nearest(store, run_id, settings.pool, k=settings.k, layers=settings.band)
        else:
            nearest = plans.exclusive_nearest(
                store, run_id, settings.lang, window=settings.band, k=settings.k, thr=settings.level
            )
    return Suggestion(level=slider_level(nearest), k=nearest.k)


def slider_level(nearest: plans.Nearest) -> float | None:
    """The threshold slider's value nearest `nearest.threshold` on the side where experts exist."""
    if nearest.threshold is None:
        return None
    steps = nearest.threshold / LEVEL_STEP
    # Strictly below (or above) the limit: experts exist for thresholds on one side of it only.
    value = (math.floor(steps + 1e-9) + 1 if nearest.above else math.ceil(steps - 1e-9) - 1) * LEVEL_STEP
    return round(value, 2) if LEVEL_STEP - 1e-9 <= value <= 1.0 else None


def no_experts(error: plans.NoExpertsError, nearest: Suggestion, *, level_key: str, k_key: str | None) -> None:
    """Why the preset found no expert, in page words, and buttons that move the threshold or k to
    the nearest value that finds some (each keeps the other setting and the band as they are)."""
    st.warning(error_words(error), icon=":material/info:")
    if nearest.level is None and nearest.k is None:
        st.info("No threshold finds an expert in these layers: widen the band.", icon=":material/info:")
        return
    offers = []
    if nearest.level is not None:
        keeping = " (k as it is)" if k_key is not None else ""
        offers.append((f"Use threshold {nearest.level:g}{keeping}", level_key, nearest.level))
    if nearest.k is not None and k_key is not None:
        offers.append((f"Use k {nearest.k} (threshold as it is)", k_key, nearest.k))
    st.markdown("The nearest settings that find experts in the same layers:")
    columns = st.columns([1] * len(offers) + [3 - len(offers)])  # the buttons side by side, on the left
    for column, (label, key, value) in zip(columns, offers, strict=False):
        column.button(label, key=f"{key}_suggested", on_click=_set, args=(key, value))


def _set(key: str, value: object) -> None:
    st.session_state[key] = value


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
    """One prompt generated without and with a plan, the routing mass per layer of each, and the
    steered generation's tokens marked by whether they moved onto the plan's experts."""

    plain: str
    steered: str
    masses: pd.DataFrame  # layer, generation, mass, change, experts, in_band
    tokens: pd.DataFrame  # position, token, generated, status, ...


def compare(backend: Backend, prompt: str, max_new_tokens: int, plan: SteeringPlan) -> Comparison:
    done = steer_prompt(backend, prompt, plan, max_new_tokens)
    plain, steered = done.plain.routing, done.steered.routing
    return Comparison(
        plain=done.plain.texts[0],
        steered=done.steered.texts[0],
        masses=pd.DataFrame(mass_rows(plan, plain, steered, backend.info().n_experts, (UNSTEERED, STEERED))),
        tokens=token_frame(plan, plain, steered),
    )


def _tooltips() -> list[alt.Tooltip]:
    return [
        alt.Tooltip("layer:O", title="layer"),
        alt.Tooltip("generation:N", title="generation"),
        alt.Tooltip("mass:Q", title="mass", format=".3f"),
        alt.Tooltip("change:Q", title="change with the plan", format="+.3f"),
        alt.Tooltip("experts:N", title="experts"),
        alt.Tooltip("in_band:N", title="steered layer"),
    ]


def mass_chart(masses: pd.DataFrame, band: tuple[int, int]) -> alt.Chart:
    """Bars per MoE layer, unsteered and steered side by side, on a scale that fits the masses."""
    return (
        alt.Chart(masses, title=f"Routing mass on the plan's experts, per layer (steered: {layers_text(band)})")
        .mark_bar()
        .encode(
            x=alt.X("layer:O", title="Decoder layer", axis=alt.Axis(labelAngle=0)),
            xOffset=alt.XOffset("generation:N", sort=[UNSTEERED, STEERED]),
            y=alt.Y("mass:Q", title="Mean routing mass on the plan's experts", scale=alt.Scale(nice=True)),
            color=alt.Color("generation:N", title="Generation", scale=GENERATION_COLOURS),
            tooltip=_tooltips(),
        )
    )


def change_chart(masses: pd.DataFrame, band: tuple[int, int]) -> alt.LayerChart:
    """The steered minus the unsteered mass per MoE layer, each bar labelled with its value."""
    changes = masses[masses["generation"] == STEERED]
    base = alt.Chart(changes).encode(
        x=alt.X("layer:O", title="Decoder layer", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("change:Q", title="Steered minus unsteered mass", scale=alt.Scale(nice=True)),
    )
    bars = base.mark_bar().encode(
        color=alt.Color(
            "in_band:N",
            title="Steered layer",
            scale=alt.Scale(domain=["yes", "no"], range=[PALETTE[1], UNKNOWN]),
        ),
        tooltip=_tooltips(),
    )
    labels = base.mark_text(dy=-8).encode(text=alt.Text("change:Q", format="+.3f"))
    return (bars + labels).properties(title=f"Change in routing mass with the plan (steered: {layers_text(band)})")


def token_frame(plan: SteeringPlan, plain: RoutingBatch, steered: RoutingBatch) -> pd.DataFrame:
    """One row per token the steered generation read: how many steered layers put one of the plan's
    experts in its top-k, with and without the plan at the same position, and what that makes it
    (GAINED: more layers with the plan, KEPT: as many and some, NONE: none). Tokens past the
    unsteered text's end are compared with no plan expert."""
    steered_count, plain_hits = _plan_hits(plan, steered), _plan_hits(plan, plain)
    plain_count = np.zeros_like(steered_count)
    common = min(len(steered_count), len(plain_hits))
    plain_count[:common] = plain_hits[:common]
    status = np.where(steered_count > plain_count, GAINED, np.where(steered_count > 0, KEPT, NONE))
    positions = np.arange(len(steered_count))
    return pd.DataFrame(
        {
            "position": positions,
            "token": [shown_piece(piece) for piece in steered.pieces],
            "generated": ["written" if flag else "prompt" for flag in steered.generated],
            "layers_with_plan": steered_count,
            "layers_unsteered": plain_count,
            "status": status,
        }
    )[~np.asarray(steered.special, dtype=bool)]


def _plan_hits(plan: SteeringPlan, batch: RoutingBatch) -> np.ndarray:
    """[N] int: per token, the steered layers whose top-k holds one of that layer's plan experts."""
    layers = [int(layer) for layer in batch.layers]
    hits = np.zeros(len(batch.pieces), dtype=np.int64)
    for entry in plan.steered():
        if entry.layer in layers:
            chosen = batch.expert_ids[:, layers.index(entry.layer)]
            hits += np.isin(chosen, entry.experts).any(axis=-1)
    return hits


def token_strip(tokens: pd.DataFrame) -> str:
    """The steered generation's tokens in reading order as markdown, each on the colour of its
    status: green GAINED, blue KEPT, none NONE."""
    colour = {GAINED: "green", KEPT: "blue"}
    cells = []
    for token, status in zip(tokens["token"], tokens["status"], strict=True):
        text = escaped(str(token))
        cells.append(f":{colour[status]}-background[{text}]" if status in colour else text)
    return " ".join(cells)


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
