"""Steering plans built from stored runs (docs/methods.md, "Expert identification" and "Steering and
interventions"): task experts and language experts (Delta-tau, soft), experts a pool of languages
shares with the source-language shares as coefficients (adaptive), and a language's exclusive
experts over an early, middle or late window (ablate).

Every builder reads the run through `RunData` and the analyses facade, keeps only the experts of
the run's MoE layers inside the chosen band, and returns a plan already checked against the model
shape the store records for the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from moe_core.analysis import experts
from moe_core.analysis.zones import ZONES, zone_layers
from moe_core.errors import ParameterError, PolyrouteError
from moe_core.steering.plan import ABLATE, ADAPTIVE, SOFT, LayerExperts, SteeringPlan
from polyroute import analyses
from polyroute.run_data import RunData, Selection
from store import Store

SOFT_STRENGTH = 0.5  # lambda of the published soft-steering runs
ADAPTIVE_STRENGTH = 0.02  # lambda of the published adaptive runs (about 0.02-0.03)
WIDEN = "lower the threshold {tau} or widen the band ({layers})"  # parameters: the CLI says them as its flags


def task_experts(
    store: Store,
    run_id: int,
    ref_run_id: int,
    lang: str,
    *,
    tau: float = 0.4,
    layers: tuple[int, int] | None = None,
    strength: float = SOFT_STRENGTH,
) -> SteeringPlan:
    """Soft-steer the experts whose Delta (task run minus generic reference run, in `lang`) > tau."""
    selection = Selection(langs=[lang], ref=lang)
    data = _in_band(RunData(store, run_id, selection), layers, zone="middle")
    reference = _in_band(RunData(store, ref_run_id, selection), _band_of(data), zone="middle")
    found = analyses.analyze_experts(data, tau=tau, reference=reference)
    chosen = [(row["layer"], row["expert"]) for row in found.table("specialised").records()]
    band = _band_of(data)
    _require(chosen, f"no expert passes tau {tau} in layers {_text(band)}: {WIDEN}")
    source = f"task experts: run {run_id} vs generic run {ref_run_id}, lang {lang}, tau {tau}, layers {_text(band)}"
    return _plan(data, SOFT, band, _entries(chosen), strength, source)


def language_experts(
    store: Store,
    run_id: int,
    lang: str,
    *,
    ref: str = "eng_Latn",
    tau: float = 0.4,
    layers: tuple[int, int] | None = None,
    strength: float = SOFT_STRENGTH,
) -> SteeringPlan:
    """Soft-steer the experts whose Delta (`lang` minus `ref`, same run) > tau."""
    if lang == ref:
        raise ParameterError(f"{{lang}} and {{ref}} are both {lang}: language experts compare two languages")
    data = _in_band(RunData(store, run_id, Selection(langs=[ref, lang], ref=ref)), layers, zone="middle")
    found = analyses.analyze_experts(data, tau=tau)
    chosen = [(row["layer"], row["expert"]) for row in found.table("specialised").records() if row["lang"] == lang]
    band = _band_of(data)
    _require(chosen, f"no expert passes tau {tau} in layers {_text(band)}: {WIDEN}")
    source = f"language experts: run {run_id}, lang {lang} vs {ref}, tau {tau}, layers {_text(band)}"
    return _plan(data, SOFT, band, _entries(chosen), strength, source)


def shared_experts(
    store: Store,
    run_id: int,
    langs: Sequence[str],
    *,
    k: int = 15,
    thr: float = 0.4,
    layers: tuple[int, int] | None = None,
    strength: float = ADAPTIVE_STRENGTH,
) -> SteeringPlan:
    """Adaptive-steer the experts the languages share (every share < thr), c_e = the share of the
    first ("source") language; experts the source language does not keep are left out (c_e = 0
    would push nothing)."""
    pool = list(dict.fromkeys(langs))
    if len(pool) < 2:
        raise ParameterError("{langs} needs the source language and at least one other, e.g. eng_Latn,zho_Hans")
    if k < 1 or not 0 < thr <= 1:
        raise ParameterError(f"{{k}} must be at least 1 and {{thr}} in (0, 1]; got k={k}, thr={thr}")
    data = _in_band(RunData(store, run_id, Selection(langs=pool, ref=pool[0])), layers, zone="middle")
    shares = experts.expert_shares(data.frequencies, k)
    source_shares = shares[data.langs.index(pool[0])]
    chosen_mask = experts.shared(shares, thr) & (source_shares > 0)
    band = _band_of(data)
    hint = " (with two languages only thr > 0.5 can share)" if len(pool) == 2 and thr <= 0.5 else ""
    _require(
        chosen_mask.any(),
        f"no expert is shared at k {k}, thr {thr} in layers {_text(band)}: raise {{thr}}{hint} or {{k}}",
    )
    entries = tuple(
        LayerExperts(
            layer=layer,
            experts=tuple(int(e) for e in np.flatnonzero(chosen_mask[y])),
            coefficients=tuple(float(source_shares[y, e]) for e in np.flatnonzero(chosen_mask[y])),
        )
        for y, layer in enumerate(data.layers)
        if chosen_mask[y].any()
    )
    source = (
        f"shared experts: run {run_id}, source {pool[0]}, langs {','.join(pool)}, k {k}, thr {thr}, "
        f"layers {_text(band)}"
    )
    return _plan(data, ADAPTIVE, band, entries, strength, source)


def exclusive_experts(
    store: Store, run_id: int, lang: str, *, window: str | tuple[int, int] = "middle", k: int = 15, thr: float = 0.4
) -> SteeringPlan:
    """Ablate the experts exclusive to `lang` (its share > thr among all the run's languages) in
    the early, middle or late window (or layers A-B)."""
    if k < 1 or not 0 < thr <= 1:
        raise ParameterError(f"{{k}} must be at least 1 and {{thr}} in (0, 1]; got k={k}, thr={thr}")
    data = RunData(store, run_id, Selection(ref=lang))
    position = data.ref_position()  # refuses a language the run lacks, naming the ones it has
    if isinstance(window, str):
        if window not in ZONES:
            raise ParameterError(f"unknown {{window}} {window!r}: use early, middle, late or A-B")
        data = _in_band(data, None, zone=window)
    else:
        data = _in_band(data, window, zone="middle")
    shares = experts.expert_shares(data.frequencies, k)
    own = experts.exclusive_per_language(shares, thr)[position]
    band = _band_of(data)
    _require(
        own.any(),
        f"{lang} has no exclusive expert at k {k}, thr {thr} in layers {_text(band)}: "
        "lower {thr} or widen {window}",
    )
    entries = tuple(
        LayerExperts(layer=layer, experts=tuple(int(e) for e in np.flatnonzero(own[y])))
        for y, layer in enumerate(data.layers)
        if own[y].any()
    )
    source = f"exclusive experts: run {run_id}, lang {lang}, k {k}, thr {thr}, window {_text(band)}"
    return _plan(data, ABLATE, band, entries, 0.0, source)


# The kinds of plan by the names `polyroute plan KIND` and `polyroute.plan(run, KIND)` take.
BUILDERS: dict[str, Callable[..., SteeringPlan]] = {
    "task-experts": task_experts,
    "language-experts": language_experts,
    "shared": shared_experts,
    "exclusive": exclusive_experts,
}


def summary(plan: SteeringPlan) -> str:
    """One line: the method and band, then experts per layer."""
    per_layer = ", ".join(f"{entry.layer}:{len(entry.experts)}" for entry in plan.experts)
    total = sum(len(entry.experts) for entry in plan.experts)
    return f"{plan.method} plan, band {_text(plan.band)}: {total} experts (layer:count {per_layer})"


# helpers --------------------------------------------------------------------------------------


def _in_band(data: RunData, layers: tuple[int, int] | None, *, zone: str) -> RunData:
    """The run narrowed to `layers`, or by default to the MoE layers of one depth zone."""
    if layers is None:
        inside = zone_layers(data.layers, data.layout.n_layers, zone)
        if not inside:
            raise PolyrouteError(
                f"the model's MoE layers {_text((min(data.layers), max(data.layers)))} have none in the "
                f"{zone} zone: give the layers explicitly (A-B)"
            )
        layers = (inside[0], inside[-1])
    return data.narrowed(layers)


def _band_of(data: RunData) -> tuple[int, int]:
    # The plan's band is the span of the MoE layers actually read, not the range asked for: a band
    # asked past the model's last layer would otherwise fail `check_against`.
    return data.layers[0], data.layers[-1]


def _entries(chosen: Iterable[tuple[int, int]]) -> tuple[LayerExperts, ...]:
    by_layer: dict[int, list[int]] = {}
    for layer, expert in chosen:
        by_layer.setdefault(int(layer), []).append(int(expert))
    return tuple(LayerExperts(layer=layer, experts=tuple(sorted(found))) for layer, found in sorted(by_layer.items()))


def _plan(
    data: RunData, method: str, band: tuple[int, int], entries: tuple[LayerExperts, ...], strength: float, source: str
) -> SteeringPlan:
    plan = SteeringPlan(method=method, band=band, experts=entries, strength=strength, source=source)
    layout = data.layout
    plan.check_against(
        n_layers=layout.n_layers, moe_layers=layout.layers.tolist(), n_experts=layout.n_experts, top_k=layout.top_k
    )
    return plan


def _require(found: object, message: str) -> None:
    if not found:
        raise ParameterError(message)


def _text(band: tuple[int, int]) -> str:
    return str(band[0]) if band[0] == band[1] else f"{band[0]}-{band[1]}"
