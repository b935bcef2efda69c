"""Steering benchmark: generation tokens per second with a steering plan against without one.

Prints one JSON object. For each model (the embedded demo model, and a random 8-layer, hidden-512,
64-expert top-8 Qwen3-MoE) and each plan (soft and hard over the middle MoE layers), the same
prompts are generated greedily with `min_new_tokens = max_new_tokens`, so both variants produce
exactly the same number of tokens whatever they write; variants are interleaved and repeated
(best of N, after a warm-up each). Goal: steered / unsteered throughput >= 0.95.

The model's own `generate` is timed, plain and inside `Steering`, so the ratio is the cost of the
steering hooks alone (`HFBackend.generate` adds the same routing capture to both).

Run: `make bench` (or `python bench/steer.py --quick` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.utils import logging as hf_logging

from moe_core.analysis import rise
from moe_core.backends.hf import HFBackend
from moe_core.backends.options import HFOptions
from moe_core.demo import DEMO_MODEL_DIR
from moe_core.steering import HARD, SOFT, LayerExperts, SteeringPlan
from moe_core.steering.hooks import Steering
from moe_core.tiny import SAMPLE_TEXT, build_tiny_model

# Run as a script (`python bench/steer.py`): the repository root holds the `bench` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.capture import best_time

GOAL = 0.95
# The mid-size config (the same as bench/capture.py's "mid").
MID = {"layers": 8, "hidden": 512, "experts": 64, "top_k": 8, "moe_intermediate_size": 192}
PROMPTS = [
    "Please enter a valid",
    "The weather is lovely today, and the children",
    "Your password must contain",
    "We sent you a message to confirm",
    "The train to the city leaves every morning at",
    "This field is required because",
    "In the old town there is a small bakery that",
    "Thank you for",
]


def middle_plan(backend: HFBackend, method: str, n_steered: int) -> SteeringPlan:
    """`n_steered` experts (spread over the ids) in every MoE layer of the middle depth zone."""
    info = backend.info()
    moe = np.asarray(info.moe_layers)
    band = moe[rise.depth_zones(moe, info.n_layers) == 1]
    experts = tuple(int(e) for e in np.linspace(0, info.n_experts - 1, n_steered).round().astype(int))
    return SteeringPlan(
        method=method,
        band=(int(band.min()), int(band.max())),
        experts=tuple(LayerExperts(layer=int(layer), experts=experts) for layer in band),
        strength=0.5 if method == SOFT else 0.0,
        source="bench",
    )


def generation(backend: HFBackend, prompts: list[str], new_tokens: int, plan: SteeringPlan | None) -> Callable[[], int]:
    """One greedy generation of every prompt in one left-padded batch; returns the tokens made."""
    ids, mask = backend._pad(backend._encode(prompts), left=True)
    tokenizer = backend._tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model: Any = backend.model

    def run() -> int:
        steering = Steering(model, plan) if plan is not None else None
        with torch.inference_mode():
            if steering is None:
                out = model.generate(
                    input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                    do_sample=False, pad_token_id=pad,
                )  # fmt: skip
            else:
                with steering:
                    out = model.generate(
                        input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                        do_sample=False, pad_token_id=pad,
                    )  # fmt: skip
        made = out.shape[1] - ids.shape[1]
        assert made == new_tokens, f"generated {made} tokens, not {new_tokens}"
        return int(made * out.shape[0])

    return run


def measure(backend: HFBackend, prompts: list[str], new_tokens: int, repeats: int) -> dict[str, Any]:
    n_steered = max(1, backend.info().top_k)
    plans = {method: middle_plan(backend, method, n_steered) for method in (SOFT, HARD)}
    variants: dict[str, Callable[[], object]] = {"unsteered": generation(backend, prompts, new_tokens, None)}
    variants |= {method: generation(backend, prompts, new_tokens, plan) for method, plan in plans.items()}
    seconds = best_time(variants, repeats)
    n_tokens = len(prompts) * new_tokens
    info = backend.info()
    result: dict[str, Any] = {
        "model": info.model_id,
        "shape": f"{info.n_layers} layers, {info.n_experts} experts, top-{info.top_k}",
        "prompts": len(prompts),
        "new_tokens_each": new_tokens,
        "unsteered_tokens_per_s": round(n_tokens / seconds["unsteered"], 1),
    }
    for method, plan in plans.items():
        ratio = seconds["unsteered"] / seconds[method]
        result[method] = {
            "band": list(plan.band),
            "experts_per_layer": n_steered,
            "steered_tokens_per_s": round(n_tokens / seconds[method], 1),
            "ratio_steered_over_unsteered": round(ratio, 3),
            "goal": GOAL,
            "met": ratio >= GOAL,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not a measurement")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats per variant (best of N)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    # One thread by default: on a small shared machine more threads than free cores made one
    # forward pass of the mid model 5-50x slower and its timings noise (measured: 0.13 s vs 0.4-6.6 s).
    torch.set_num_threads(args.threads)
    repeats, new_tokens = (1, 8) if args.quick else (args.repeats, 64)
    options = HFOptions(device=args.device, dtype="float32")
    with tempfile.TemporaryDirectory() as tmp:
        size = dict(MID)
        mid_dir = build_tiny_model(
            "qwen3_moe", Path(tmp) / "mid",
            layers=size.pop("layers"), hidden=size.pop("hidden"), experts=size.pop("experts"),
            top_k=size.pop("top_k"), vocab_size=2048, texts=SAMPLE_TEXT * 4, **size,
        )  # fmt: skip
        results = [
            measure(HFBackend(folder, options), PROMPTS, new_tokens, repeats) for folder in (DEMO_MODEL_DIR, mid_dir)
        ]
    met = all(r[method]["met"] for r in results for method in (SOFT, HARD))
    print(
        json.dumps(
            {
                "benchmark": "steered vs unsteered generation throughput",
                "environment": {
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                    "device": args.device,
                    "threads": torch.get_num_threads(),
                    "repeats": repeats,
                },
                "models": results,
                "goal": f"steered / unsteered tokens per second >= {GOAL}",
                "met": met,
            },
            indent=2,
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
