"""How the vLLM backend starts its engine: `VLLMOptions`, checked when built (no vLLM import).

The server and the CLI build options from user input before any GPU work starts, so every value
is checked here and a bad one is refused with a message that names the fix.
"""

from __future__ import annotations

from dataclasses import dataclass

from moe_core.backends.encoding import TEMPLATES
from moe_core.errors import PolyrouteError

DTYPES = ("auto", "bfloat16", "float16", "float32")


@dataclass(frozen=True, kw_only=True)
class VLLMOptions:
    """The engine's settings. `dtype="auto"`: the checkpoint's dtype (vLLM's own default).

    tensor_parallel_size:   GPUs one model is split over (vLLM's tensor parallelism)
    gpu_memory_utilization: share of each GPU's memory vLLM may take (weights and KV cache)
    max_tokens:             texts are truncated to this many tokens, as with the hf backend
    max_model_len:          longest prompt plus generation the engine plans for (None: the model's)
    enforce_eager:          no CUDA graphs (slower; for debugging kernels)
    template:               "plain", or "chat" to wrap each text in the tokenizer's chat template
    """

    tensor_parallel_size: int = 1
    dtype: str = "auto"
    max_tokens: int = 512
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    enforce_eager: bool = False
    template: str = "plain"
    model_id: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.tensor_parallel_size < 1:
            raise PolyrouteError(f"tensor_parallel_size must be at least 1, not {self.tensor_parallel_size}")
        if self.dtype not in DTYPES:
            raise PolyrouteError(f"unknown dtype {self.dtype!r}: use one of {', '.join(DTYPES)}")
        if self.max_tokens < 1:
            raise PolyrouteError(f"max_tokens must be at least 1, not {self.max_tokens}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise PolyrouteError(
                f"gpu_memory_utilization is a share of GPU memory in (0, 1], not {self.gpu_memory_utilization}"
            )
        if self.max_model_len is not None and self.max_model_len <= self.max_tokens:
            raise PolyrouteError(
                f"max_model_len ({self.max_model_len}) leaves no room to generate after a prompt of max_tokens "
                f"({self.max_tokens}): raise max_model_len or lower max_tokens"
            )
        if self.template not in TEMPLATES:
            raise PolyrouteError(f"unknown template {self.template!r}: use one of {', '.join(TEMPLATES)}")

    def engine_args(self) -> dict[str, object]:
        """Keyword arguments of `vllm.LLM` these options set (the backend adds the model and capture)."""
        args: dict[str, object] = {
            "tensor_parallel_size": self.tensor_parallel_size,
            "dtype": self.dtype,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "enforce_eager": self.enforce_eager,
            "seed": self.seed,
        }
        if self.max_model_len is not None:
            args["max_model_len"] = self.max_model_len
        return args
