"""How the vLLM backend starts its engine: `VLLMOptions`, checked when built (no vLLM import).

The server and the CLI build options from user input before any GPU work starts, so every value
is checked here and a bad one is refused with a message that names the fix.
"""

from __future__ import annotations

from dataclasses import dataclass

from moe_core.backends.encoding import TEMPLATES
from moe_core.errors import PolyrouteError

DTYPES = ("auto", "bfloat16", "float16", "float32")
# The engine's `additional_config` key the steerable models read: False builds them without capture.
CAPTURE_SETTING = "polyroute_capture"


@dataclass(frozen=True, kw_only=True)
class VLLMOptions:
    """The engine's settings. `dtype="auto"`: the checkpoint's dtype (vLLM's own default).

    tensor_parallel_size:   GPUs one model is split over (vLLM's tensor parallelism)
    gpu_memory_utilization: share of each GPU's memory vLLM may take (weights and KV cache); on
                            vLLM's CPU backend, the share of the CPU's (NUMA node's) memory
    kv_cache_memory_bytes:  the KV cache's size, set outright (None: what gpu_memory_utilization leaves);
                            on a CPU shared with others, a size that fits beats a share of the node
    max_tokens:             texts are truncated to this many tokens, as with the hf backend
    max_model_len:          longest prompt plus generation the engine plans for (None: the model's)
    enforce_eager:          no CUDA graphs (slower; for debugging kernels)
    template:               "plain", or "chat" to wrap each text in the tokenizer's chat template
    check_routed_experts:   also ask vLLM for its own routed-experts ids (GPU: Model Runner V2) and
                            check the capture's ids against them
    """

    tensor_parallel_size: int = 1
    dtype: str = "auto"
    max_tokens: int = 512
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    kv_cache_memory_bytes: int | None = None
    enforce_eager: bool = False
    template: str = "plain"
    model_id: str | None = None
    seed: int = 0
    check_routed_experts: bool = False

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
        if self.kv_cache_memory_bytes is not None and self.kv_cache_memory_bytes < 1 << 20:
            raise PolyrouteError(
                f"kv_cache_memory_bytes is a size in bytes, at least 1 MiB, not {self.kv_cache_memory_bytes}"
            )
        if self.template not in TEMPLATES:
            raise PolyrouteError(f"unknown template {self.template!r}: use one of {', '.join(TEMPLATES)}")

    def engine_args(self, *, capture: bool = True) -> dict[str, object]:
        """Keyword arguments of `vllm.LLM` these options set (the backend adds the model and its worker extension).

        The capture must see every token a request reads, so prefix caching is off, except where
        vLLM's routed-experts output needs it on (the backend then gives each request a cache salt
        of its own, so that no prefix is reused). `capture=False` builds the gates without it, only
        to measure what it costs (bench/vllm.py).
        """
        args: dict[str, object] = {
            "tensor_parallel_size": self.tensor_parallel_size,
            "dtype": self.dtype,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "enforce_eager": self.enforce_eager,
            "seed": self.seed,
            "enable_prefix_caching": self.check_routed_experts,
            "enable_return_routed_experts": self.check_routed_experts,
            "additional_config": {CAPTURE_SETTING: capture},
        }
        if self.max_model_len is not None:
            args["max_model_len"] = self.max_model_len
        if self.kv_cache_memory_bytes is not None:
            args["kv_cache_memory_bytes"] = self.kv_cache_memory_bytes
        return args
