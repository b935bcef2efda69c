"""The transformers backend: a local MoE checkpoint, in process, on CPU or CUDA.

Loading checks what users get wrong first (a missing folder, a dense model, an unknown
architecture) and says what to do. Tracing pads on the right, so every real token sees exactly
the context it would see alone; generation pads on the left, as decoder-only generation needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from moe_core.adapters import find_routers, resolve_adapter
from moe_core.backends.base import Backend, GenerationParams, Generations
from moe_core.backends.encoding import TEMPLATES, Encoded, count_tokens, encode, generated_tokens
from moe_core.backends.options import HFOptions
from moe_core.capture import CapturedRouting, RoutingCapture
from moe_core.demo import default_model_id
from moe_core.errors import ModelError, PolyrouteError
from moe_core.model_identity import config_hash
from moe_core.records import ModelInfo, RoutingBatch
from moe_core.steering import SteeringPlan
from moe_core.steering.hooks import Steering

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_config(model_dir: Path) -> Any:
    if model_dir.is_file():
        raise ModelError(
            f"{model_dir} is a file, not a model folder: pass {{model}} the folder with config.json and weights"
        )
    if not model_dir.is_dir():
        raise ModelError(
            f"model folder {model_dir} does not exist: pass {{model}} a folder with config.json and weights"
        )
    if not (model_dir / "config.json").is_file():
        raise ModelError(f"{model_dir} has no config.json: pass {{model}} the folder of a transformers checkpoint")
    try:
        return AutoConfig.from_pretrained(model_dir)
    except (ValueError, KeyError, OSError) as error:
        raise ModelError(f"cannot read {model_dir / 'config.json'}: {error}") from error


class HFBackend(Backend):
    """A transformers MoE model with routing capture."""

    name = "hf"
    capture_name = "hf-hooks"
    steers_traces = True

    def __init__(self, model_dir: str | Path, options: HFOptions | None = None) -> None:
        self.options = options or HFOptions()
        if self.options.max_tokens < 1:
            raise PolyrouteError(f"max_tokens must be at least 1, not {self.options.max_tokens}")
        if self.options.template not in TEMPLATES:
            raise PolyrouteError(f"unknown template {self.options.template!r}: use one of {', '.join(TEMPLATES)}")
        path = Path(model_dir).expanduser().resolve()
        config = load_config(path)
        self._adapter = resolve_adapter(config)
        n_experts, top_k = self._adapter.n_experts(config), self._adapter.top_k(config)
        self._tokenizer = load_tokenizer(path, self.options.template)
        self._model = _load_model(path, self.options)
        self._sites = find_routers(self._model)
        self._max_tokens = min(self.options.max_tokens, getattr(config, "max_position_embeddings", 1 << 30))
        self._info = ModelInfo(
            model_id=self.options.model_id or default_model_id(path),
            arch=config.architectures[0],
            family=self._adapter.family,
            source=str(path),
            n_layers=int(config.num_hidden_layers),
            moe_layers=tuple(site.layer for site in self._sites),
            n_experts=n_experts,
            top_k=top_k,
            n_shared_experts=self._adapter.shared_experts(config),
            scoring=self._adapter.scoring(config),
            soft_rule=self._adapter.soft_rule,
            weight_bound=self._adapter.weight_bound(config),
            config_hash=config_hash(path),
        )

    @property
    def model(self) -> PreTrainedModel:
        return self._model

    def info(self) -> ModelInfo:
        return self._info

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def capture(self, *, save_logits: bool = False) -> RoutingCapture:
        info = self._info
        return RoutingCapture(
            self._model,
            self._sites,
            n_experts=info.n_experts,
            top_k=info.top_k,
            soft_rule=info.soft_rule,
            save_logits=save_logits,
        )

    # encoding --------------------------------------------------------------------------------

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return count_tokens(self._tokenizer, texts, self.options.template)

    def _encode(self, texts: Sequence[str]) -> list[Encoded]:
        return encode(self._tokenizer, texts, template=self.options.template, max_tokens=self._max_tokens)

    def _pad(self, encoded: Sequence[Encoded], *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(e.ids) for e in encoded)
        pad_id = self._tokenizer.pad_token_id
        pad_id = pad_id if pad_id is not None else 0
        ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, enc in enumerate(encoded):
            span = slice(width - len(enc.ids), width) if left else slice(0, len(enc.ids))
            ids[row, span] = torch.tensor(enc.ids)
            mask[row, span] = 1
        device = self.options.device
        return ids.to(device), mask.to(device)

    # work ------------------------------------------------------------------------------------

    def trace(
        self, texts: Sequence[str], *, save_logits: bool = False, plan: SteeringPlan | None = None
    ) -> RoutingBatch:
        encoded = self._encode(texts)
        input_ids, mask = self._pad(encoded, left=False)
        # As in generate: the steering hooks run ahead of the capture's, which records the steered routing.
        steering = Steering(self._model, plan) if plan is not None else nullcontext()
        with torch.inference_mode(), steering, self.capture(save_logits=save_logits) as capture:
            self._model(input_ids=input_ids, attention_mask=mask, use_cache=False)
        return self._batch(capture.collect(), encoded, [0] * len(encoded))

    def generate(
        self, prompts: Sequence[str], params: GenerationParams, plan: SteeringPlan | None = None
    ) -> Generations:
        encoded = self._encode(prompts)
        input_ids, mask = self._pad(encoded, left=True)
        eos = self._tokenizer.eos_token_id
        torch.manual_seed(params.seed)
        # The plan is checked against the model before anything runs; steering hooks run ahead of
        # the capture's, so the routing returned is the steered one.
        steering = Steering(self._model, plan) if plan is not None else nullcontext()
        with torch.inference_mode(), steering, self.capture() as capture:
            output = self._model.generate(  # type: ignore[operator]  # causal-LM classes mix GenerationMixin in
                input_ids=input_ids,
                attention_mask=mask,
                max_new_tokens=params.max_new_tokens,
                do_sample=params.do_sample,
                temperature=params.temperature if params.do_sample else None,
                top_p=params.top_p if params.do_sample else None,
                pad_token_id=self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else eos,
            )
        new_tokens = output[:, input_ids.shape[1] :].cpu().tolist()
        total_new = len(new_tokens[0])
        texts, fed = [], []
        for row, tokens in enumerate(new_tokens):
            length = tokens.index(eos) + 1 if eos in tokens else len(tokens)
            texts.append(self._tokenizer.decode(tokens[:length], skip_special_tokens=True))
            # The last token of the whole run was produced but never fed back through the model.
            n_fed = min(length, total_new - 1)
            encoded[row] = encoded[row] + generated_tokens(self._tokenizer, tokens[:n_fed])
            fed.append(n_fed)
        keep = [len(enc.ids) for enc in encoded]
        routing = self._batch(capture.collect(keep=keep), encoded, fed)
        return Generations(texts=texts, routing=routing)

    def _batch(self, routed: CapturedRouting, encoded: Sequence[Encoded], n_generated: Sequence[int]) -> RoutingBatch:
        generated = np.concatenate(
            [np.arange(len(enc.ids)) >= len(enc.ids) - n for enc, n in zip(encoded, n_generated, strict=True)]
        )
        return RoutingBatch(
            layers=np.asarray(self._info.moe_layers, dtype=np.int16),
            seq_lengths=routed.row_lengths,
            token_ids=np.concatenate([np.asarray(enc.ids, dtype=np.int64) for enc in encoded]),
            pieces=[piece for enc in encoded for piece in enc.pieces],
            special=np.concatenate([np.asarray(enc.special, dtype=bool) for enc in encoded]),
            generated=generated,
            expert_ids=routed.expert_ids,
            expert_weights=routed.expert_weights,
            router_probs=routed.router_probs,
            router_logits=routed.router_logits,
        )


def load_tokenizer(path: Path, template: str) -> Any:
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (ValueError, OSError) as error:
        raise ModelError(
            f"cannot load the tokenizer in {path}: {error}; copy tokenizer files next to config.json"
        ) from error
    if not tokenizer.is_fast:
        raise ModelError(f"the tokenizer in {path} is not a fast tokenizer; save it with tokenizer.json")
    if template == "chat" and not tokenizer.chat_template:
        raise PolyrouteError(f"the tokenizer in {path} has no chat template: use {{template}} plain")
    return tokenizer


def _load_model(path: Path, options: HFOptions) -> PreTrainedModel:
    if options.dtype != "auto" and options.dtype not in DTYPES:
        raise PolyrouteError(f"unknown dtype {options.dtype!r}: use auto, {', '.join(DTYPES)}")
    try:
        device = torch.device(options.device)
    except RuntimeError:
        raise PolyrouteError(f"unknown device {options.device!r}: use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PolyrouteError(f"device {options.device} asked for, but no CUDA device is visible: use {{device}} cpu")
    on_cpu = options.device == "cpu"
    dtype: Any = DTYPES.get(options.dtype, torch.float32 if on_cpu else "auto")
    try:
        model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, SafetensorError) as error:
        raise ModelError(
            f"cannot load the weights in {path} ({error}): check that the checkpoint is complete, or copy it again"
        ) from error
    # transformers wraps `to` in a decorator that mypy reads as taking the model itself.
    return model.to(device).eval()  # type: ignore[arg-type]
