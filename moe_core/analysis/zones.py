"""Depth zones: which MoE layers form the early, middle and late zone of a model (docs/methods.md).

One vocabulary (early, middle, late: `--sweep window=...`, `polyroute plan exclusive --window`) and one
rule: a layer's zone is its depth fraction layer / n_layers, early [0, 37.5%), middle [37.5%, 62.5%),
late [62.5%, 100%]. The analyses' default band, the Steering page's default band, plans and the
window sweep all ask here. RISE's subnetwork keeps its own zones (`rise.depth_zones`, shallow,
middle, deep), today at the same edges.

The one fallback is deliberate and only in `zone_band`: a zone with no MoE layer (a model of few
layers) gives the MoE layer nearest the zone's centre, so a default band always exists. Where the
user named the zone, callers use `zone_layers` and say that the zone is empty instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ZONES = ("early", "middle", "late")
ZONE_EDGES = (0.375, 0.625)  # depth fractions where the middle zone and the late zone start
_CENTRES = (ZONE_EDGES[0] / 2, sum(ZONE_EDGES) / 2, (ZONE_EDGES[1] + 1) / 2)


def zone_index(layers: Sequence[int] | np.ndarray, n_layers: int) -> np.ndarray:
    """[Y] decoder-layer indices -> [Y] int zone (0 early, 1 middle, 2 late)."""
    fraction = np.asarray(layers, dtype=np.float64) / n_layers
    return np.searchsorted(np.asarray(ZONE_EDGES), fraction, side="right")


def _zone(zone: str) -> int:
    if zone not in ZONES:
        raise ValueError(f"{zone!r} is not a depth zone; use {', '.join(ZONES)}")  # callers check user input
    return ZONES.index(zone)


def zone_mask(layers: Sequence[int] | np.ndarray, n_layers: int, zone: str) -> np.ndarray:
    """[Y] bool: which of `layers` lie in `zone`."""
    return zone_index(layers, n_layers) == _zone(zone)


def zone_layers(layers: Sequence[int] | np.ndarray, n_layers: int, zone: str) -> list[int]:
    """The sorted MoE layers of `zone` (empty when it holds none)."""
    ordered = np.sort(np.asarray(layers, dtype=np.int64))
    return [int(layer) for layer in ordered[zone_mask(ordered, n_layers, zone)]]


def zone_band(layers: Sequence[int] | np.ndarray, n_layers: int, zone: str = "middle") -> tuple[int, int]:
    """First and last MoE layer of `zone`; when it holds none, the MoE layer nearest its centre."""
    inside = zone_layers(layers, n_layers, zone)
    if inside:
        return inside[0], inside[-1]
    ordered = np.sort(np.asarray(layers, dtype=np.int64))
    if not ordered.size:
        raise ValueError("no MoE layer to choose from")
    nearest = int(ordered[np.argmin(np.abs(ordered / n_layers - _CENTRES[_zone(zone)]))])
    return nearest, nearest
