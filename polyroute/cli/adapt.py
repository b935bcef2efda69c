"""`polyroute adapt --model DIR --run RUN_ID --target ben_Beng --budget K [--zones reference|fraction]
[--eval-langs ... | --eval-all] [--task mgsm --task-corpus mgsm:DIR]`: train only the RISE expert
subnetwork of a language (an `adaptation` run in the store with the held-out loss of the target and
English (or the languages asked for) and the task's scores, before and after, and an adapter folder
with the trained slices; a "before" loss an earlier run measured on the same model is reused);
`polyroute adapt merge --adapter DIR --out DIR`: that adapter merged into its base, a full
checkpoint any command loads.

Kept apart from the engine so that `polyroute --help` does not load torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from moe_core.analysis.rise import DEFAULT_RATIOS, ZONE_RULES
from moe_core.corpora import BUILTIN
from moe_core.errors import PolyrouteError
from moe_core.languages import parse_langs
from polyroute.cli.arguments import device, seed
from polyroute.cli.eval import TASK_NAMES
from polyroute.cli.options import add_db

DEFAULT_SPLITS = {"train": "train", "eval": "heldout"}  # of the built-in corpus


def add_parser(commands: Any) -> None:
    """Register `adapt` (and `adapt merge`) on the `polyroute` sub-command set."""
    adapt = commands.add_parser(
        "adapt",
        help="train only a language's RISE expert subnetwork; `adapt merge` makes a full checkpoint",
        description="Select the RISE subnetwork of --target from a trace run's routing, train only those experts "
        "on target-language text, and store the run with the held-out loss of the target and English (or "
        "--eval-langs, or --eval-all) before and after.",
    )
    adapt.add_argument("--model", type=Path, help="the checkpoint folder the trace run traced")
    adapt.add_argument("--run", type=int, metavar="RUN_ID", help="the trace run whose routing selects the experts")
    adapt.add_argument("--target", help="the language to adapt, e.g. ben_Beng")
    adapt.add_argument("--budget", type=int, help="experts to train, K")
    adapt.add_argument("--ratios", default=",".join(map(str, DEFAULT_RATIOS)), help="shallow,middle,deep shares of K")
    adapt.add_argument("--alpha", type=float, default=10.0, help="weight of the frequency terms (default 10)")
    adapt.add_argument(
        "--zones",
        choices=ZONE_RULES,
        default="reference",
        help="how RISE cuts the depth zones: reference (the authors' code: cuts at round(0.375 L) and round(0.625 L), "
        "a full zone's share to the zone with most room; default) or fraction (layer/L cut at 37.5%% and 62.5%%, "
        "a full zone's share to the largest ratio)",
    )
    adapt.add_argument("--train-corpus", default=BUILTIN, help="where the target's training texts come from")
    adapt.add_argument("--train-split", help="its split (default: train for the built-in corpus)")
    adapt.add_argument("--eval-corpus", default=BUILTIN, help="held-out texts to score before and after")
    adapt.add_argument("--eval-split", help="its split (default: heldout for the built-in corpus)")
    scored = adapt.add_mutually_exclusive_group()
    scored.add_argument(
        "--eval-langs",
        "--langs",
        dest="langs",
        help="languages whose held-out loss is measured before and after, besides the target (default: English)",
    )
    scored.add_argument(
        "--eval-all", action="store_true", help="measure every language of the trace run (each is a full pass)"
    )
    adapt.add_argument("--task", help=f"also score a benchmark before and after: one of {', '.join(TASK_NAMES)}")
    adapt.add_argument("--task-corpus", help="the task's local copy, e.g. mgsm:DIR or belebele:DIR")
    adapt.add_argument("--task-limit", type=int, help="score only the task's first N items")
    adapt.add_argument("--epochs", type=int, default=1, help="passes over the training texts (default 1)")
    adapt.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    adapt.add_argument("--batch-size", type=int, default=8, help="texts per step (default 8)")
    adapt.add_argument("--max-steps", type=int, help="stop after this many steps")
    adapt.add_argument("--weight-decay", type=float, default=0.0, help="on the trained slices only (default 0)")
    adapt.add_argument("--seed", type=seed, default=0)
    adapt.add_argument("--out", type=Path, help="adapter folder (default: adapters/ beside the store)")
    adapt.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    adapt.add_argument("--dtype", default="auto", help="auto (float32 on CPU), float32, bfloat16 or float16")
    add_db(adapt)
    actions = adapt.add_subparsers(dest="adapt_command", metavar="ACTION")
    merge = actions.add_parser("merge", help="write the base checkpoint with an adapter's trained experts in place")
    merge.add_argument("--adapter", type=Path, required=True, help="the adapter folder `polyroute adapt` saved")
    merge.add_argument("--out", type=Path, required=True, help="the new checkpoint folder")
    merge.add_argument("--base", type=Path, help="the base checkpoint (default: the one the adapter names)")
    adapt.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from polyroute.workflows.common import quiet_libraries

    quiet_libraries()
    return _merge(args) if args.adapt_command == "merge" else _adapt(args)


def _merge(args: argparse.Namespace) -> int:
    from moe_core.adapt.checkpoint import merge_adapter

    out = merge_adapter(args.adapter, args.out, args.base)
    print(f"merged {args.adapter} into {out}: load it like any checkpoint (--model {out})")
    return 0


def _adapt(args: argparse.Namespace) -> int:
    from moe_core.adapt import AdaptProgress, TrainSettings
    from moe_core.backends.options import HFOptions
    from polyroute.cli.arguments import parse_ratios
    from polyroute.cli.output import print_table
    from polyroute.workflows.adapt import AdaptRequest, start_adaptation

    missing = [name for name in ("model", "run", "target", "budget") if getattr(args, name) is None]
    if missing:
        raise PolyrouteError(f"adapt needs --{', --'.join(missing)} (or `polyroute adapt merge ...`)")
    settings = TrainSettings(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        max_steps=args.max_steps,
        weight_decay=args.weight_decay,
        seed=args.seed,
    )
    settings.check()  # before the store or a model is touched
    request = AdaptRequest(
        db=args.db,
        model=args.model,
        run_id=args.run,
        target=args.target,
        budget=args.budget,
        ratios=parse_ratios(args.ratios),
        alpha=args.alpha,
        zones=args.zones,
        train_corpus=args.train_corpus,
        train_split=_split(args.train_split, args.train_corpus, "train"),
        eval_corpus=args.eval_corpus,
        eval_split=_split(args.eval_split, args.eval_corpus, "eval"),
        eval_langs=parse_langs(args.langs) if args.langs else None,
        eval_all=args.eval_all,
        task=args.task,
        task_corpus=args.task_corpus,
        task_limit=args.task_limit,
        settings=settings,
        out=args.out,
        options=HFOptions(device=args.device, dtype=args.dtype),
    )
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def progress(step: AdaptProgress) -> None:
        if step.stage == "loading":  # a bar of one step says nothing, and an error should stay one line
            return
        if step.stage not in bars:
            for bar in bars.values():
                bar.close()
            bars[step.stage] = tqdm(total=step.total, desc=step.stage, unit="step", file=sys.stderr, dynamic_ncols=True)
        bar = bars[step.stage]
        bar.update(step.done - bar.n)
        if step.loss is not None:
            bar.set_postfix(loss=f"{step.loss:.3f}")
        if step.seconds_left is not None:
            bar.set_description(f"{step.stage} (about {step.seconds_left:.0f} s left)")

    try:
        outcome = start_adaptation(request, progress)
    finally:
        for bar in bars.values():
            bar.close()
    rows = [
        (
            b.lang,
            f"{b.loss:.4f}",
            f"{a.loss:.4f}",
            f"{a.loss - b.loss:+.4f}",
            f"{b.perplexity:.2f}",
            f"{a.perplexity:.2f}",
        )
        for b, a in zip(outcome.before, outcome.after, strict=True)
    ]
    print_table(("lang", "loss_before", "loss_after", "change", "ppl_before", "ppl_after"), rows)
    if outcome.reused:
        print(f"loss before of {', '.join(outcome.reused)}: as stored by an earlier adaptation of the same model")
    if outcome.task_before:
        print()
        print_table(
            ("task", "lang", "metric", "before", "after", "change", "n"),
            [
                (b.task, b.lang, b.metric, f"{b.value:.4g}", f"{a.value:.4g}", f"{a.value - b.value:+.4g}", b.n)
                for b, a in zip(outcome.task_before, outcome.task_after, strict=True)
            ],
        )
    print(
        f"run {outcome.run_id}: trained {len(outcome.subnetwork.experts)} experts of {outcome.subnetwork.target} "
        f"({outcome.n_trained:,} weights) in {outcome.training.steps} steps; adapter in {outcome.adapter_dir} "
        f"(full checkpoint: `polyroute adapt merge --adapter {outcome.adapter_dir} --out DIR`)"
    )
    return 0


def _split(given: str | None, corpus: str, use: str) -> str | None:
    return given if given is not None or corpus != BUILTIN else DEFAULT_SPLITS[use]
