"""`polyroute languages`: the FLORES-200 languages with their family, script and resource class."""

from __future__ import annotations

import argparse
from typing import Any

from moe_core.errors import PolyrouteError
from polyroute.cli.options import add_format
from polyroute.cli.output import emit_rows


def add_parser(commands: Any) -> None:
    langs = commands.add_parser("languages", help="the FLORES-200 languages with their family and resource class")
    langs.add_argument("--family", help="only this family, e.g. Indo-European (case-insensitive)")
    langs.add_argument("--script", help="only this script, e.g. Cyrl")
    langs.add_argument("--resource-class", type=int, choices=range(6), help="only this class (0-5, Joshi et al.)")
    add_format(langs)
    langs.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from moe_core.languages import languages

    chosen = [
        lang
        for lang in languages().values()
        if (args.family is None or lang.family.casefold() == args.family.casefold())
        and (args.script is None or lang.script.casefold() == args.script.casefold())
        and (args.resource_class is None or lang.resource_class == args.resource_class)
    ]
    if not chosen:
        families = sorted({lang.family for lang in languages().values()})
        raise PolyrouteError(f"no language matches; families are: {', '.join(families)}")
    columns = ["lang", "name", "iso639_1", "script", "family", "branch", "resource_class"]
    emit_rows(columns, [tuple(getattr(lang, c) or "" for c in columns) for lang in chosen], args.format)
    return 0
