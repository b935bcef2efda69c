"""`polyroute serve --model DIR [--backend hf|vllm] [--host 127.0.0.1] [--port N] [--token T]`: run a
model behind HTTP for the app and the CLI on other machines (`--backend http://HOST:PORT` there;
those client-side flags are declared in `polyroute.cli.options`).

Kept apart from the backends so that `polyroute --help` does not load torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from moe_core.backends.vllm.options import add_parallel_arguments, parallel_settings
from polyroute.cli.arguments import device, port, positive_float, positive_int
from polyroute.cli.options import ENGINES, TOKEN_ENV


def add_parser(commands: Any) -> None:
    """Register `serve` (it needs no store)."""
    serve = commands.add_parser("serve", help="serve a model over HTTP for the app and CLI on other machines")
    serve.add_argument("--model", type=Path, required=True, help="a local MoE checkpoint folder")
    serve.add_argument("--backend", default="hf", choices=ENGINES, help="the engine: hf (transformers) or vllm")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need --token)")
    serve.add_argument("--port", type=port, default=8765, help="port to listen on (default 8765)")
    serve.add_argument(
        "--token", default=os.environ.get(TOKEN_ENV), help=f"the bearer token clients must send (${TOKEN_ENV})"
    )
    serve.add_argument("--device", type=device, default="cpu", help="hf: cpu, cuda or cuda:N (default cpu)")
    serve.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16 (default auto)")
    serve.add_argument("--max-tokens", type=positive_int, default=512, help="truncate longer texts (default 512)")
    serve.add_argument("--template", default="plain", choices=["plain", "chat"], help="wrap texts in the chat template")
    serve.add_argument("--model-id", help="name of the model in clients' stores (default: the folder name)")
    engine = serve.add_argument_group("vllm engine (--backend vllm; checked before vLLM starts)")
    engine.add_argument("--tensor-parallel-size", type=positive_int, default=1, help="GPUs per model (default 1)")
    engine.add_argument(
        "--gpu-memory-utilization", type=positive_float, default=0.9,
        help="share of each GPU's memory vLLM may take (vLLM's CPU backend: of the CPU's memory; default 0.9)",
    )  # fmt: skip
    engine.add_argument(
        "--kv-cache-mb", type=positive_int, help="the KV cache's size in MiB, set outright (instead of the share)"
    )
    engine.add_argument(
        "--max-model-len", type=positive_int, help="longest prompt plus generation (default: the model's)"
    )
    engine.add_argument(
        "--enforce-eager", action="store_true", help="no CUDA graphs or torch.compile: starts faster, runs slower"
    )
    engine.add_argument(
        "--check-routed-experts", action="store_true",
        help="also take vLLM's own routed-experts ids (a GPU) and check the capture against them",
    )  # fmt: skip
    add_parallel_arguments(engine)  # vLLM's data parallelism: --data-parallel-size ..., --headless
    serve.add_argument(
        "--max-request-mb", type=positive_float, default=16, help="largest request body in MiB (default 16)"
    )
    serve.add_argument("--max-texts", type=positive_int, default=4096, help="most texts in one request (default 4096)")
    serve.add_argument(
        "--max-new-tokens", type=positive_int, default=1024, help="most tokens one generation may ask for"
    )
    serve.add_argument(
        "--max-seconds", type=positive_float, default=600, help="time limit of one request (default 600)"
    )
    serve.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from moe_core.server import Limits, Server, check_binding, check_port, serve

    if parallel_settings(args, args.backend).get("headless"):  # refuses data-parallel flags without vllm
        return _headless(args)
    # Before the model loads (a real one takes minutes): who may connect, and whether the port is free.
    check_binding(args.host, args.token)
    check_port(args.host, args.port)
    limits = Limits(
        max_request_bytes=int(args.max_request_mb * (1 << 20)),
        max_texts=args.max_texts,
        max_new_tokens=args.max_new_tokens,
        max_seconds=args.max_seconds,
    )
    backend = _load(args)
    info = backend.info()
    print(
        f"polyroute serve: {info.model_id} ({info.arch}, {len(info.moe_layers)} MoE layers, {info.n_experts} experts, "
        f"top-{info.top_k}) on http://{args.host}:{args.port} with the {backend.name} backend"
        + ("; clients must send the token" if args.token else ""),
        file=sys.stderr,
        flush=True,
    )
    serve(Server(backend, token=args.token, limits=limits), host=args.host, port=args.port)
    return 0


def _load(args: argparse.Namespace) -> Any:
    from polyroute.workflows.common import quiet_libraries

    quiet_libraries()
    if args.backend == "vllm":
        from moe_core.backends.vllm import load_vllm_backend

        return load_vllm_backend(args.model, **_vllm_settings(args))
    from moe_core.backends.options import HFOptions
    from polyroute.workflows.common import hf_backend

    options = HFOptions(
        device=args.device, dtype=args.dtype, max_tokens=args.max_tokens, template=args.template, model_id=args.model_id
    )
    return hf_backend(args.model, options)


def _vllm_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "dtype": args.dtype,
        "max_tokens": args.max_tokens,
        "template": args.template,
        "model_id": args.model_id,
        "tensor_parallel_size": args.tensor_parallel_size,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "kv_cache_memory_bytes": args.kv_cache_mb << 20 if args.kv_cache_mb else None,
        "max_model_len": args.max_model_len,
        "enforce_eager": args.enforce_eager,
        "check_routed_experts": args.check_routed_experts,
        **parallel_settings(args, args.backend),
    }


def _headless(args: argparse.Namespace) -> int:
    """`--headless`: this node's data-parallel engines for the head node's server, and no server here."""
    from moe_core.backends.vllm import VLLMOptions, serve_headless
    from polyroute.workflows.common import quiet_libraries

    options = VLLMOptions(**_vllm_settings(args))
    quiet_libraries()
    print(f"polyroute serve: data-parallel engines for {args.data_parallel_address}", file=sys.stderr, flush=True)
    serve_headless(args.model, options)
    return 0
