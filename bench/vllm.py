"""vLLM backend benchmark: what routing capture and steering cost on a real vLLM engine (JSON on stdout).

Both measured in one run, on the demo model (Qwen3-MoE, 4 layers, 8 experts top-2) and on
whatever engine vLLM has here (vLLM's CPU backend in `.venv-vllm`, or a GPU):

- capture: prompt tokens per second of `VLLMBackend.trace` (tokenizing, the gates' capture, the
  per-request filing on the worker and the `RoutingBatch`) against the same texts tokenized the
  same way and run through an engine built without the capture (`engine_args(capture=False)`),
  one generated token each as a trace does. Goal: captured / uncaptured >= 0.9.
- steering: generated tokens per second with a soft plan over the middle MoE layers loaded
  against without one, on the same engine (both capture; the plan is loaded or unloaded on every
  run, as `VLLMBackend.generate` does when plans change); every prompt generates exactly the same
  number of tokens (EOS ignored), so both variants do the same work whatever they write.
  Goal: steered / unsteered >= 0.95.

Variants are interleaved and repeated (best of N, after a warm-up each: bench/capture.py's
`best_time`); the machine's load average is recorded before and after.

Run: `make bench-vllm` (or `.venv-vllm/bin/python bench/vllm.py --quick` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Run as a script, Python puts bench/ first on sys.path, where this file would shadow the vllm
# package: the repository root (which holds the `bench` package) takes its place.
sys.path[0] = str(Path(__file__).resolve().parents[1])

CAPTURE_GOAL = 0.9
STEER_GOAL = 0.95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not a measurement")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats per variant (best of N)")
    parser.add_argument("--dtype", default="bfloat16", help="the engines' dtype (default bfloat16)")
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick, repeats=args.repeats, dtype=args.dtype), indent=2))


def run(*, quick: bool, repeats: int, dtype: str) -> dict[str, Any]:
    # vLLM's own log handler writes to stdout, which carries the JSON: leave logging to Python's
    # default (warnings on stderr), in the engine processes too.
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    import numpy as np
    import torch
    import vllm
    from vllm import LLM, SamplingParams

    from bench.capture import best_time
    from moe_core.backends.vllm import VLLMOptions, load_vllm_backend
    from moe_core.backends.vllm.worker import EXTENSION
    from moe_core.demo import DEMO_MODEL_DIR
    from moe_core.steering import SOFT, LayerExperts, SteeringPlan
    from moe_core.tiny import SAMPLE_TEXT

    repeats = 1 if quick else repeats
    texts = list(SAMPLE_TEXT) * (1 if quick else 4)
    prompts = list(SAMPLE_TEXT[:8])
    new_tokens = 8 if quick else 32
    # A KV cache set outright: a share of a shared machine's memory varies from run to run.
    options = VLLMOptions(dtype=dtype, enforce_eager=True, kv_cache_memory_bytes=256 << 20, max_model_len=1024)
    load_before = os.getloadavg()

    backend = load_vllm_backend(DEMO_MODEL_DIR, options)
    uncaptured = LLM(model=str(DEMO_MODEL_DIR), worker_extension_cls=EXTENSION, **options.engine_args(capture=False))
    one_token = SamplingParams(max_tokens=1, temperature=0.0, detokenize=False)

    def plain_trace() -> None:
        encoded = backend._encode(texts)  # as the backend's trace tokenizes
        uncaptured.generate([{"prompt_token_ids": enc.ids} for enc in encoded], one_token, use_tqdm=False)

    try:
        n_prompt_tokens = sum(backend.count_tokens(texts))
        trace_seconds = best_time({"captured": lambda: backend.trace(texts), "uncaptured": plain_trace}, repeats)
    finally:
        uncaptured.llm_engine.engine_core.shutdown()

    info = backend.info()
    band = info.moe_layers[1:-1] or info.moe_layers
    experts = tuple(int(e) for e in np.linspace(0, info.n_experts - 1, info.top_k).round().astype(int))
    plan = SteeringPlan(
        method=SOFT,
        band=(band[0], band[-1]),
        experts=tuple(LayerExperts(layer=layer, experts=experts) for layer in band),
        strength=0.5,
        source="bench",
    )
    fixed = SamplingParams(max_tokens=new_tokens, min_tokens=new_tokens, ignore_eos=True, temperature=0.0)
    encoded_prompts = backend._encode(prompts)

    def generation(chosen: SteeringPlan | None) -> Callable[[], None]:
        def one() -> None:
            backend._steer(chosen)
            backend._run(encoded_prompts, fixed)

        return one

    steer_seconds = best_time({"unsteered": generation(None), "steered": generation(plan)}, repeats)
    backend.close()

    capture_ratio = (n_prompt_tokens / trace_seconds["captured"]) / (n_prompt_tokens / trace_seconds["uncaptured"])
    rates = {name: len(prompts) * new_tokens / seconds for name, seconds in steer_seconds.items()}
    steer_ratio = rates["steered"] / rates["unsteered"]
    return {
        "benchmark": "vLLM backend: routing capture and steering cost",
        "environment": {
            "python": platform.python_version(),
            "vllm": vllm.__version__,
            "torch": torch.__version__,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "cpus": os.cpu_count(),
            "dtype": dtype,
            "repeats": repeats,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        },
        "model": f"{info.model_id} ({info.arch}, {info.n_layers} layers, {info.n_experts} experts, top-{info.top_k})",
        "capture": {
            "texts": len(texts),
            "prompt_tokens": n_prompt_tokens,
            "captured_tokens_per_s": round(n_prompt_tokens / trace_seconds["captured"], 1),
            "uncaptured_tokens_per_s": round(n_prompt_tokens / trace_seconds["uncaptured"], 1),
            "ratio_captured_over_uncaptured": round(capture_ratio, 3),
            "goal": CAPTURE_GOAL,
            "met": capture_ratio >= CAPTURE_GOAL,
        },
        "steering": {
            "prompts": len(prompts),
            "new_tokens_each": new_tokens,
            "plan": f"soft 0.5, layers {band[0]}-{band[-1]}, experts {list(experts)}",
            "unsteered_tokens_per_s": round(rates["unsteered"], 1),
            "steered_tokens_per_s": round(rates["steered"], 1),
            "ratio_steered_over_unsteered": round(steer_ratio, 3),
            "goal": STEER_GOAL,
            "met": steer_ratio >= STEER_GOAL,
        },
    }


if __name__ == "__main__":  # vLLM starts its engine in a spawned process, which imports this module
    main()
