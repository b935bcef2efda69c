"""Does routing predict performance? Pearson and Spearman correlation between each language's
middle-band divergence from the reference and its task score (docs/methods.md, "Language structure")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True, kw_only=True)
class Correlation:
    n: int
    pearson_r: float
    pearson_p: float
    spearman_rho: float
    spearman_p: float


def divergence_score_correlation(divergence: np.ndarray, scores: np.ndarray) -> Correlation:
    """Correlation over languages. divergence, scores: [L]; languages with a NaN in either are left out.

    Needs at least three languages with both values, and neither column constant.
    """
    divergence = np.asarray(divergence, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    both = ~np.isnan(divergence) & ~np.isnan(scores)
    x, y = divergence[both], scores[both]
    if x.size < 3:
        raise ValueError(f"a correlation needs at least 3 languages with a divergence and a score, not {x.size}")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise ValueError("a correlation needs divergences and scores that vary across languages")
    pearson = stats.pearsonr(x, y)
    spearman = stats.spearmanr(x, y)
    return Correlation(
        n=int(x.size),
        pearson_r=float(pearson.statistic),
        pearson_p=float(pearson.pvalue),
        spearman_rho=float(spearman.statistic),
        spearman_p=float(spearman.pvalue),
    )
