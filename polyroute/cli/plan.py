"""`polyroute plan KIND --run RUN_ID ... [-o plan.json]`: a steering plan built from a stored run.

The plan's JSON goes to `-o` (or stdout); a one-line summary (experts per layer) goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from moe_core.analysis.zones import ZONES
from moe_core.errors import PolyrouteError
from moe_core.languages import normalise_lang, parse_langs
from polyroute import plans
from polyroute.cli.arguments import parse_layers
from polyroute.cli.options import add_db
from store import open_store

KINDS = {
    "task-experts": "task experts (Delta-tau against a generic reference run), soft steering",
    "language-experts": "a language's experts (Delta-tau against --ref), soft steering",
    "shared": "experts shared by --langs, coefficients = the source (first) language's shares, adaptive",
    "exclusive": "a language's exclusive experts, ablated over an early, middle or late window",
}


def add_parser(commands: Any) -> None:
    plan = commands.add_parser("plan", help="build a steering plan (JSON) from a stored run")
    kinds = plan.add_subparsers(dest="plan_kind", required=True, metavar="KIND")
    for name, help_text in KINDS.items():
        parser = kinds.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("--run", type=int, required=True, metavar="RUN_ID", help="the trace run (`polyroute runs`)")
        parser.add_argument("-o", "--output", type=Path, help="write the plan here (default: print it)")
        add_db(parser)
        if name == "shared":
            parser.add_argument("--langs", required=True, help="SRC,TGT,...: the source language first")
            parser.add_argument("--k", type=int, default=15, help="experts kept per language and layer (default 15)")
            parser.add_argument("--thr", type=float, default=0.4, help="share threshold (default 0.4)")
        else:
            parser.add_argument("--lang", required=True, help="the language, e.g. eng_Latn")
        if name == "exclusive":
            parser.add_argument("--window", required=True, metavar="early|middle|late|A-B", help="layers to ablate in")
            parser.add_argument("--k", type=int, default=15, help="experts kept per language and layer (default 15)")
            parser.add_argument("--thr", type=float, default=0.4, help="share threshold (default 0.4)")
            continue
        if name == "task-experts":
            parser.add_argument("--ref-run", type=int, required=True, help="a run of the same model over generic text")
        if name == "language-experts":
            parser.add_argument("--ref", default="eng_Latn", help="reference language (default eng_Latn)")
        if name != "shared":
            parser.add_argument("--tau", type=float, default=0.4, help="Delta threshold (default 0.4)")
        default = plans.ADAPTIVE_STRENGTH if name == "shared" else plans.SOFT_STRENGTH
        parser.add_argument("--layers", metavar="A-B", help="decoder layers to steer (default: the middle zone)")
        parser.add_argument("--strength", type=float, default=default, help=f"lambda (default {default})")
    plan.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    layers = parse_layers(args.layers) if getattr(args, "layers", None) else None
    with open_store(args.db, read_only=True) as store:
        if args.plan_kind == "task-experts":
            plan = plans.task_experts(
                store,
                args.run,
                args.ref_run,
                normalise_lang(args.lang),
                tau=args.tau,
                layers=layers,
                strength=args.strength,
            )
        elif args.plan_kind == "language-experts":
            plan = plans.language_experts(
                store,
                args.run,
                normalise_lang(args.lang),
                ref=normalise_lang(args.ref),
                tau=args.tau,
                layers=layers,
                strength=args.strength,
            )
        elif args.plan_kind == "shared":
            plan = plans.shared_experts(
                store, args.run, parse_langs(args.langs), k=args.k, thr=args.thr, layers=layers, strength=args.strength
            )
        else:
            plan = plans.exclusive_experts(
                store, args.run, normalise_lang(args.lang), window=_window(args.window), k=args.k, thr=args.thr
            )
    if args.output is not None:
        plan.save(args.output)
    else:
        print(plan.to_json())
    print(plans.summary(plan) + (f" -> {args.output}" if args.output is not None else ""), file=sys.stderr)
    return 0


def _window(text: str) -> str | tuple[int, int]:
    if text in ZONES:
        return text
    if not text[:1].isdigit():
        raise PolyrouteError(f"--window takes early, middle, late or A-B, not {text!r}")
    return parse_layers(text)
