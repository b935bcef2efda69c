"""The analyses of a stored run, from store to tables: the one facade the CLI and the app call.

Each function takes a `RunData` (the run, the selected languages and layers, read lazily) and
returns its typed result: a frozen dataclass of arrays next to the function (shapes in its
docstring) on the `AnalysisResult` base, whose params name every setting that produced it
(docs/methods.md gives the formulas; `moe_core.analysis` computes them) and whose `build_tables`
makes the display tables (`result.tables`, `result.table(name)`) that the CLI, the pages and the
API show. `ANALYSES` (registry.py) is the one table of them that the CLI, its `--help` and the app
read: a new analysis is a function and its result class here and an entry there. An analysis that
also compares several runs (`compare_divergence`) names that function in its entry.
"""

from polyroute.analyses.expert import ExpertResult, analyze_expert
from polyroute.analyses.experts import (
    IsolationResult,
    LanguageExpertsResult,
    RiseResult,
    SharedResult,
    TaskExpertsResult,
    analyze_experts,
    analyze_isolation,
    analyze_rise,
    analyze_shared,
)
from polyroute.analyses.registry import ANALYSES
from polyroute.analyses.routing import (
    ComparisonResult,
    ConsistencyResult,
    CorrelationResult,
    DivergenceResult,
    EntropyResult,
    SimilarityResult,
    analyze_consistency,
    analyze_correlation,
    analyze_divergence,
    analyze_entropy,
    analyze_similarity,
    compare_divergence,
)

__all__ = [
    "ANALYSES",
    "ComparisonResult",
    "ConsistencyResult",
    "CorrelationResult",
    "DivergenceResult",
    "EntropyResult",
    "ExpertResult",
    "IsolationResult",
    "LanguageExpertsResult",
    "RiseResult",
    "SharedResult",
    "SimilarityResult",
    "TaskExpertsResult",
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
