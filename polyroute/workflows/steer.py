"""Steering one prompt, as `polyroute steer`, the Steering page and `polyroute.steer` show it: the
prompt generated without and with a plan, the text of a generation (an empty one said in words),
and the routing mass a plan moves onto its experts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from moe_core.analysis.flow import mass_on_experts
from moe_core.backends.base import Backend, GenerationParams, Generations
from moe_core.records import RoutingBatch
from moe_core.steering import SteeringPlan


@dataclass(frozen=True, kw_only=True)
class SteeredPrompt:
    """One prompt generated greedily without the plan (`plain`) and with it (`steered`)."""

    plain: Generations
    steered: Generations


def steer_prompt(backend: Backend, prompt: str, plan: SteeringPlan, max_new_tokens: int) -> SteeredPrompt:
    """Generate `prompt` without and with `plan` on `backend`, keeping each generation's routing."""
    params = GenerationParams(max_new_tokens=max_new_tokens)
    return SteeredPrompt(plain=backend.generate([prompt], params), steered=backend.generate([prompt], params, plan))


def mass_rows(
    plan: SteeringPlan, plain: RoutingBatch, steered: RoutingBatch, n_experts: int, labels: tuple[str, str]
) -> list[dict[str, Any]]:
    """Mean routing mass on the plan's experts in every MoE layer, without and with the plan (named
    `labels`): one row per layer and generation with layer, generation, mass, experts, in_band.

    A layer the plan lists is measured on its own experts; any other on every expert the plan
    names, so layers before the band show that nothing moved there and layers after it show
    what the steered layers passed on.
    """
    listed = {entry.layer: entry.experts for entry in plan.experts}
    every = sorted({expert for entry in plan.experts for expert in entry.experts})
    rows = []
    for layer in (int(found) for found in plain.layers):
        experts = listed.get(layer, tuple(every))
        for generation, batch in zip(labels, (plain, steered), strict=True):
            rows.append(
                {
                    "layer": layer,
                    "generation": generation,
                    "mass": mass_at(batch, layer, experts, n_experts),
                    "experts": ", ".join(map(str, experts)),
                    "in_band": "yes" if plan.band[0] <= layer <= plan.band[1] else "no",
                }
            )
    return rows


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
