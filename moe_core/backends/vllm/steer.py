"""Steering inside a vLLM model: buffers on every router gate and a hook that re-scores its logits.

`install_steering` gives each MoE layer's gate (the linear layer whose output is the router
logits) a `SteeringState`: fixed-shape buffers and a forward hook that replaces the plan's experts'
logits by docs/methods.md's z' before vLLM's own softmax/sigmoid, top-k and renormalisation run. The
hook has no Python branch on the plan, so a CUDA graph captured once serves every plan; a plan is
applied by overwriting the buffers in place (`apply_arrays`, on the workers). With mode 0 or an
empty mask the hook returns the router's logits bit for bit. The same hook hands the logits it
returns to the gate's routing capture (capture.py), when the model was built with one.

For routers whose choice adds `e_score_correction_bias` (DeepSeek-V3), raising a logit cannot by
itself force or forbid an expert: hard and ablate also shift that layer's bias (`steered_bias`),
so the experts chosen are those the hf backend's re-scoring chooses. Torch only, no vLLM import:
tests run it on the CPU.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from moe_core.backends.vllm.capture import GateRecorder
from moe_core.backends.vllm.plan_tensors import MODE_CODES, SteeringArrays
from moe_core.errors import ModelError
from moe_core.steering.plan import ABLATE, ADAPTIVE, HARD, SOFT

_LAYER_INDEX = re.compile(r"(?:^|\.)layers\.(\d+)\.")
# A finite floor for an ablated expert's correction bias: fused group-top-k kernels add and compare
# these scores, and -inf there would risk inf - inf; sigmoid scores and biases are far above it.
_BIAS_FLOOR = -1e9


def steer_logits(
    logits: torch.Tensor,
    *,
    mode: torch.Tensor,
    strength: torch.Tensor,
    mask: torch.Tensor,
    coefficients: torch.Tensor,
    eps: torch.Tensor,
) -> torch.Tensor:
    """z' (docs/methods.md) for the masked experts of router logits [T, E]; other logits unchanged.

    Computed in float32 and returned in the logits' dtype. Hard steering raises an expert to the
    token's maximum plus its margin `eps` (plan_tensors.py), or one relative step of the logits'
    dtype where that is larger, so that after rounding to bfloat16 it still lies strictly above
    the maximum it was raised past.
    """
    z = logits.float()
    spread = z.std(dim=-1, correction=0, keepdim=True)  # population std, as the hf hooks measure it
    top = z.amax(dim=-1, keepdim=True)
    step = torch.finfo(logits.dtype).eps * top.abs().clamp_min(torch.finfo(torch.float32).tiny)
    candidates = (
        (MODE_CODES[SOFT], z + strength * spread),
        (MODE_CODES[HARD], top + torch.maximum(eps, step)),
        (MODE_CODES[ADAPTIVE], z + strength * coefficients * z.abs()),
        (MODE_CODES[ABLATE], torch.full_like(z, float("-inf"))),
    )
    new = z
    for code, value in candidates:
        new = torch.where(mode == code, value, new)
    return torch.where(mask, new, z).to(logits.dtype)


def steered_bias(base: torch.Tensor, *, mode: int, mask: torch.Tensor) -> torch.Tensor:
    """The correction bias [E] that makes a biased-sigmoid router honour hard and ablate steering.

    A choice score is sigmoid(z) + b, in [min b, 1 + max b]; lifting forced experts by more than
    that range puts them above every other expert (in their groups and in the top-k) and keeps
    their order among themselves, as the hf re-scoring does. Ablated experts sink below all.
    """
    shifted = base.float().clone()
    if mode == MODE_CODES[HARD]:
        lift = 2.0 + float(base.max() - base.min())
        shifted = torch.where(mask, shifted + lift, shifted)
    elif mode == MODE_CODES[ABLATE]:
        shifted = shifted.masked_fill(mask, _BIAS_FLOOR)
    return shifted.to(base.dtype)


class SteeringState(nn.Module):
    """The steering buffers of one router gate and the hook that applies them."""

    mode: torch.Tensor
    strength: torch.Tensor
    mask: torch.Tensor
    coefficients: torch.Tensor
    eps: torch.Tensor

    def __init__(
        self, layer: int, n_experts: int, bias: torch.Tensor | None, recorder: GateRecorder | None = None
    ) -> None:
        super().__init__()
        self.layer = layer
        # Records the routing of the logits this gate hands on (capture.py); None: no capture.
        self.recorder = recorder
        # Non-persistent: they are not weights, and checkpoints never carry them.
        self.register_buffer("mode", torch.zeros((), dtype=torch.int64), persistent=False)
        self.register_buffer("strength", torch.zeros((), dtype=torch.float32), persistent=False)
        self.register_buffer("mask", torch.zeros(n_experts, dtype=torch.bool), persistent=False)
        self.register_buffer("coefficients", torch.ones(n_experts, dtype=torch.float32), persistent=False)
        self.register_buffer("eps", torch.zeros(n_experts, dtype=torch.float32), persistent=False)
        # In a tuple, not as an attribute: nn.Module would adopt the Parameter, and vLLM's loader
        # would then miss a checkpoint weight for it.
        self._bias = (bias,) if bias is not None else ()
        self._bias_base: torch.Tensor | None = None  # the checkpoint's bias, kept at the first plan

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return steer_logits(
            logits, mode=self.mode, strength=self.strength, mask=self.mask, coefficients=self.coefficients, eps=self.eps
        )

    def hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        # vLLM's GateLinear returns (logits, bias) or the logits alone, depending on return_bias.
        logits = self(output[0] if isinstance(output, tuple) else output)
        if self.recorder is not None:  # fixed when the model is built: not a branch on the data
            self.recorder(logits)
        return (logits, *output[1:]) if isinstance(output, tuple) else logits

    def load(self, mode: int, strength: float, mask: Any, coefficients: Any, eps: Any) -> None:
        """Overwrite the buffers in place (the CUDA graphs keep pointing at them)."""
        self.mode.fill_(mode)
        self.strength.fill_(strength)
        self.mask.copy_(torch.as_tensor(mask))
        self.coefficients.copy_(torch.as_tensor(coefficients))
        self.eps.copy_(torch.as_tensor(eps))
        for bias in self._bias:
            if self._bias_base is None:
                # Weights are loaded after the model is built, so the checkpoint's bias is read here.
                self._bias_base = bias.detach().clone()
            bias.data.copy_(steered_bias(self._bias_base, mode=mode, mask=self.mask.to(bias.device)))


def install_steering(
    model: nn.Module, gate_suffix: str, recorder: Callable[[int, int, torch.Tensor | None], GateRecorder] | None = None
) -> dict[int, SteeringState]:
    """Give every gate of `model` named `...layers.<i>.<gate_suffix>` a SteeringState and its hook.

    `recorder(layer, n_experts, bias)`, when given, builds each gate's routing capture, which
    records the logits after steering. Returns the states by decoder-layer index. Raises
    ModelError when no gate matches (the vLLM model class no longer names its router as this
    version of Polyroute expects).
    """
    states: dict[int, SteeringState] = {}
    for name, module in list(model.named_modules()):
        if not name.endswith(f".{gate_suffix}"):
            continue
        match = _LAYER_INDEX.findall(name)
        weight = getattr(module, "weight", None)
        if not match or weight is None:
            continue
        layer = int(match[-1])
        bias = getattr(module, "e_score_correction_bias", None)
        # Built under vLLM's default-device context, so the buffers land on the weights' device.
        n_experts = int(weight.shape[0])
        state = SteeringState(layer, n_experts, bias, recorder(layer, n_experts, bias) if recorder else None)
        module.add_module("polyroute_steering", state)
        module.register_forward_hook(state.hook)
        states[layer] = state
    if not states:
        raise ModelError(
            f"{type(model).__name__} has no router gate named '*.layers.<i>.{gate_suffix}': this vLLM version "
            "names its MoE routers differently from the one Polyroute's plugin was written for"
        )
    return dict(sorted(states.items()))


def find_states(model: nn.Module) -> dict[int, SteeringState]:
    """The SteeringStates `install_steering` gave `model`, by decoder-layer index."""
    return {m.layer: m for m in model.modules() if isinstance(m, SteeringState)}


def find_recorders(model: nn.Module) -> list[GateRecorder]:
    """The routing captures of `model`'s gates, in decoder-layer order (empty: built without capture)."""
    return [state.recorder for _, state in sorted(find_states(model).items()) if state.recorder is not None]


def apply_arrays(model: nn.Module, arrays: SteeringArrays) -> None:
    """Load a plan's arrays into the buffers of every steerable layer of `model`."""
    states = find_states(model)
    missing = sorted(set(arrays.layers) - set(states))
    if missing:
        raise ModelError(f"layers {missing} have no steering buffers: is the Polyroute vLLM plugin loaded?")
    with torch.inference_mode():
        for layer, layer_arrays in arrays.layers.items():
            states[layer].load(
                arrays.mode, arrays.strength, layer_arrays.mask, layer_arrays.coefficients, layer_arrays.eps
            )
