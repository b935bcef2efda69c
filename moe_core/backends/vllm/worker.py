"""The worker side of steering: methods vLLM mixes into each GPU worker (`worker_extension_cls`).

The backend calls them with `LLM.collective_rpc(name, args=...)`, so every worker (one per GPU
under tensor parallelism) loads the same plan into its own copy of the steering buffers. Only
strings and numbers cross the process boundary: the plan travels as its JSON and each worker
builds the arrays itself (plan_tensors.py). No vLLM import: vLLM imports this module itself.
"""

from __future__ import annotations

from torch import nn

from moe_core.backends.vllm.plan_tensors import plan_arrays
from moe_core.backends.vllm.steer import apply_arrays, find_states
from moe_core.steering.plan import SteeringPlan

# vLLM resolves `worker_extension_cls` as a dotted name ("package.module.Class"), not "module:Class".
EXTENSION = "moe_core.backends.vllm.worker.SteeringWorkerExtension"


class SteeringWorkerExtension:
    """Mixed into vLLM's worker class; `self` is the worker, which owns the model."""

    def _polyroute_model(self) -> nn.Module:
        model: nn.Module = self.get_model()  # type: ignore[attr-defined]  # a method of the worker it joins
        return model

    def polyroute_steerable_layers(self) -> list[int]:
        """Decoder layers whose router gate has steering buffers (empty: the plugin is not loaded)."""
        return sorted(find_states(self._polyroute_model()))

    def polyroute_steer(self, plan_json: str | None, n_layers: int, n_experts: int, top_k: int) -> list[int]:
        """Load the plan (None: stop steering) into this worker's buffers; returns the steered layers."""
        model = self._polyroute_model()
        plan = SteeringPlan.from_json(plan_json) if plan_json is not None else None
        arrays = plan_arrays(
            plan, n_layers=n_layers, moe_layers=sorted(find_states(model)), n_experts=n_experts, top_k=top_k
        )
        apply_arrays(model, arrays)
        return arrays.steered_layers
