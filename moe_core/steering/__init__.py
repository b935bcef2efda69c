"""Steering and interventions on MoE routers (docs/methods.md, "Steering and interventions").

`SteeringPlan` (plan.py) says what to steer and is stored as JSON; `Steering` (hooks.py) applies
it to a model's routers in a `with` block; scoring.py re-runs each family's own routing rule on
the steered logits. Importing the package loads no torch (the app builds and shows plans without a
model): take `Steering` from `moe_core.steering.hooks`.
"""

from moe_core.steering.plan import (
    ABLATE,
    ADAPTIVE,
    HARD,
    METHODS,
    SOFT,
    LayerExperts,
    PlanError,
    SteeringPlan,
    layers_text,
)

__all__ = ["ABLATE", "ADAPTIVE", "HARD", "METHODS", "SOFT", "LayerExperts", "PlanError", "SteeringPlan", "layers_text"]
