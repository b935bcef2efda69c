"""The worker side of steering and capture: methods vLLM mixes into each worker (`worker_extension_cls`).

The backend calls them on every worker (`collective_rpc`: one worker per GPU under tensor
parallelism, on every engine core under vLLM's data parallelism, engine.py), so every worker
loads the same plan into its own copy of the steering buffers and files its own gates' routing.
Only strings, numbers and bytes cross the process boundary (vLLM's messages turn numpy arrays
into lists): the plan travels as its JSON and each worker builds the arrays itself
(plan_tensors.py); the routing comes back packed (capture.py).
No vLLM import: vLLM imports this module itself.

Capture: `polyroute_capture_start` wraps this worker's model runner's `execute_model` (on the
instance; no vLLM file changes) so that after every forward pass the gates' buffers are filed
under the requests of that batch, at their token positions (capture.py). The layout is read
from the runner's persistent batch: the request order of the batch and the tokens each had
computed before it, with the scheduler's count of tokens per request.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from moe_core.backends.vllm.capture import RoutingLedger, StepLayout, pack
from moe_core.backends.vllm.plan_tensors import plan_arrays
from moe_core.backends.vllm.steer import apply_arrays, find_recorders, find_states
from moe_core.errors import ModelError
from moe_core.steering.plan import SteeringPlan

# vLLM resolves `worker_extension_cls` as a dotted name ("package.module.Class"), not "module:Class".
EXTENSION = "moe_core.backends.vllm.worker.SteeringWorkerExtension"
# vLLM's engine appends "-" and 8 random characters to the id a request was given (InputProcessor).
_INTERNAL_SUFFIX = 9


def step_layout(runner: Any, scheduler_output: Any) -> StepLayout:
    """The token layout of the forward pass `runner` just ran for `scheduler_output`."""
    batch = runner.input_batch
    req_ids = list(batch.req_ids[: batch.num_reqs])
    return StepLayout(
        req_ids=req_ids,
        counts=[int(scheduler_output.num_scheduled_tokens[req_id]) for req_id in req_ids],
        starts=[int(start) for start in batch.num_computed_tokens_cpu[: batch.num_reqs]],
    )


def internal_ids(request_ids: list[str], held: list[str]) -> list[str]:
    """The engine's ids, among the `held` ones, of the requests the caller knows as `request_ids`."""
    by_external = {
        candidate[:-_INTERNAL_SUFFIX]: candidate
        for candidate in held
        if len(candidate) > _INTERNAL_SUFFIX and candidate[-_INTERNAL_SUFFIX] == "-"
    }
    exact = set(held)
    return [rid if rid in exact else by_external.get(rid, rid) for rid in request_ids]


class SteeringWorkerExtension:
    """Mixed into vLLM's worker class; `self` is the worker, which owns the model and its runner."""

    _polyroute_ledger: RoutingLedger | None = None

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

    def polyroute_capture_start(self, soft_rule: str) -> list[int]:
        """File every forward pass's routing by request from now on (once); returns the captured layers."""
        recorders = find_recorders(self._polyroute_model())
        if recorders and self._polyroute_ledger is None:
            ledger = self._polyroute_ledger = RoutingLedger(soft_rule=soft_rule)
            runner = self.model_runner  # type: ignore[attr-defined]  # the worker's
            run_step = runner.execute_model

            def execute_model(scheduler_output: Any, *args: Any, **kwargs: Any) -> Any:
                output = run_step(scheduler_output, *args, **kwargs)
                ledger.add_step(recorders, step_layout(runner, scheduler_output))
                return output

            runner.execute_model = execute_model
        return [recorder.layer for recorder in recorders]

    def polyroute_capture_logits(self, save: bool) -> None:
        """Keep each token's router logits too (`--save-logits`) until told otherwise."""
        self._polyroute_capture().save_logits = save

    def polyroute_capture_take_held(self, request_ids: list[str]) -> tuple[list[str], bytes]:
        """The routing of those finished requests (by the ids `generate` gave them) that ran on this
        worker's engine core: their ids, and their routing packed (capture.unpack), both in the order
        of `request_ids`. Under data parallelism each engine core holds only its own requests'.
        Everything held is forgotten here after (requests the caller gave up on leave nothing behind)."""
        ledger = self._polyroute_capture()
        held = set(ledger.pending())
        taken = [
            (rid, internal)
            for rid, internal in zip(request_ids, internal_ids(request_ids, list(held)), strict=True)
            if internal in held
        ]
        routing = [ledger.take(internal) for _, internal in taken]
        ledger.clear()
        return [rid for rid, _ in taken], pack(routing)

    def _polyroute_capture(self) -> RoutingLedger:
        if self._polyroute_ledger is None:
            raise ModelError("routing capture was not started on this worker: call polyroute_capture_start first")
        return self._polyroute_ledger
