"""How the vLLM backend starts its engine: `VLLMOptions`, checked when built (no vLLM import).

The server and the CLI build options from user input before any GPU work starts, so every value
is checked here and a bad one is refused with a message that names the fix.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

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

    Data parallelism through vLLM itself (one server, `data_parallel_size` engine cores, each a
    whole copy of the model over `tensor_parallel_size` GPUs; vLLM's client spreads the requests):
    data_parallel_size:       engine cores in all, on every node together (1: none)
    data_parallel_size_local: those on this node (None: all of them, one node)
    data_parallel_address:    the head node's address the other nodes reach (several nodes)
    data_parallel_rpc_port:   the head node's port for the engines' handshake (None: vLLM's default)
    data_parallel_start_rank: headless nodes only: the first rank this node's engines take
    headless:                 this node runs engine cores for the head node's server, and no server
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
    data_parallel_size: int = 1
    data_parallel_size_local: int | None = None
    data_parallel_address: str | None = None
    data_parallel_rpc_port: int | None = None
    data_parallel_start_rank: int | None = None
    headless: bool = False

    def __post_init__(self) -> None:
        if self.tensor_parallel_size < 1:
            raise PolyrouteError(f"tensor_parallel_size must be at least 1, not {self.tensor_parallel_size}")
        self._check_data_parallel()
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

    def _check_data_parallel(self) -> None:
        size, local, start = self.data_parallel_size, self.data_parallel_size_local, self.data_parallel_start_rank
        if size < 1:
            raise PolyrouteError(f"data_parallel_size must be at least 1, not {size}")
        spanning = {
            "data_parallel_size_local": local,
            "data_parallel_address": self.data_parallel_address,
            "data_parallel_rpc_port": self.data_parallel_rpc_port,
            "data_parallel_start_rank": start,
            "headless": self.headless or None,
        }
        given = ["{" + name + "}" for name, value in spanning.items() if value is not None]
        if size == 1 and given:
            raise PolyrouteError(
                f"{', '.join(given)}: these spread vLLM's data parallelism; add {{data_parallel_size}} N (N > 1) "
                "or drop them"
            )
        if local is not None and not 1 <= local <= size:
            raise PolyrouteError(
                f"data_parallel_size_local must be between 1 and data_parallel_size ({size}), not {local}"
            )
        if self.data_parallel_rpc_port is not None and not 1 <= self.data_parallel_rpc_port <= 65535:
            raise PolyrouteError(f"data_parallel_rpc_port must be a port in 1-65535, not {self.data_parallel_rpc_port}")
        several_nodes = local is not None and local < size
        if several_nodes and not self.data_parallel_address:
            raise PolyrouteError(
                f"{local} of {size} data-parallel engines on this node: the others run on other nodes, which need "
                "the head node's {data_parallel_address} (and {data_parallel_rpc_port})"
            )
        if self.headless:
            if local is None or start is None or not self.data_parallel_address:
                raise PolyrouteError(
                    "{headless} runs this node's share of the engines: give {data_parallel_size_local}, "
                    "{data_parallel_start_rank} and the head node's {data_parallel_address}"
                )
            if start < 1 or start + local > size:
                raise PolyrouteError(
                    f"ranks {start}-{start + local - 1} of a headless node lie outside the {size} data-parallel ranks "
                    "(rank 0 is the head node's): lower {data_parallel_start_rank} or {data_parallel_size_local}"
                )
        elif start is not None:
            raise PolyrouteError(
                "{data_parallel_start_rank} is for {headless} nodes: the head node (the one with the server) "
                "starts at rank 0"
            )

    @property
    def local_devices(self) -> int:
        """Devices this node's engines take: tensor parallel size times the data-parallel engines here."""
        return self.tensor_parallel_size * (self.data_parallel_size_local or self.data_parallel_size)

    def check_devices(self, visible: int | None) -> None:
        """Refuse more devices than `visible` ones (None: not known, e.g. vLLM's CPU backend)."""
        if visible is not None and self.local_devices > visible:
            engines = self.data_parallel_size_local or self.data_parallel_size
            raise PolyrouteError(
                f"tensor_parallel_size {self.tensor_parallel_size} x {engines} "
                f"data-parallel engines on this node need {self.local_devices} GPUs; {visible} are visible: lower "
                "{tensor_parallel_size} or {data_parallel_size}(-local), or spread the engines over nodes"
            )

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
        if self.data_parallel_size > 1:
            args["data_parallel_size"] = self.data_parallel_size
            spanning = {
                "data_parallel_size_local": self.data_parallel_size_local,
                "data_parallel_address": self.data_parallel_address,
                "data_parallel_rpc_port": self.data_parallel_rpc_port,
                "data_parallel_start_rank": self.data_parallel_start_rank,
            }
            args |= {key: value for key, value in spanning.items() if value is not None}
        if self.max_model_len is not None:
            args["max_model_len"] = self.max_model_len
        if self.kv_cache_memory_bytes is not None:
            args["kv_cache_memory_bytes"] = self.kv_cache_memory_bytes
        return args


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def visible_gpus() -> int | None:
    """CUDA devices this process may use, or None where it cannot be known (no CUDA: vLLM's CPU backend)."""
    try:
        import torch
    except ModuleNotFoundError:
        return None
    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.device_count())


# `polyroute serve`'s flags for vLLM's data parallelism; VLLMOptions checks their values.
PARALLEL_FLAGS = (
    ("data_parallel_size", int, "engine cores in all, each a whole copy of the model on --tensor-parallel-size GPUs; "
     "vLLM spreads the requests over them behind this one server (default 1)"),
    ("data_parallel_size_local", int, "of those, the ones on this node (default: all; fewer: several nodes)"),
    ("data_parallel_address", str, "several nodes: the head node's address the other nodes reach"),
    ("data_parallel_rpc_port", int, "several nodes: the head node's port for the engines' handshake"),
    ("data_parallel_start_rank", int, "--headless nodes: the first data-parallel rank this node's engines take"),
)  # fmt: skip


def add_parallel_arguments(group: Any) -> None:
    """Add vLLM's data-parallel flags to an argparse parser or group (`polyroute serve`)."""
    for name, kind, text in PARALLEL_FLAGS:
        group.add_argument(_flag(name), type=kind, help=text)
    group.add_argument(
        "--headless",
        action="store_true",
        help="run this node's data-parallel engines for the head node's server, and no server of its own",
    )


def parallel_settings(args: argparse.Namespace, backend: str) -> dict[str, Any]:
    """The data-parallel `VLLMOptions` fields the flags set; refused in one line on a backend other than vllm."""
    settings: dict[str, Any] = {
        name: getattr(args, name) for name, _, _ in PARALLEL_FLAGS if getattr(args, name) is not None
    }
    if args.headless:
        settings["headless"] = True
    if settings and backend != "vllm":
        flags = ", ".join(_flag(name) for name in settings)
        raise PolyrouteError(
            f"{flags}: data parallelism is vLLM's (--backend vllm); to spread a run over several hf servers, "
            "give the client their URLs (--backend http://a:8765,http://b:8765)"
        )
    return settings
