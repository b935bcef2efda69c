"""`polyroute steer --model DIR --plan plan.json --prompt TEXT`: one prompt, generated without and
with a steering plan, and how much routing mass moved onto the plan's experts in each steered layer.

Kept apart from the backends so that `polyroute --help` does not load torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moe_core.errors import PolyrouteError
from moe_core.records import RoutingBatch
from moe_core.steering import SteeringPlan, layers_text
from polyroute.cli.arguments import device, positive_int
from polyroute.cli.options import add_client_args, model_or_server
from polyroute.cli.output import print_table
from polyroute.workflows.steer import mass_at, shown, steer_prompt

if TYPE_CHECKING:
    from polyroute.workflows.steer import SteeredPrompt


def add_parser(commands: Any) -> None:
    """Register `steer` on the `polyroute` sub-command set (it needs no store)."""
    steer = commands.add_parser(
        "steer", help="generate from one prompt without and with a steering plan, and show how routing moved"
    )
    steer.add_argument("--model", type=Path, help="a local MoE checkpoint folder (unless --backend URL)")
    steer.add_argument("--plan", type=Path, required=True, help="a plan from `polyroute plan ... -o plan.json`")
    steer.add_argument("--prompt", required=True, help="the text to continue")
    steer.add_argument("--max-new-tokens", type=positive_int, default=32, help="tokens to generate (default 32)")
    steer.add_argument("--device", type=device, default="cpu", help="cpu or cuda (default cpu)")
    steer.add_argument("--dtype", default="auto", help="float32, bfloat16, float16 or auto")
    add_client_args(steer, sharded=False)
    steer.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from moe_core.backends.base import Backend
    from moe_core.backends.options import HFOptions
    from polyroute.workflows.common import hf_backend, quiet_libraries

    if not args.prompt.strip():
        raise PolyrouteError("--prompt is empty: give the text to continue")
    if not args.plan.is_file():
        raise PolyrouteError(f"no plan at {args.plan}: make one with `polyroute plan ... -o {args.plan}`")
    plan = SteeringPlan.load(args.plan)
    model = model_or_server(args)
    quiet_libraries()
    options = HFOptions(device=args.device, dtype=args.dtype)
    backend = model if isinstance(model, Backend) else hf_backend(model, options)
    print_comparison(plan, steer_prompt(backend, args.prompt, plan, args.max_new_tokens), backend.info().n_experts)
    return 0


def print_comparison(plan: SteeringPlan, done: SteeredPrompt, n_experts: int) -> None:
    """Both texts, then the mass on the plan's experts per steered layer (`steer`, `demo --steer`)."""
    plain, steered = done.plain, done.steered
    print(f"plan: {plan.method}, strength {plan.strength:g}, {layers_text(plan.band)}")
    print(f"unsteered: {shown(plain.texts[0])}")
    print(f"steered:   {shown(steered.texts[0])}")
    print()
    print_table(
        ("layer", "experts", "mass unsteered", "mass steered", "change"),
        mass_table(plan, plain.routing, steered.routing, n_experts),
    )


def mass_table(plan: SteeringPlan, plain: RoutingBatch, steered: RoutingBatch, n_experts: int) -> list[tuple[Any, ...]]:
    """Per steered layer: its experts, and the mean routing mass on them without and with the plan
    (over every token each generation fed through the model)."""
    rows = []
    layers = [int(layer) for layer in plain.layers]
    for entry in plan.experts:
        if not plan.band[0] <= entry.layer <= plan.band[1] or entry.layer not in layers:
            continue
        before, after = (mass_at(batch, entry.layer, entry.experts, n_experts) for batch in (plain, steered))
        experts = ",".join(map(str, entry.experts))
        rows.append((entry.layer, experts, f"{before:.3f}", f"{after:.3f}", f"{after - before:+.3f}"))
    return rows
