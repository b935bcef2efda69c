"""`polyroute eval --task mgsm --model DIR --corpus mgsm:DIR --langs ... [--plan plan.json]
[--sweep lambda=0,0.5,1 | window=early,middle,late]`: score a model on a benchmark, unsteered and
steered, into the store's `eval_results`; `--task heldout` needs no copy (the built-in corpus).

Kept apart from the backends so that `polyroute --help` does not load torch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moe_core.errors import PolyrouteError
from moe_core.languages import parse_langs
from polyroute.cli.arguments import device, positive_int
from polyroute.cli.options import add_client_args, add_db, model_or_server

# moe_core.evaluation.tasks.TASKS, without its imports (a test checks they agree)
TASK_NAMES = ("heldout", "belebele", "mgsm", "polymath", "flores", "xquad")


def add_parser(commands: Any) -> None:
    """Register `eval` on the `polyroute` sub-command set."""
    ev = commands.add_parser("eval", help="score a model on a benchmark, without and with a steering plan")
    ev.add_argument(
        "--task",
        required=True,
        help=f"one of {', '.join(TASK_NAMES)} (heldout: the model's loss on the built-in corpus's held-out "
        "texts and how it carries them on, unsteered and steered; needs no download)",
    )
    ev.add_argument("--model", type=Path, help="a local MoE checkpoint folder (unless --backend URL)")
    ev.add_argument(
        "--corpus",
        help="the benchmark's local copy, e.g. mgsm:DIR or flores_plus:DIR (`polyroute corpus list` says where each "
        "comes from); task heldout reads the built-in corpus",
    )
    ev.add_argument("--langs", required=True, help="comma-separated FLORES-200 codes, e.g. eng_Latn,deu_Latn")
    ev.add_argument("--split", help="the benchmark split (default: its test split)")
    ev.add_argument("--limit", type=positive_int, help="score only the first N items")
    ev.add_argument("--plan", type=Path, help="a steering plan (`polyroute plan ... -o plan.json`)")
    ev.add_argument("--sweep", help="run the plan at several settings: lambda=0,0.25,0.5,1 or window=early,middle,late")
    ev.add_argument("--max-new-tokens", type=positive_int, help="answer length (default: the task's own)")
    ev.add_argument("--batch-size", type=positive_int, default=8, help="prompts per generation batch (default 8)")
    ev.add_argument("--device", type=device, default="cpu", help="cpu or cuda (default cpu)")
    ev.add_argument("--dtype", default="auto", help="float32, bfloat16, float16 or auto")
    add_client_args(ev, sharded=False)
    add_db(ev)
    ev.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from moe_core.backends.options import HFOptions
    from moe_core.evaluation.sweeps import parse_sweep
    from moe_core.evaluation.tasks import get_task
    from polyroute.cli.output import print_table
    from polyroute.workflows.common import quiet_libraries
    from polyroute.workflows.evaluate import EvalRequest, run_evaluation

    get_task(args.task)  # an unknown task fails before the store or a model is touched
    if args.plan is not None and not args.plan.is_file():
        raise PolyrouteError(f"no plan at {args.plan}: make one with `polyroute plan ... -o {args.plan}`")
    quiet_libraries()
    bars: list[Any] = []

    def progress(run_id: int, total: int) -> Callable[[int], None]:
        bar = tqdm(total=total, unit="answer", desc=f"run {run_id}", dynamic_ncols=True, file=sys.stderr)
        bars.append(bar)
        return bar.update

    request = EvalRequest(
        db=args.db,
        task=args.task,
        model=model_or_server(args),
        corpus=args.corpus,
        langs=parse_langs(args.langs),
        split=args.split,
        limit=args.limit,
        plan=args.plan,
        sweep=parse_sweep(args.sweep) if args.sweep else None,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        options=HFOptions(device=args.device, dtype=args.dtype),
    )
    try:
        outcome = run_evaluation(request, progress)
    finally:
        for bar in bars:
            bar.close()
    print_table(
        ("task", "lang", "variant", "metric", "value", "n"),
        [(s.task, s.lang, s.variant, s.metric, f"{s.value:.4g}", s.n) for s in outcome.scores],
    )
    print(f"run {outcome.run_id}: {outcome.n_items} items scored, stored in {args.db}")
    return 0
