"""The vLLM backend: a MoE checkpoint served by a vLLM engine (GPUs, or vLLM's CPU backend).

The model is described on the host as the hf backend describes it (describe.py), so both backends
give the store the same `ModelInfo`. Texts are tokenized on the host (encoding.py) and handed to
vLLM as token ids. Routing is captured in the workers by the plugin's router gates (capture.py,
worker.py): ids, weights, the soft distribution and, on request, logits, exactly what the hf
backend records. Steering loads the plan into the gates' buffers on every worker before the
requests run, and unloads it when a request without a plan follows: one engine serves both,
without reloading.

With `check_routed_experts` (a GPU with Model Runner V2), vLLM's own routed-experts ids come
back too and the capture is checked against them; vLLM needs prefix caching on for them, so each
request then carries a cache salt of its own and no prefix is reused (the capture must see every
token).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vllm import SamplingParams

from moe_core.backends.base import Backend, GenerationParams, Generations
from moe_core.backends.encoding import Encoded, count_tokens, encode, generated_tokens
from moe_core.backends.hf import load_tokenizer
from moe_core.backends.vllm.capture import RequestRouting, unpack
from moe_core.backends.vllm.describe import describe
from moe_core.backends.vllm.engine import DataParallelEngine, OneEngine, check_platform, start_engine
from moe_core.backends.vllm.options import VLLMOptions, visible_gpus
from moe_core.backends.vllm.registry import STEERABLE, steerable
from moe_core.backends.vllm.routes import SequenceRouting, id_agreement, routed_expert_ids, routing_batch
from moe_core.errors import ModelError, PolyrouteError
from moe_core.records import ModelInfo, RoutingBatch
from moe_core.steering.plan import SteeringPlan

# Which capture filled a run's routing (`VLLMBackend.capture_name`, recorded in each run's params):
# the plugin's router gates, and with check_routed_experts also checked against vLLM's own
# routed-experts ids (a GPU).
GATE_CAPTURE = "polyroute-router-gate"
CHECKED_CAPTURE = "polyroute-router-gate+vllm-routed-experts"


class VLLMBackend(Backend):
    """A vLLM engine whose router gates capture routing and, for the steerable families, steer."""

    name = "vllm"

    def __init__(self, model_dir: str | Path, options: VLLMOptions | None = None) -> None:
        self.options = options or VLLMOptions()
        path = Path(model_dir).expanduser().resolve()
        config, self._info = describe(path, model_id=self.options.model_id)
        steerable(self._info.arch)  # refuses, by name, the families the plugin does not build
        self._tokenizer = load_tokenizer(path, self.options.template)
        self._max_tokens = min(self.options.max_tokens, getattr(config, "max_position_embeddings", 1 << 30))
        self._engine = _start_engine(path, self.options)
        gates = self._every_rank("polyroute_steerable_layers")
        if not gates:
            raise PolyrouteError(
                f"vLLM built {self._info.arch} without Polyroute's router gates: the plugin is not loaded. "
                "Install Polyroute into vLLM's environment (pip install --no-deps -e .) so that vLLM finds its "
                f"'vllm.general_plugins' entry point (steerable: {', '.join(STEERABLE)})"
            )
        if tuple(gates) != self._info.moe_layers:
            raise ModelError(
                f"vLLM's {self._info.arch} has router gates in layers {gates}, transformers' in "
                f"{list(self._info.moe_layers)}: the two implementations disagree; use {{backend}} hf"
            )
        captured = self._every_rank("polyroute_capture_start", self._info.soft_rule)
        if tuple(captured) != self._info.moe_layers:
            raise ModelError(f"vLLM's {self._info.arch} captures routing in layers {captured}, not in every MoE layer")
        self.capture_name = CHECKED_CAPTURE if self.options.check_routed_experts else GATE_CAPTURE
        self.routed_experts_agreement: list[float] = []  # per call, with check_routed_experts
        self._plan: SteeringPlan | None = None

    def info(self) -> ModelInfo:
        return self._info

    def close(self) -> None:
        """Stop the engine's processes now (otherwise they stop when this process exits)."""
        self._engine.shutdown()

    @property
    def data_parallel_ranks(self) -> int:
        """Engine cores behind this backend (vLLM's data parallelism; 1 without it)."""
        return self._engine.ranks

    def _every_rank(self, method: str, *args: Any) -> Any:
        """Call a worker method on every engine core (each data-parallel rank) and return the one
        answer they all give (from each rank's first worker); ModelError when ranks disagree."""
        answers = [workers[0] for workers in self._engine.rpc(method, *args)]
        if len(answers) != self._engine.ranks:
            raise ModelError(f"{method} reached {len(answers)} of the {self._engine.ranks} data-parallel engines")
        if any(answer != answers[0] for answer in answers[1:]):
            raise ModelError(f"vLLM's data-parallel engines answered {method} differently: {answers}")
        return answers[0]

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return count_tokens(self._tokenizer, texts, self.options.template)

    # steering --------------------------------------------------------------------------------

    def _steer(self, plan: SteeringPlan | None) -> None:
        """Load `plan` (None: no steering) into every worker, unless it is already loaded."""
        if plan == self._plan:
            return
        info = self._info
        if plan is not None:
            plan.check_against(
                n_layers=info.n_layers, moe_layers=info.moe_layers, n_experts=info.n_experts, top_k=info.top_k
            )
        self._every_rank(
            "polyroute_steer", plan.to_json() if plan is not None else None, info.n_layers, info.n_experts, info.top_k
        )
        self._plan = plan

    # work ------------------------------------------------------------------------------------

    def _encode(self, texts: Sequence[str]) -> list[Encoded]:
        if not texts:
            raise PolyrouteError("nothing to run: give at least one text")
        return encode(self._tokenizer, texts, template=self.options.template, max_tokens=self._max_tokens)

    def _run(self, encoded: Sequence[Encoded], params: SamplingParams, *, save_logits: bool = False) -> list[Any]:
        """Run the requests; returns (vLLM's output, its captured routing) for each, in order."""
        prompts: list[Any] = [{"prompt_token_ids": enc.ids} for enc in encoded]
        if self.options.check_routed_experts:
            run = uuid.uuid4().hex
            prompts = [prompt | {"cache_salt": f"polyroute-{run}-{i}"} for i, prompt in enumerate(prompts)]
        if save_logits:
            self._every_rank("polyroute_capture_logits", True)
        try:
            outputs = self._engine.generate(prompts, params)
        finally:
            if save_logits:
                self._every_rank("polyroute_capture_logits", False)
        return list(zip(outputs, self._take([out.request_id for out in outputs]), strict=True))

    def _take(self, request_ids: list[str]) -> list[RequestRouting]:
        """The captured routing of finished requests, in order, gathered from the engine core
        (data-parallel rank) that ran each."""
        found: dict[str, RequestRouting] = {}
        for workers in self._engine.rpc("polyroute_capture_take_held", request_ids):
            held, packed = workers[0]
            found |= zip(held, unpack(packed), strict=True)
        missing = [rid for rid in request_ids if rid not in found]
        if missing:
            raise ModelError(
                f"no routing was captured for request {missing[0]} on any of the {self._engine.ranks} engine(s)"
            )
        return [found[rid] for rid in request_ids]

    def _checked_ids(self, output: Any, routing: RequestRouting) -> None:
        """With check_routed_experts: note how often vLLM's own ids agree with the capture's."""
        if self.options.check_routed_experts:
            routed = output.outputs[0].routed_experts
            if routed is None:
                raise ModelError("vLLM returned no routed experts: check_routed_experts needs a GPU (Model Runner V2)")
            theirs = routed_expert_ids(routed, self._info, routing.n_tokens)
            self.routed_experts_agreement.append(id_agreement(routing.expert_ids, theirs))

    def trace(
        self, texts: Sequence[str], *, save_logits: bool = False, plan: SteeringPlan | None = None
    ) -> RoutingBatch:
        # Not yet checked against the hf backend's steered traces (tests/test_vllm_engine.py): refused.
        self.refuse_plan(plan)
        self._steer(None)
        encoded = self._encode(texts)
        # One generated token, never fed back: the routing covers exactly the prompt's tokens.
        params = SamplingParams(max_tokens=1, temperature=0.0, detokenize=False)
        sequences = []
        for enc, (output, routing) in zip(encoded, self._run(encoded, params, save_logits=save_logits), strict=True):
            self._checked_ids(output, routing)
            sequences.append(
                SequenceRouting(
                    token_ids=enc.ids, pieces=enc.pieces, special=enc.special, n_generated=0, routing=routing
                )
            )
        return routing_batch(sequences, self._info)

    def generate(
        self, prompts: Sequence[str], params: GenerationParams, plan: SteeringPlan | None = None
    ) -> Generations:
        self._steer(plan)
        encoded = self._encode(prompts)
        sampling = SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature if params.do_sample else 0.0,
            top_p=params.top_p if params.do_sample else 1.0,
            seed=params.seed,
        )
        texts, sequences = [], []
        for enc, (output, routing) in zip(encoded, self._run(encoded, sampling), strict=True):
            self._checked_ids(output, routing)
            new_ids = list(output.outputs[0].token_ids)
            texts.append(self._tokenizer.decode(new_ids, skip_special_tokens=True))
            # The last generated token was produced but never read: it has no routing.
            fed = generated_tokens(self._tokenizer, new_ids[: max(len(new_ids) - 1, 0)])
            sequences.append(
                SequenceRouting(
                    token_ids=enc.ids + fed.ids,
                    pieces=enc.pieces + fed.pieces,
                    special=enc.special + fed.special,
                    n_generated=len(fed.ids),
                    routing=routing,
                )
            )
        return Generations(texts=texts, routing=routing_batch(sequences, self._info))


WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt")


def check_start(path: Path, options: VLLMOptions) -> None:
    """What is checked before vLLM starts: the weights are there, the engines fit the GPUs this
    node can see (where that is known), and this platform's vLLM can run them."""
    if not any(next(path.glob(pattern), None) for pattern in WEIGHT_FILES):
        raise ModelError(f"{path} has no weights ({', '.join(WEIGHT_FILES)}): pass {{model}} a folder with its weights")
    options.check_devices(visible_gpus())
    check_platform(options)


def _start_engine(path: Path, options: VLLMOptions) -> OneEngine | DataParallelEngine:
    """A vLLM engine on the checkpoint in `path`; ModelError in one line when vLLM cannot start one.

    Checked before vLLM starts: `check_start`. vLLM reports a failed start from its engine
    process as "Engine core initialization failed. See root cause above": the cause is in its log,
    so the message points there and names the folder.
    """
    check_start(path, options)
    try:
        return start_engine(path, options)
    except Exception as error:
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelError(
            f"vLLM could not start an engine on {path} ({cause}); vLLM's log above names the cause, "
            "or use {backend} hf"
        ) from error


def serve_headless(model_dir: str | Path, options: VLLMOptions) -> None:
    """Run this node's share of a data-parallel deployment's engine cores (`options.headless`) for the
    head node's `polyroute serve`, until interrupted; the model is checked as the head node checks it."""
    from moe_core.backends.vllm import engine

    if not options.headless:
        raise PolyrouteError("serve_headless runs a {headless} node: set headless (and its data-parallel options)")
    path = Path(model_dir).expanduser().resolve()
    _, info = describe(path, model_id=options.model_id)
    steerable(info.arch)
    check_start(path, options)
    engine.serve_headless(path, options)
