"""Steering plans built from stored runs (docs/methods.md, "Expert identification" and "Steering and
interventions"): task experts and language experts (Delta-tau, soft), experts a pool of languages
shares with the source-language shares as coefficients (adaptive), and a language's exclusive
experts over an early, middle or late window (ablate); the last two also with the published settings
of 2601.14050 (`moe_core.steering.presets`), scaled to the run's model.

Every builder reads the run through `RunData` and the analyses facade, keeps only the experts of
the run's MoE layers inside the chosen band, and returns a plan already checked against the model
shape the store records for the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from moe_core.analysis import experts
from moe_core.analysis.zones import ZONES, zone_layers
from moe_core.errors import ParameterError, PolyrouteError
from moe_core.steering.plan import ABLATE, ADAPTIVE, SOFT, LayerExperts, SteeringPlan, layers_text
from moe_core.steering.presets import SHARED_WINDOW, Preset, PresetKind, preset_for, preset_names
from polyroute import analyses
from polyroute.run_data import RunData, Selection
from store import Store
from store import queries as q

SOFT_STRENGTH = 0.5  # lambda of the published soft-steering runs
ADAPTIVE_STRENGTH = 0.02  # lambda of the published adaptive runs (about 0.02-0.03)
SHARE_K = 15  # k and thr of shared and exclusive experts without a preset (2601.14050's defaults)
SHARE_THR = 0.4
WIDEN = "lower the threshold {tau} or widen the band ({layers})"  # parameters: the CLI says them as its flags


class NoExpertsError(ParameterError):
    """The settings find no expert to steer; the `*_nearest` functions say which settings would."""


@dataclass(frozen=True, kw_only=True)
class Nearest:
    """How far a plan's threshold may go before experts exist, in the same layers and at the same k.

    language experts exist for tau < `threshold`; exclusive experts for thr < `threshold`; shared
    experts for thr > `threshold` (`above`). `k`: the smallest k at which exclusive experts exist at
    the asked thr (None: none at any k, or not an exclusive plan). `threshold` None: no threshold works.
    """

    threshold: float | None
    above: bool = False
    k: int | None = None


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
    chosen = [(found.layers[y], int(e)) for y, e in np.argwhere(found.specialised)]
    band = _band_of(data)
    _require(chosen, f"no expert passes tau {tau} in {layers_text(band)}: {WIDEN}")
    source = f"task experts: run {run_id} vs generic run {ref_run_id}, lang {lang}, tau {tau}, {layers_text(band)}"
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
    data = _language_pair(store, run_id, lang, ref, layers)
    found = analyses.analyze_experts(data, tau=tau)
    chosen = [(found.layers[y], int(e)) for y, e in np.argwhere(found.specialised[found.langs.index(lang)])]
    band = _band_of(data)
    _require(chosen, f"no expert passes tau {tau} in {layers_text(band)}: {WIDEN}")
    source = f"language experts: run {run_id}, lang {lang} vs {ref}, tau {tau}, {layers_text(band)}"
    return _plan(data, SOFT, band, _entries(chosen), strength, source)


def language_nearest(
    store: Store, run_id: int, lang: str, *, ref: str = "eng_Latn", layers: tuple[int, int] | None = None
) -> Nearest:
    """The largest Delta of `lang` against `ref` in the band: language experts exist for every tau below it."""
    data = _language_pair(store, run_id, lang, ref, layers)
    target = data.sequence_mean_frequencies
    largest = float(experts.delta(target[data.langs.index(lang)], target[data.ref_position()]).max())
    return Nearest(threshold=largest if largest > 0 else None)


def _language_pair(store: Store, run_id: int, lang: str, ref: str, layers: tuple[int, int] | None) -> RunData:
    """The run read for `ref` (first) and `lang`, narrowed to the band."""
    if lang == ref:
        raise ParameterError(f"{{lang}} and {{ref}} are both {lang}: language experts compare two languages")
    return _in_band(RunData(store, run_id, Selection(langs=[ref, lang], ref=ref)), layers, zone="middle")


def shared_experts(
    store: Store,
    run_id: int,
    langs: Sequence[str] | None,
    *,
    k: int | None = None,
    thr: float | None = None,
    layers: tuple[int, int] | None = None,
    strength: float | None = None,
    preset: str | None = None,
) -> SteeringPlan:
    """Adaptive-steer the experts the languages share (every share < thr), c_e = the share of the
    first ("source") language; experts the source language does not keep are left out (c_e = 0
    would push nothing).

    `preset`: a published setting of 2601.14050 (`moe_core.steering.presets`, kind "shared") gives
    what is not given: its languages, k, thr, its band scaled to the run's MoE layers and the lambda
    published for the source language. Without one: k 15, thr 0.4, the middle zone, lambda 0.02."""
    published = _preset(store, run_id, preset, "shared") if preset is not None else None
    if langs is None:
        if published is None:
            raise ParameterError("{langs} names the source language and the others (or choose a {preset})")
        langs = published.pool
    pool = list(dict.fromkeys(langs))
    if published is not None:
        k = published.k if k is None else k
        thr = published.thr if thr is None else thr
        layers = published.window(SHARED_WINDOW).band if layers is None else layers
        strength = _published_strength(published, pool[0]) if strength is None else strength
    k, thr = _share_settings(k, thr)
    strength = ADAPTIVE_STRENGTH if strength is None else strength
    data = _pool_data(store, run_id, pool, layers)
    k = min(k, data.layout.n_experts)  # a k past the expert count keeps every expert: say it as it is
    shares = experts.expert_shares(data.frequencies, k)
    source_shares = shares[data.langs.index(pool[0])]
    chosen_mask = experts.shared(shares, thr) & (source_shares > 0)
    band = _band_of(data)
    hint = " (with two languages only thr > 0.5 can share)" if len(pool) == 2 and thr <= 0.5 else ""
    _require(
        chosen_mask.any(),
        f"no expert is shared at k {k}, thr {thr} in {layers_text(band)}: raise {{thr}}{hint} or {{k}}",
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
        f"{layers_text(band)}{_from_preset(preset)}"
    )
    return _plan(data, ADAPTIVE, band, entries, strength, source)


def exclusive_experts(
    store: Store,
    run_id: int,
    lang: str,
    *,
    window: str | tuple[int, int] = "middle",
    k: int | None = None,
    thr: float | None = None,
    preset: str | None = None,
) -> SteeringPlan:
    """Ablate the experts exclusive to `lang` (its share > thr among all the run's languages) in
    the early, middle or late window (or layers A-B).

    `preset`: a published setting of 2601.14050 (kind "exclusive") gives k and thr where they are
    not given, and the early, middle and late windows: its published ones scaled to the run's MoE
    layers instead of the depth zones. Without one: k 15, thr 0.4."""
    published = _preset(store, run_id, preset, "exclusive") if preset is not None else None
    if published is not None:
        k = published.k if k is None else k
        thr = published.thr if thr is None else thr
        if isinstance(window, str) and window in ZONES:
            window = published.window(window).band
    k, thr = _share_settings(k, thr)
    data, position = _window_data(store, run_id, lang, window)
    k = min(k, data.layout.n_experts)  # a k past the expert count keeps every expert: say it as it is
    shares = experts.expert_shares(data.frequencies, k)
    own = experts.exclusive_per_language(shares, thr)[position]
    band = _band_of(data)
    _require(
        own.any(),
        f"{lang} has no exclusive expert at k {k}, thr {thr} in {layers_text(band)}: lower {{thr}} or widen {{window}}",
    )
    entries = tuple(
        LayerExperts(layer=layer, experts=tuple(int(e) for e in np.flatnonzero(own[y])))
        for y, layer in enumerate(data.layers)
        if own[y].any()
    )
    source = (
        f"exclusive experts: run {run_id}, lang {lang}, k {k}, thr {thr}, {layers_text(band)}{_from_preset(preset)}"
    )
    return _plan(data, ABLATE, band, entries, 0.0, source)


# The kinds of plan by the names `polyroute plan KIND` and `polyroute.plan(run, KIND)` take.
BUILDERS: dict[str, Callable[..., SteeringPlan]] = {
    "task-experts": task_experts,
    "language-experts": language_experts,
    "shared": shared_experts,
    "exclusive": exclusive_experts,
}


def shared_nearest(
    store: Store, run_id: int, langs: Sequence[str], *, k: int = 15, layers: tuple[int, int] | None = None
) -> Nearest:
    """The smallest thr above which the languages share an expert the source language keeps, at this k."""
    pool = list(dict.fromkeys(langs))
    data = _pool_data(store, run_id, pool, layers)
    shares = experts.expert_shares(data.frequencies, min(max(k, 1), data.layout.n_experts))
    eligible = (shares[data.langs.index(pool[0])] > 0) & (shares > 0).any(axis=0)
    return Nearest(threshold=float(shares.max(axis=0)[eligible].min()) if eligible.any() else None, above=True)


def exclusive_nearest(
    store: Store, run_id: int, lang: str, *, window: str | tuple[int, int] = "middle", k: int = 15, thr: float = 0.4
) -> Nearest:
    """The largest share `lang` holds of one expert in the window at this k (exclusive experts exist
    for every thr below it), and the smallest k at which it holds more than `thr` of one."""
    data, position = _window_data(store, run_id, lang, window)
    n_experts = data.layout.n_experts

    def largest_share(kept: int) -> float:
        return float(experts.expert_shares(data.frequencies, kept)[position].max())

    largest = largest_share(min(max(k, 1), n_experts))
    smallest_k = next((kept for kept in range(1, n_experts + 1) if largest_share(kept) > thr), None)
    return Nearest(threshold=largest if largest > 0 else None, k=smallest_k)


def summary(plan: SteeringPlan) -> str:
    """One line: the method and band, then experts per layer."""
    per_layer = ", ".join(f"{entry.layer}:{len(entry.experts)}" for entry in plan.experts)
    total = sum(len(entry.experts) for entry in plan.experts)
    return f"{plan.method} plan, band {_text(plan.band)}: {total} experts (layer:count {per_layer})"


# helpers --------------------------------------------------------------------------------------


def _check_k_thr(k: int, thr: float) -> None:
    if k < 1 or not 0 < thr <= 1:
        raise ParameterError(f"{{k}} must be at least 1 and {{thr}} in (0, 1]; got k={k}, thr={thr}")


def _pool_data(store: Store, run_id: int, pool: list[str], layers: tuple[int, int] | None) -> RunData:
    """The run read for the pool (the source language first), narrowed to the band."""
    if len(pool) < 2:
        raise ParameterError("{langs} needs the source language and at least one other, e.g. eng_Latn,zho_Hans")
    return _in_band(RunData(store, run_id, Selection(langs=pool, ref=pool[0])), layers, zone="middle")


def _window_data(store: Store, run_id: int, lang: str, window: str | tuple[int, int]) -> tuple[RunData, int]:
    """The run read for every language, narrowed to the window, and `lang`'s position among them."""
    data = RunData(store, run_id, Selection(ref=lang))
    position = data.ref_position()  # refuses a language the run lacks, naming the ones it has
    if isinstance(window, str):
        if window not in ZONES:
            raise ParameterError(f"unknown {{window}} {window!r}: use early, middle, late or A-B")
        return _in_band(data, None, zone=window), position
    return _in_band(data, window, zone="middle"), position


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


def _preset(store: Store, run_id: int, name: str, kind: PresetKind) -> Preset:
    """The published preset `name` of plans of `kind`, scaled to the MoE layers of the run's model."""
    if name not in preset_names(kind):
        raise ParameterError(f"unknown {{preset}} {name!r} for {kind} experts: use {' or '.join(preset_names(kind))}")
    layout = q.run_layout(store, run_id)
    if layout is None:
        raise PolyrouteError(f"the store holds no run {run_id}: list runs with `polyroute runs`")
    return preset_for(name, moe_layers=layout.layers.tolist())


def _published_strength(preset: Preset, source: str) -> float:
    published = dict(preset.strengths)
    if source not in published:
        options = ", ".join(f"{lang} ({value:g})" for lang, value in preset.strengths)
        raise ParameterError(
            f"{{preset}} {preset.name} published lambda only for the source languages {options}, not {source}: "
            "give {strength} or put one of them first in {langs}"
        )
    return published[source]


def _share_settings(k: int | None, thr: float | None) -> tuple[int, float]:
    """k and thr, the defaults where not given, checked."""
    k = SHARE_K if k is None else k
    thr = SHARE_THR if thr is None else thr
    if k < 1 or not 0 < thr <= 1:
        raise ParameterError(f"{{k}} must be at least 1 and {{thr}} in (0, 1]; got k={k}, thr={thr}")
    return k, thr


def _from_preset(preset: str | None) -> str:
    return f", preset {preset}" if preset is not None else ""


def _require(found: object, message: str) -> None:
    if not found:
        raise NoExpertsError(message)


def _text(band: tuple[int, int]) -> str:
    return str(band[0]) if band[0] == band[1] else f"{band[0]}-{band[1]}"
