"""The Backend contract: every backend describes its model, traces texts and generates.

Backends return numpy records (`RoutingBatch`); they never write the store. The caller decides
batching: `count_tokens` lets it group texts of similar length before calling `trace`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass

from moe_core.errors import PolyrouteError
from moe_core.records import ModelInfo, RoutingBatch
from moe_core.steering.plan import SteeringPlan


@dataclass(frozen=True, kw_only=True)
class GenerationParams:
    """Decoding settings, recorded with every generation run."""

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class Generations:
    """Generated continuations and the routing of every token the model processed.

    `texts[i]` is the continuation of prompt i (up to and including its end-of-text token); the
    routing covers each prompt and its continuation except the final token, which the model
    produced but never read.
    """

    texts: list[str]
    routing: RoutingBatch


class Backend(ABC):
    """Runs one MoE model and reports what it routed."""

    name: str
    # Which routing capture fills what this backend returns, recorded in each run's params
    # ("capture"): "hf-hooks" (moe_core.capture), "polyroute-router-gate" (the vLLM plugin's gates,
    # "+vllm-routed-experts" when checked against vLLM's own ids), "synthetic" (planted).
    capture_name: str = "unknown"
    # Whether `trace` takes a steering plan (a steered trace run); the others refuse one.
    steers_traces: bool = False

    @abstractmethod
    def info(self) -> ModelInfo:
        """What the model is: id, architecture, layers, MoE layers, experts, top-k, scoring."""

    @property
    @abstractmethod
    def max_tokens(self) -> int:
        """Texts longer than this many tokens are truncated."""

    @abstractmethod
    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token count of each text before truncation (for batching by length and warnings)."""

    @abstractmethod
    def trace(
        self, texts: Sequence[str], *, save_logits: bool = False, plan: SteeringPlan | None = None
    ) -> RoutingBatch:
        """Run the model over `texts` (one batch), with the routers steered by `plan` when given
        (backends with `steers_traces`; the others refuse it), and return the routing of every
        real token."""

    def trace_batches(
        self, batches: Iterable[Sequence[str]], *, save_logits: bool = False, plan: SteeringPlan | None = None
    ) -> Generator[RoutingBatch, None, None]:
        """Trace several batches, yielding each one's routing in order. A backend that can keep the
        model busy while earlier results travel (the remote one) overrides this."""
        for texts in batches:
            yield self.trace(texts, save_logits=save_logits, plan=plan)

    def refuse_plan(self, plan: SteeringPlan | None) -> None:
        """What a backend without `steers_traces` does with a plan for a trace: refuse it."""
        if plan is not None:
            raise PolyrouteError(
                f"the {self.name} backend cannot steer a trace: trace a steered run on a local model folder "
                "(the hf backend)"
            )

    @abstractmethod
    def generate(
        self, prompts: Sequence[str], params: GenerationParams, plan: SteeringPlan | None = None
    ) -> Generations:
        """Continue each prompt (with the routers steered by `plan`, when given) and return the
        continuations with the routing the model really used."""
