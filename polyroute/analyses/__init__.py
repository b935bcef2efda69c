"""The analyses of a stored run, from store to tables: the one facade the CLI and the app call.

Each function takes a `RunData` (the run, the selected languages and layers, read lazily) and
returns an `AnalysisResult` whose params name every setting that produced it (docs/methods.md gives
the formulas; `moe_core.analysis` computes them). `ANALYSES` (registry.py) is the one table of them
that the CLI, its `--help` and the app read: a new analysis is a function here and an entry there.
An analysis that also compares several runs (`compare_divergence`) names that function in its entry.
"""

from polyroute.analyses.expert import analyze_expert
from polyroute.analyses.experts import analyze_experts, analyze_isolation, analyze_rise, analyze_shared
from polyroute.analyses.registry import ANALYSES
from polyroute.analyses.routing import (
    analyze_consistency,
    analyze_correlation,
    analyze_divergence,
    analyze_entropy,
    analyze_similarity,
    compare_divergence,
)

__all__ = [
    "ANALYSES",
    "analyze_consistency",
    "analyze_correlation",
    "analyze_divergence",
    "analyze_entropy",
    "analyze_expert",
    "analyze_experts",
    "analyze_isolation",
    "analyze_rise",
    "analyze_shared",
    "analyze_similarity",
    "compare_divergence",
]
