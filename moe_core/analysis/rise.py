"""RISE (2604.03592): specificity and overlap scores, depth zones, the budgeted expert subnetwork,
and routing isolation between high- and low-resource languages (docs/methods.md, "RISE").

Two rule sets select the subnetwork (`zones`):
- "reference" (the default of `select_rise` and `select_subnetwork`): the rules of the authors'
  code (init-neok/rise, `rise/expert_selector.py`): zones cut at L1 = round(0.375 n_layers) and
  L2 = round(0.625 n_layers) (Python's round, halves to even), a zone's overflow given to the zone
  with the most room left first, and an expert no language uses scored O = 1 (its CV taken as 0);
- "fraction": Polyroute's earlier rules: zones by the depth fraction layer / n_layers, overflow to
  the zone of the largest ratio first, an unused expert scored O = 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

ZoneRule = Literal["reference", "fraction"]
ZONE_RULES: tuple[ZoneRule, ...] = get_args(ZoneRule)
UnusedRule = Literal["reference", "zero"]
ZONES = ("shallow", "middle", "deep")
ZONE_EDGES = (0.375, 0.625)  # depth fractions where the middle zone starts and the deep zone starts
DEFAULT_RATIOS = (0.35, 0.25, 0.40)


@dataclass(frozen=True, kw_only=True)
class RiseScores:
    """Scores of every expert for one target language. All arrays are [Y, E]."""

    specificity: np.ndarray  # S = a_target / abar
    overlap: np.ndarray  # O = 1 / (1 + CV) over the languages
    spec: np.ndarray  # S * (1 + alpha * a_target): ranks shallow and deep experts
    ovlp: np.ndarray  # O * (1 + alpha * abar): ranks middle experts


def rise_scores(
    freq: np.ndarray, target_index: int, *, alpha: float = 10.0, unused: UnusedRule = "reference"
) -> RiseScores:
    """RISE scores from activation frequencies. freq: [L, Y, E] over the languages in the statistics.

    An expert no language uses (abar = 0) gets S = 0 and, with unused="reference", O = 1 (the
    reference divides by max(abar, 1e-8), so its CV is 0); with unused="zero", O = 0.
    """
    if unused not in get_args(UnusedRule):
        raise ValueError(f"unused must be one of {get_args(UnusedRule)}, not {unused!r}")
    freq = np.asarray(freq, dtype=np.float64)
    target = freq[target_index]
    mean = freq.mean(axis=0)
    used = mean > 0
    safe_mean = np.where(used, mean, 1.0)
    specificity = np.where(used, target / safe_mean, 0.0)
    cv = np.where(used, freq.std(axis=0) / safe_mean, 0.0)  # population std, as the paper defines CV
    overlap = 1 / (1 + cv) if unused == "reference" else np.where(used, 1 / (1 + cv), 0.0)
    return RiseScores(
        specificity=specificity,
        overlap=overlap,
        spec=specificity * (1 + alpha * target),
        ovlp=overlap * (1 + alpha * mean),
    )


def depth_zones(layers: np.ndarray, n_layers: int, zones: ZoneRule = "fraction") -> np.ndarray:
    """Zone of each MoE layer (0 shallow, 1 middle, 2 deep) from its decoder index among the
    model's n_layers decoder layers. layers: [Y] decoder indices -> [Y] int.

    zones="fraction" (the default here, since the middle zone is also the middle band of the
    divergence, similarity and plan views): by the depth fraction layer / n_layers, shallow
    [0, 37.5%), middle [37.5%, 62.5%), deep [62.5%, 100%].
    zones="reference" (init-neok/rise): shallow [0, L1), middle [L1, L2), deep [L2, n_layers) with
    L1 = round(0.375 n_layers), L2 = round(0.625 n_layers), Python's round (halves to even): with
    4 layers the middle zone is empty; with 94 the shallow zone is 0-34.
    """
    layers = np.asarray(layers)
    if zones == "reference":
        first_middle, first_deep = (round(n_layers * edge) for edge in ZONE_EDGES)
        return (layers >= first_middle).astype(np.int64) + (layers >= first_deep)
    if zones == "fraction":
        fraction = layers.astype(np.float64) / n_layers
        return np.searchsorted(np.asarray(ZONE_EDGES), fraction, side="right")
    raise ValueError(f"zones must be one of {ZONE_RULES}, not {zones!r}")


def zone_bounds(n_layers: int, zones: ZoneRule = "fraction") -> tuple[int, int]:
    """(L1, L2): the decoder index where the middle zone starts and where the deep zone starts, so
    that shallow = [0, L1), middle = [L1, L2), deep = [L2, n_layers) (L1 = L2: no middle zone)."""
    counts = np.bincount(depth_zones(np.arange(n_layers), n_layers, zones), minlength=3)
    return int(counts[0]), int(counts[0] + counts[1])


def zone_budgets(budget: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """Split K by the ratios: shallow and middle floored, deep takes the rest."""
    shallow = int(np.floor(budget * ratios[0]))
    middle = int(np.floor(budget * ratios[1]))
    return shallow, middle, budget - shallow - middle


def zone_quotas(
    budget: int, ratios: tuple[float, float, float], capacity: Sequence[int], *, zones: ZoneRule = "reference"
) -> tuple[int, int, int]:
    """How many experts each zone gives: its share of K (`zone_budgets`) capped at its capacity (the
    experts of its MoE layers), the excess passed on to the zones with room left:
    zones="reference": the zone with the most room left first (ties: shallow, middle, deep), as the
    reference's `_redistribute_budgets`; zones="fraction": the zone of the largest ratio first.
    A budget above the three capacities together yields them all."""
    if zones not in ZONE_RULES:
        raise ValueError(f"zones must be one of {ZONE_RULES}, not {zones!r}")
    wanted = [min(share, int(room)) for share, room in zip(zone_budgets(budget, ratios), capacity, strict=True)]
    overflow = budget - sum(wanted)
    if zones == "reference":
        order = sorted(range(3), key=lambda z: -(capacity[z] - wanted[z]))
    else:
        order = sorted(range(3), key=lambda z: -ratios[z])
    for zone in order:
        extra = min(overflow, int(capacity[zone]) - wanted[zone])
        wanted[zone] += extra
        overflow -= extra
    return wanted[0], wanted[1], wanted[2]


def select_subnetwork(
    scores: RiseScores,
    layer_zones: np.ndarray,
    budget: int,
    ratios: tuple[float, float, float] = DEFAULT_RATIOS,
    *,
    zones: ZoneRule = "reference",
) -> list[tuple[int, int]]:
    """The K experts RISE trains, as (layer index into Y, expert) pairs in selection order.

    Shallow and deep zones rank by Spec, the middle by Ovlp; within a zone the experts of all its
    layers are pooled and ranked together (ties: lower layer, then lower expert, as the reference's
    stable sort). Each zone gives `zone_quotas` experts; `zones` picks the overflow order and should
    be the rule `layer_zones` was built with. layer_zones: [Y] from `depth_zones`.
    """
    ranked = [_ranked(scores.ovlp if zone == 1 else scores.spec, layer_zones == zone) for zone in range(3)]
    quotas = zone_quotas(budget, ratios, [len(pairs) for pairs in ranked], zones=zones)
    return [pair for zone in range(3) for pair in ranked[zone][: quotas[zone]]]


@dataclass(frozen=True, kw_only=True)
class RiseSelection:
    """A RISE subnetwork with what chose it. Y MoE layers, E experts."""

    zones: ZoneRule  # the rule set it was selected with
    scores: RiseScores
    layer_zones: np.ndarray  # [Y] 0 shallow, 1 middle, 2 deep
    bounds: tuple[int, int]  # (L1, L2) decoder indices: `zone_bounds`
    quotas: tuple[int, int, int]  # experts taken from each zone
    experts: tuple[tuple[int, int], ...]  # (layer index into Y, expert), in selection order


def select_rise(
    freq: np.ndarray,
    target_index: int,
    *,
    layers: Sequence[int],
    n_layers: int,
    budget: int,
    ratios: tuple[float, float, float] = DEFAULT_RATIOS,
    alpha: float = 10.0,
    zones: ZoneRule = "reference",
) -> RiseSelection:
    """The RISE subnetwork of language `target_index` under one rule set.

    freq: [L, Y, E] pooled activation frequencies of the languages; layers: [Y] the decoder index
    of each MoE layer; n_layers: the model's decoder layers. zones="reference" follows the authors'
    code (zones by round(), overflow to the most room, unused experts O = 1); zones="fraction" is
    Polyroute's earlier selection (zones by depth fraction, overflow by ratio, unused experts O = 0).
    """
    if zones not in ZONE_RULES:
        raise ValueError(f"zones must be one of {ZONE_RULES}, not {zones!r}")
    scores = rise_scores(freq, target_index, alpha=alpha, unused="reference" if zones == "reference" else "zero")
    layer_zones = depth_zones(np.asarray(layers), n_layers, zones)
    capacity = [int((layer_zones == zone).sum()) * scores.spec.shape[-1] for zone in range(3)]
    return RiseSelection(
        zones=zones,
        scores=scores,
        layer_zones=layer_zones,
        bounds=zone_bounds(n_layers, zones),
        quotas=zone_quotas(budget, ratios, capacity, zones=zones),
        experts=tuple(select_subnetwork(scores, layer_zones, budget, ratios, zones=zones)),
    )


def _ranked(score: np.ndarray, in_zone: np.ndarray) -> list[tuple[int, int]]:
    layers, experts = np.nonzero(np.broadcast_to(in_zone[:, None], score.shape))
    order = np.lexsort((experts, layers, -score[layers, experts]))
    return [(int(layers[i]), int(experts[i])) for i in order]


def top_n_sets(freq: np.ndarray, top_n: int) -> np.ndarray:
    """The N most used experts of each row per layer. freq: [..., Y, E] -> bool [..., Y, E]."""
    order = np.argsort(-freq, axis=-1, kind="stable")[..., :top_n]
    chosen = np.zeros(freq.shape, dtype=bool)
    np.put_along_axis(chosen, order, True, axis=-1)
    return chosen


def routing_isolation(freq: np.ndarray, high: np.ndarray, low: np.ndarray, top_n: int) -> np.ndarray:
    """Per layer, the Jaccard overlap of the top-N experts of high- and of low-resource languages.

    Each group's set is the top N of its languages' mean activation frequency.
    freq: [L, Y, E]; high, low: [L] bool. Returns [Y] in [0, 1] (1 = same experts, 0 = isolated).
    """
    high_set = top_n_sets(freq[np.asarray(high, dtype=bool)].mean(axis=0), top_n)
    low_set = top_n_sets(freq[np.asarray(low, dtype=bool)].mean(axis=0), top_n)
    return (high_set & low_set).sum(axis=-1) / (high_set | low_set).sum(axis=-1)
