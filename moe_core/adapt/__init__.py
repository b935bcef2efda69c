"""RISE subnetwork training (docs/methods.md, "RISE"): train only a selected set of experts with the
causal-LM loss on target-language text, everything else frozen; measure held-out loss per
language (and, given a task corpus, a benchmark task's scores) before and after; save the trained
slices as a small adapter and merge it into a full checkpoint.

Which experts a stored trace run selects is `moe_core.analysis.rise` (pure numpy), applied by
`polyroute.workflows.adapt`, which joins this engine with the store. The modules:
- `settings`: the training settings and the progress and loss records (no torch: pages import it);
- `subnetwork`: where a selected expert's weights are (fused slices or modules) and the mask that
  trains only them;
- `training`: the training loop and the per-language held-out loss;
- `task`: a benchmark task's items and its scores before and after (no torch: the backend generates);
- `checkpoint`: the adapter folder (slices + manifest) and the merge.
"""

from moe_core.adapt.settings import AdaptProgress, LanguageLoss, ProgressCallback, TrainingLog, TrainSettings

__all__ = ["AdaptProgress", "LanguageLoss", "ProgressCallback", "TrainSettings", "TrainingLog"]
