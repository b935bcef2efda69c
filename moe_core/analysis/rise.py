"""RISE (2604.03592): specificity and overlap scores, depth zones, the budgeted expert subnetwork,
and routing isolation between high- and low-resource languages (docs/methods.md, "RISE").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


def rise_scores(freq: np.ndarray, target_index: int, *, alpha: float = 10.0) -> RiseScores:
    """RISE scores from activation frequencies. freq: [L, Y, E] over the languages in the statistics.

    An expert no language uses gets S = 0 and O = 0 (its CV is undefined).
    """
    freq = np.asarray(freq, dtype=np.float64)
    target = freq[target_index]
    mean = freq.mean(axis=0)
    used = mean > 0
    safe_mean = np.where(used, mean, 1.0)
    specificity = np.where(used, target / safe_mean, 0.0)
    cv = freq.std(axis=0) / safe_mean  # population std, as the paper defines CV
    overlap = np.where(used, 1 / (1 + cv), 0.0)
    return RiseScores(
        specificity=specificity,
        overlap=overlap,
        spec=specificity * (1 + alpha * target),
        ovlp=overlap * (1 + alpha * mean),
    )


def depth_zones(layers: np.ndarray, n_layers: int) -> np.ndarray:
    """Zone of each MoE layer by depth fraction layer / n_layers: 0 shallow [0, 37.5%),
    1 middle [37.5%, 62.5%), 2 deep [62.5%, 100%]. layers: [Y] decoder indices -> [Y] int."""
    fraction = np.asarray(layers, dtype=np.float64) / n_layers
    return np.searchsorted(np.asarray(ZONE_EDGES), fraction, side="right")


def zone_budgets(budget: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """Split K by the ratios: shallow and middle floored, deep takes the rest."""
    shallow = int(np.floor(budget * ratios[0]))
    middle = int(np.floor(budget * ratios[1]))
    return shallow, middle, budget - shallow - middle


def select_subnetwork(
    scores: RiseScores, zones: np.ndarray, budget: int, ratios: tuple[float, float, float] = DEFAULT_RATIOS
) -> list[tuple[int, int]]:
    """The K experts RISE trains, as (layer index into Y, expert) pairs in selection order.

    Shallow and deep zones rank by Spec, the middle by Ovlp; within a zone the experts of all its
    layers are pooled and ranked together (ties: lower layer, then lower expert). A zone with fewer
    experts than its share passes the rest to the other zones, the largest ratio first.
    zones: [Y] from `depth_zones`.
    """
    ranked = [_ranked(scores.ovlp if zone == 1 else scores.spec, zones == zone) for zone in range(3)]
    wanted = list(zone_budgets(budget, ratios))
    overflow = 0
    for zone in range(3):
        overflow += max(0, wanted[zone] - len(ranked[zone]))
        wanted[zone] = min(wanted[zone], len(ranked[zone]))
    for zone in sorted(range(3), key=lambda z: -ratios[z]):
        extra = min(overflow, len(ranked[zone]) - wanted[zone])
        wanted[zone] += extra
        overflow -= extra
    return [pair for zone in range(3) for pair in ranked[zone][: wanted[zone]]]


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
