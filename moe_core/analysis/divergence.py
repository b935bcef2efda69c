"""Entropy and Jensen-Shannon divergence of routing distributions, and per-layer divergence curves
from a reference language over aligned pairs (docs/methods.md, "Divergence from a reference language"),
and several runs' curves compared on one depth axis ("Comparing runs").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_MIXTURE = 1e-10  # m = (p + q) / 2 is clamped here so log(p / m) stays finite
MIN_DENOMINATOR = 1e-6  # log E - mean entropy is clamped here (two nearly uniform distributions)


def entropy(p: np.ndarray) -> np.ndarray:
    """H(p) = -sum p log p in nats, with 0 log 0 = 0. p: [..., E] -> [...].

    Computed in p's float precision (float32 stays float32: stored distributions are float32 and
    this halves the memory traffic), summed in float64.
    """
    p = np.asarray(p)
    if p.dtype not in (np.float32, np.float64):
        p = p.astype(np.float64)
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    return -(p * logs).sum(axis=-1, dtype=np.float64)


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """JS(p, q) = KL(p || m) / 2 + KL(q || m) / 2, m = (p + q) / 2, in nats. p, q: [..., E] -> [...]."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = np.maximum((p + q) / 2, MIN_MIXTURE)
    return (_kl_terms(p, m) + _kl_terms(q, m)) / 2


def _kl_terms(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    return (p * np.log(np.where(p > 0, p, 1.0) / m)).sum(axis=-1)


def normalised_js(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """D(p, q) = JS(p, q) / (log E - (H(p) + H(q)) / 2), the denominator clamped at 1e-6.

    Dividing by the entropy gap keeps peaked and flat routers comparable. p, q: [..., E] -> [...].
    """
    n_experts = np.shape(p)[-1]
    gap = np.log(n_experts) - (entropy(p) + entropy(q)) / 2
    return js_divergence(p, q) / np.maximum(gap, MIN_DENOMINATOR)


def divergence_curves(
    n_items: np.ndarray, js_sums: np.ndarray, d_sums: np.ndarray, ref_index: int, ref_items: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-layer mean divergence of every language from the reference over the items both have,
    from per-pair sums (`moe_core.analysis.summaries.pair_sums`: computed pair by pair, never on
    averaged distributions).

    n_items: [L, L] aligned items of each language pair; js_sums, d_sums: [L, L, Y] sums of JS and of
    the normalised D over those items; ref_items: the reference's own items. Returns (normalised D
    [L, Y], raw JS [L, Y], pairs [L]): the means of D(q_i^ref, q_i^L) and JS over aligned items i,
    NaN for a language that shares no item with the reference; the reference itself gets 0.
    """
    pairs = n_items[ref_index].astype(np.int64)
    pairs[ref_index] = ref_items
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.where(pairs[:, None] > 0, d_sums[ref_index] / pairs[:, None], np.nan)
        raw = np.where(pairs[:, None] > 0, js_sums[ref_index] / pairs[:, None], np.nan)
    normalised[ref_index] = np.where(ref_items > 0, 0.0, np.nan)
    raw[ref_index] = normalised[ref_index]
    return normalised, raw, pairs


@dataclass(frozen=True, kw_only=True)
class RunComparison:
    """Several runs' divergence curves side by side (`compare_runs`); R runs, L languages, Y_r layers of run r."""

    depth: list[np.ndarray]  # R x [Y_r]: layer / (n_layers - 1), so models of different depth line up
    mean_curves: list[np.ndarray]  # R x [Y_r]: the mean over the languages (NaN ignored)
    band_means: np.ndarray  # [R, L]: each language's mean over the run's middle band (NaN ignored)
    differences: list[np.ndarray]  # R x [L, Y_r]: the curve minus its baseline run's (NaN without one)
    mean_differences: list[np.ndarray]  # R x [Y_r]: mean_curves minus the baseline's (NaN without one)


def compare_runs(
    curves: Sequence[np.ndarray],
    layers: Sequence[np.ndarray],
    n_layers: Sequence[int],
    bands: Sequence[np.ndarray],
    baselines: Sequence[int],
) -> RunComparison:
    """Per-layer divergence curves of R runs on one depth axis, their middle-band means, and each
    run's difference from a baseline run of the same model (a steered run minus the unsteered one).

    curves: R arrays [L, Y_r], run r's per-layer divergence of the same L languages in the same order
    (NaN where the run lacks a language; `divergence_curves`' normalised D); layers: R arrays [Y_r] of
    decoder-layer indices; n_layers: R decoder depths; bands: R bool arrays [Y_r], each run's middle
    band; baselines: R positions of the run each is compared with layer by layer (-1: none), whose
    layers must be the same. Returns a `RunComparison`.
    """
    n_runs = len(curves)
    if not n_runs == len(layers) == len(n_layers) == len(bands) == len(baselines):
        raise ValueError("curves, layers, n_layers, bands and baselines need one entry per run")
    depth = [
        np.asarray(found, dtype=np.float64) / max(int(n) - 1, 1) for found, n in zip(layers, n_layers, strict=True)
    ]
    mean_curves = [nan_mean(curve, axis=0) for curve in curves]
    band_means = np.stack([nan_mean(curve[:, band], axis=1) for curve, band in zip(curves, bands, strict=True)])
    differences, mean_differences = [], []
    for run, base in enumerate(baselines):
        if base < 0:
            differences.append(np.full(curves[run].shape, np.nan))
            mean_differences.append(np.full(curves[run].shape[1], np.nan))
            continue
        if not np.array_equal(layers[run], layers[base]):
            raise ValueError(f"run position {run} and its baseline {base} have different layers")
        differences.append(curves[run] - curves[base])
        mean_differences.append(mean_curves[run] - mean_curves[base])
    return RunComparison(
        depth=depth,
        mean_curves=mean_curves,
        band_means=band_means,
        differences=differences,
        mean_differences=mean_differences,
    )


def nan_mean(values: np.ndarray, axis: int) -> np.ndarray:
    """np.nanmean without its warning for an all-NaN or empty slice (which gives NaN)."""
    valid = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid, values, 0.0).sum(axis=axis) / valid.sum(axis=axis)
