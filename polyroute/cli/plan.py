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
from moe_core.steering.presets import PRESETS, preset_names
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
    plan = commands.add_parser(
        "plan",
        help="build a steering plan (JSON) from a stored run",
        description="Build a steering plan (JSON) from a stored run.",
        epilog=_presets_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = plan.add_subparsers(dest="plan_kind", required=True, metavar="KIND")
    for name, help_text in KINDS.items():
        parser = kinds.add_parser(name, help=help_text, description=help_text)
        parser.add_argument("--run", type=int, required=True, metavar="RUN_ID", help="the trace run (`polyroute runs`)")
        parser.add_argument("-o", "--output", type=Path, help="write the plan here (default: print it)")
        add_db(parser)
        if name in ("shared", "exclusive"):
            _add_share_flags(parser, preset_names("shared" if name == "shared" else "exclusive"))
        if name == "shared":
            parser.add_argument(
                "--langs", help="SRC,TGT,...: the source language first (default with --preset: its languages)"
            )
        else:
            parser.add_argument("--lang", required=True, help="the language, e.g. eng_Latn")
        if name == "exclusive":
            parser.add_argument(
                "--window",
                required=True,
                metavar="early|middle|late|A-B",
                help="layers to ablate in: a depth zone, or with --preset its published window of that name",
            )
            continue
        if name == "task-experts":
            parser.add_argument("--ref-run", type=int, required=True, help="a run of the same model over generic text")
        if name == "language-experts":
            parser.add_argument("--ref", default="eng_Latn", help="reference language (default eng_Latn)")
        if name != "shared":
            parser.add_argument("--tau", type=float, default=0.4, help="Delta threshold (default 0.4)")
        with_preset = "; with --preset its published band, scaled" if name == "shared" else ""
        parser.add_argument(
            "--layers", metavar="A-B", help=f"decoder layers to steer (default: the middle zone{with_preset})"
        )
        if name == "shared":  # left unset, so that a preset's lambda fills it
            help_text = f"lambda (default {plans.ADAPTIVE_STRENGTH}; with --preset the one published for SRC)"
            parser.add_argument("--strength", type=float, help=help_text)
        else:
            default = plans.SOFT_STRENGTH
            parser.add_argument("--strength", type=float, default=default, help=f"lambda (default {default})")
    plan.set_defaults(handler=run)


def _add_share_flags(parser: argparse.ArgumentParser, presets: tuple[str, ...]) -> None:
    """--preset, --k and --thr of the shared and exclusive plans: flags given override the preset."""
    parser.add_argument(
        "--preset",
        choices=presets,
        help="a published setting of 2601.14050 (see `polyroute plan --help`); flags given with it override it",
    )
    parser.add_argument(
        "--k", type=int, help=f"experts kept per language and layer (default {plans.SHARE_K}, or the preset's)"
    )
    parser.add_argument("--thr", type=float, help=f"share threshold (default {plans.SHARE_THR}, or the preset's)")


def _presets_help() -> str:
    """The presets, one line each, and how their windows are scaled (from `moe_core.steering.presets`)."""
    lines = ["presets (--preset NAME: 2601.14050's published settings, on Qwen3-30B-A3B's 48 MoE layers):"]
    for name, preset in PRESETS.items():
        named = zip(preset.window_names, preset.windows, strict=True)
        windows = ", ".join(f"{window} {first}-{last}" for window, (first, last) in named)
        lambdas = " or ".join(f"{value:g} ({lang} first)" for lang, value in preset.strengths)
        strength = f", lambda {lambdas}" if lambdas else ""
        lines.append(f"  {name:<18} {preset.kind}: k {preset.k}, thr {preset.thr}, layers {windows}{strength}")
    lines += [
        "On a model with Y MoE layers each window's first and last layer p becomes MoE layer",
        "round(p (Y - 1) / 47) (halves up): a 48-layer model gets the published windows. Flags given",
        "with a preset (--k, --thr, --layers, --strength, --langs, --window A-B) override it.",
    ]
    return "\n".join(lines)


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
                store,
                args.run,
                parse_langs(args.langs) if args.langs else None,
                k=args.k,
                thr=args.thr,
                layers=layers,
                strength=args.strength,
                preset=args.preset,
            )
        else:
            plan = plans.exclusive_experts(
                store,
                args.run,
                normalise_lang(args.lang),
                window=_window(args.window),
                k=args.k,
                thr=args.thr,
                preset=args.preset,
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
