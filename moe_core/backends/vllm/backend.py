"""The vLLM backend: a MoE checkpoint served by a vLLM engine on one or more GPUs.

The model is described on the host as the hf backend describes it (describe.py), so both backends
give the store the same `ModelInfo`. Texts are tokenized on the host (encoding.py) and handed to
vLLM as token ids; routing comes back through vLLM's own routed-experts output (ids only,
routes.py). Steering loads
the plan into the steerable models' buffers on every worker (worker.py) before the requests run,
and unloads it when a request without a plan follows: one engine serves both, without reloading.
Steered prompts carry their plan's prefix-cache salt, so no request reuses keys, values or
routing computed under another plan (vLLM's routed-experts output requires prefix caching).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vllm import LLM, SamplingParams

from moe_core.backends.base import Backend, GenerationParams, Generations
from moe_core.backends.encoding import Encoded, count_tokens, encode, generated_tokens
from moe_core.backends.hf import load_tokenizer
from moe_core.backends.vllm.describe import describe
from moe_core.backends.vllm.options import VLLMOptions
from moe_core.backends.vllm.plan_tensors import cache_salt
from moe_core.backends.vllm.registry import STEERABLE, steerable
from moe_core.backends.vllm.routes import SequenceRouting, routing_batch
from moe_core.backends.vllm.worker import EXTENSION
from moe_core.errors import ModelError, PolyrouteError
from moe_core.records import ModelInfo, RoutingBatch
from moe_core.steering.plan import SteeringPlan


class VLLMBackend(Backend):
    """A vLLM engine with routed-experts capture and, for the steerable families, steering."""

    name = "vllm"

    def __init__(self, model_dir: str | Path, options: VLLMOptions | None = None) -> None:
        self.options = options or VLLMOptions()
        path = Path(model_dir).expanduser().resolve()
        config, self._info = describe(path, model_id=self.options.model_id)
        self._tokenizer = load_tokenizer(path, self.options.template)
        self._max_tokens = min(self.options.max_tokens, getattr(config, "max_position_embeddings", 1 << 30))
        self._llm = LLM(
            model=str(path),
            enable_return_routed_experts=True,
            enable_prefix_caching=True,  # vLLM's routed-experts output refuses to run without it
            worker_extension_cls=EXTENSION,
            **self.options.engine_args(),
        )
        self._steerable_layers: list[int] = self._llm.collective_rpc("polyroute_steerable_layers")[0]
        if self._steerable_layers and tuple(self._steerable_layers) != self._info.moe_layers:
            raise ModelError(
                f"vLLM's {self._info.arch} has router gates in layers {self._steerable_layers}, transformers' in "
                f"{list(self._info.moe_layers)}: the two implementations disagree; use --backend hf"
            )
        self._plan: SteeringPlan | None = None

    def info(self) -> ModelInfo:
        return self._info

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
            steerable(info.arch)  # refuses the families the plugin does not cover, by name
            if not self._steerable_layers:
                raise PolyrouteError(
                    f"vLLM built {info.arch} without Polyroute's steering buffers: the plugin is not loaded. "
                    "Install Polyroute into vLLM's environment (pip install --no-deps -e .) so that vLLM finds its "
                    f"'vllm.general_plugins' entry point (steerable: {', '.join(STEERABLE)})"
                )
            plan.check_against(
                n_layers=info.n_layers, moe_layers=info.moe_layers, n_experts=info.n_experts, top_k=info.top_k
            )
        if self._steerable_layers:
            self._llm.collective_rpc(
                "polyroute_steer",
                args=(plan.to_json() if plan is not None else None, info.n_layers, info.n_experts, info.top_k),
            )
        self._plan = plan

    # work ------------------------------------------------------------------------------------

    def _run(self, encoded: Sequence[Encoded], params: SamplingParams) -> list[Any]:
        salt = cache_salt(self._plan)
        prompts: list[Any] = [
            {"prompt_token_ids": enc.ids} | ({"cache_salt": salt} if salt is not None else {}) for enc in encoded
        ]
        outputs: list[Any] = self._llm.generate(prompts, params, use_tqdm=False)
        missing = [i for i, out in enumerate(outputs) if out.outputs[0].routed_experts is None]
        if missing:
            raise ModelError(f"vLLM returned no routed experts for requests {missing}: is this an MoE model?")
        return outputs

    def trace(self, texts: Sequence[str], *, save_logits: bool = False) -> RoutingBatch:
        if save_logits:
            raise PolyrouteError("the vLLM backend returns expert ids only; to save router logits use --backend hf")
        self._steer(None)
        encoded = encode(self._tokenizer, texts, template=self.options.template, max_tokens=self._max_tokens)
        # One generated token, never fed back: the routing covers exactly the prompt's tokens.
        outputs = self._run(encoded, SamplingParams(max_tokens=1, temperature=0.0, detokenize=False))
        sequences = [
            SequenceRouting(
                token_ids=enc.ids,
                pieces=enc.pieces,
                special=enc.special,
                n_generated=0,
                routed=out.outputs[0].routed_experts,
            )
            for enc, out in zip(encoded, outputs, strict=True)
        ]
        return routing_batch(sequences, self._info)

    def generate(
        self, prompts: Sequence[str], params: GenerationParams, plan: SteeringPlan | None = None
    ) -> Generations:
        self._steer(plan)
        encoded = encode(self._tokenizer, prompts, template=self.options.template, max_tokens=self._max_tokens)
        sampling = SamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature if params.do_sample else 0.0,
            top_p=params.top_p if params.do_sample else 1.0,
            seed=params.seed,
        )
        texts, sequences = [], []
        for enc, out in zip(encoded, self._run(encoded, sampling), strict=True):
            completion = out.outputs[0]
            new_ids = list(completion.token_ids)
            texts.append(self._tokenizer.decode(new_ids, skip_special_tokens=True))
            # The last generated token was produced but never read: it has no routing.
            fed = generated_tokens(self._tokenizer, new_ids[: max(len(new_ids) - 1, 0)])
            sequences.append(
                SequenceRouting(
                    token_ids=enc.ids + fed.ids,
                    pieces=enc.pieces + fed.pieces,
                    special=enc.special + fed.special,
                    n_generated=len(fed.ids),
                    routed=completion.routed_experts,
                )
            )
        return Generations(texts=texts, routing=routing_batch(sequences, self._info))
