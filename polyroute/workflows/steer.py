"""Steering one prompt, as `polyroute steer`, `polyroute demo --steer`, the Steering page and
`polyroute.steer` all show it: the prompt generated without and with a plan, the text of a
generation (an empty one said in words), the routing mass a plan moves onto its experts, and the
demo's prompt and plan.

The demo (`DEMO_STEERING`) is the winner of `scripts/find_steering_demo.py`: on the demo model,
a short prompt whose continuation the push of one language's experts turns into that language's
script. Rerun the script after retraining the demo model and copy its winner here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from moe_core.analysis.flow import mass_on_experts
from moe_core.backends.base import Backend, GenerationParams, Generations
from moe_core.records import RoutingBatch
from moe_core.steering import SteeringPlan

if TYPE_CHECKING:  # for the type of demo_plan's store only
    from store import Store


@dataclass(frozen=True, kw_only=True)
class DemoSteering:
    """A prompt and the language-experts plan (`polyroute.plans.language_experts`) that change its text."""

    prompt: str
    lang: str  # whose experts are pushed
    ref: str  # the language they are compared with
    tau: float
    band: tuple[int, int]  # decoder layers, inclusive
    strength: float
    max_new_tokens: int


# scripts/find_steering_demo.py's winner: a placeholder every language's strings share; the demo model
# continues it in Azerbaijani-like Latin text, and with Russian's experts pushed in layers 1-3, in Cyrillic.
DEMO_STEERING = DemoSteering(
    prompt="%(email)s",
    lang="rus_Cyrl",
    ref="eng_Latn",
    tau=0.2,
    band=(1, 3),
    strength=3.0,
    max_new_tokens=16,
)


def demo_plan(store: Store, run_id: int, demo: DemoSteering = DEMO_STEERING) -> SteeringPlan:
    """The demo's plan, from the demo run of `store`."""
    from polyroute import plans

    return plans.language_experts(
        store, run_id, demo.lang, ref=demo.ref, tau=demo.tau, layers=demo.band, strength=demo.strength
    )


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
    `labels`): one row per layer and generation with layer, generation, mass, change (with the plan
    minus without, on both rows of the layer), experts, in_band.

    A layer the plan lists is measured on its own experts; any other on every expert the plan
    names, so layers before the band show that nothing moved there and layers after it show
    what the steered layers passed on.
    """
    listed = {entry.layer: entry.experts for entry in plan.experts}
    every = sorted({expert for entry in plan.experts for expert in entry.experts})
    rows = []
    for layer in (int(found) for found in plain.layers):
        experts = listed.get(layer, tuple(every))
        before, after = (mass_at(batch, layer, experts, n_experts) for batch in (plain, steered))
        for generation, mass in zip(labels, (before, after), strict=True):
            rows.append(
                {
                    "layer": layer,
                    "generation": generation,
                    "mass": mass,
                    "change": after - before,
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
