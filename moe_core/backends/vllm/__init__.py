"""The vLLM backend: routed-experts capture and router steering on a vLLM engine (see README.md).

Importing this package never imports vLLM (or torch): options, plan arrays, routing decoding and
the plugin's registration table are plain Python and numpy, usable where vLLM is not installed.
`load_vllm_backend` imports vLLM when it is called.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moe_core.backends.vllm.options import VLLMOptions
from moe_core.errors import PolyrouteError

if TYPE_CHECKING:
    from moe_core.backends.vllm.backend import VLLMBackend

__all__ = ["VLLMOptions", "load_vllm_backend", "serve_headless"]


def load_vllm_backend(model_dir: str | Path, options: VLLMOptions | None = None, /, **settings: Any) -> VLLMBackend:
    """Start a vLLM engine on `model_dir` (needs vLLM: on GPUs, or vLLM's CPU backend).

    `settings` are `VLLMOptions` fields (`tensor_parallel_size=2, dtype="bfloat16"`) applied over
    `options`. An unknown setting or a bad value raises PolyrouteError before vLLM is imported; a
    missing or unsupported model raises ModelError (a PolyrouteError); vLLM's own errors pass through.
    """
    try:
        chosen = dataclasses.replace(options or VLLMOptions(), **settings)
    except TypeError as error:
        fields = ", ".join(field.name for field in dataclasses.fields(VLLMOptions))
        raise PolyrouteError(f"not a vLLM backend option ({error}): the options are {fields}") from error
    backend: VLLMBackend = _backend_module().VLLMBackend(model_dir, chosen)
    return backend


def serve_headless(model_dir: str | Path, options: VLLMOptions) -> None:
    """`polyroute serve --backend vllm --headless`: run this node's data-parallel engine cores for the
    head node's server (its --data-parallel-address), until interrupted. Checked as `load_vllm_backend` checks."""
    _backend_module().serve_headless(model_dir, options)


def _backend_module() -> Any:
    try:
        from moe_core.backends.vllm import backend
    except ModuleNotFoundError as error:
        if error.name is None or error.name.split(".")[0] != "vllm":
            raise
        raise PolyrouteError(
            "the vLLM backend needs vLLM, which is not installed here: pip install -r requirements-gpu.txt on a GPU "
            "machine, or `make vllm-venv` for vLLM's CPU backend in .venv-vllm (or use {backend} hf)"
        ) from error
    return backend
