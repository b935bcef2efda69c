"""Steering one prompt, as `polyroute steer` and the Steering page both show it: the text of a
generation (an empty one said in words), and the routing mass a plan moves onto its experts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from moe_core.analysis.flow import mass_on_experts
from moe_core.records import RoutingBatch


def shown(text: str) -> str:
    """A generation's text, or what it means when it is empty."""
    return text if text.strip() else "(nothing: the model ended the text at once)"


def mass_at(batch: RoutingBatch, layer: int, experts: Sequence[int], n_experts: int) -> float:
    """The mean routing mass on `experts` in decoder layer `layer`, over every token of `batch`
    (the CLI's table and the Steering page's chart both measure it so)."""
    position = [int(found) for found in batch.layers].index(layer)
    chosen = np.zeros((1, n_experts), dtype=bool)
    chosen[0, list(experts)] = True
    weights = None if batch.expert_weights is None else batch.expert_weights[:, position : position + 1]
    return float(mass_on_experts(batch.expert_ids[:, position : position + 1], weights, chosen)[0])
