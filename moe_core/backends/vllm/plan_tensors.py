"""A `SteeringPlan` as the dense arrays the steerable vLLM models keep as buffers.

vLLM runs the model in CUDA graphs, so steering cannot branch in Python per forward pass: every MoE
layer carries fixed-shape buffers (which experts, which coefficients, which tie-breaking eps) and a
mode code, and a plan is applied by overwriting them in place. This module builds those arrays
from a plan with numpy only (no torch, no vLLM): the worker copies them into its buffers
(worker.py), and tests check them without a GPU. An absent plan gives arrays that steer nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from moe_core.steering.plan import ABLATE, ADAPTIVE, HARD, SOFT, SteeringPlan

# Mode codes the steering buffers hold; 0 leaves every logit as the router computed it.
MODE_OFF = 0
MODE_CODES = {SOFT: 1, HARD: 2, ADAPTIVE: 3, ABLATE: 4}
# eps ~ N(0, 1e-6) (docs/methods.md), as the hf backend's steering hooks draw it: it only breaks ties.
HARD_EPS_STD = 1e-6


@dataclass(frozen=True, kw_only=True)
class LayerArrays:
    """The steering buffers of one MoE layer (E experts).

    mask:         [E] bool     the experts this layer steers (all False: the layer is untouched)
    coefficients: [E] float32  c_e of adaptive steering, 1 where the plan gives none
    eps:          [E] float32  hard steering's margin above the maximum: 1e-6 + |eps|, eps drawn per plan
    """

    mask: np.ndarray
    coefficients: np.ndarray
    eps: np.ndarray


@dataclass(frozen=True, kw_only=True)
class SteeringArrays:
    """A whole plan as buffers: one mode and strength for the model, arrays for every MoE layer."""

    mode: int
    strength: float
    layers: dict[int, LayerArrays]

    @property
    def steered_layers(self) -> list[int]:
        return [layer for layer, arrays in self.layers.items() if arrays.mask.any()]


def _idle(n_experts: int) -> LayerArrays:
    return LayerArrays(
        mask=np.zeros(n_experts, dtype=bool),
        coefficients=np.ones(n_experts, dtype=np.float32),
        eps=np.zeros(n_experts, dtype=np.float32),
    )


def plan_arrays(
    plan: SteeringPlan | None, *, n_layers: int, moe_layers: Sequence[int], n_experts: int, top_k: int
) -> SteeringArrays:
    """The buffers of every MoE layer for `plan` (None: steer nothing).

    The plan is checked against the model first (PlanError names a layer or expert it lacks).
    Hard steering's eps is drawn per expert, not per token as the hf backend draws it: a CUDA
    graph replays the same kernels every step, and eps only has to break ties, which a fixed
    per-expert draw does as well. The margin is at least one eps std (1e-6): a softmax depends on
    logit gaps, and a gap of a few float32 steps can vanish in it, tying the expert with the
    maximum it was raised past (the hf hooks, whose |eps| can be that small, sometimes lose it).
    """
    layers = {layer: _idle(n_experts) for layer in moe_layers}
    if plan is None:
        return SteeringArrays(mode=MODE_OFF, strength=0.0, layers=layers)
    plan.check_against(n_layers=n_layers, moe_layers=moe_layers, n_experts=n_experts, top_k=top_k)
    noise = np.random.default_rng(plan.seed)
    for entry in plan.steered():
        experts = np.asarray(entry.experts, dtype=np.int64)
        arrays = _idle(n_experts)
        arrays.mask[experts] = True
        if entry.coefficients is not None:
            arrays.coefficients[experts] = np.asarray(entry.coefficients, dtype=np.float32)
        draws = np.abs(noise.normal(0.0, HARD_EPS_STD, size=len(experts)))
        arrays.eps[experts] = (HARD_EPS_STD + draws).astype(np.float32)
        layers[entry.layer] = arrays
    return SteeringArrays(mode=MODE_CODES[plan.method], strength=float(plan.strength), layers=layers)
