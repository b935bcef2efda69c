"""`polyroute corpus list|show`: the parallel corpora Polyroute reads."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from moe_core.languages import parse_langs
from polyroute.cli.arguments import positive_int
from polyroute.cli.options import CORPUS_HELP, add_db, add_format, add_selection, note_hub
from polyroute.cli.output import emit_rows


def add_parser(commands: Any) -> None:
    corpus = commands.add_parser("corpus", help="the parallel corpora Polyroute reads: list them, show one")
    corpus_commands = corpus.add_subparsers(dest="corpus_command", required=True, metavar="ACTION")
    corpus_list = corpus_commands.add_parser("list", help="the built-in corpus, the benchmarks, and stored corpora")
    add_db(corpus_list)
    add_format(corpus_list)
    corpus_list.set_defaults(handler=run_list)
    show = corpus_commands.add_parser("show", help="print a corpus's aligned texts")
    show.add_argument("name", metavar="CORPUS", help=CORPUS_HELP)
    show.add_argument("--langs", help="comma-separated FLORES-200 codes (default: every language it has)")
    show.add_argument("--limit", type=positive_int, default=5, help="show the first N items (default 5)")
    add_selection(show)
    add_format(show)
    show.set_defaults(handler=run_show)


def run_list(args: argparse.Namespace) -> int:
    from moe_core.corpora import BENCHMARKS, load_corpus

    builtin = load_corpus("builtin")
    columns = ["name", "what", "languages", "splits", "read from"]
    rows: list[tuple[Any, ...]] = [
        (
            "builtin",
            f"{len(builtin.items)} UI sentences ({builtin.meta['packages']})",
            len(builtin.langs),
            "train, heldout",
            "the installed packages",
        )
    ]
    rows += [
        (
            name,
            benchmark.title,
            len(benchmark.hub_langs) if benchmark.hub_langs else "FLORES-200 codes",
            ", ".join(benchmark.splits),
            f"{name}:DIR (local copy) or {name} (Hub: {benchmark.hub_id})",
        )
        for name, benchmark in BENCHMARKS.items()
    ]
    if args.db.exists():
        from store import open_store
        from store.queries import list_corpora

        with open_store(args.db, read_only=True) as store:
            rows += [(c.corpus_id, f"stored: {c.source}", len(c.langs), "", f"{args.db}") for c in list_corpora(store)]
    emit_rows(columns, rows, args.format)
    return 0


def run_show(args: argparse.Namespace) -> int:
    from moe_core.corpora import load_corpus
    from polyroute.workflows.common import quiet_libraries

    wanted = parse_langs(args.langs) if args.langs else None
    quiet_libraries()
    note_hub(args.name)
    corpus = load_corpus(args.name, wanted, args.split)
    langs = wanted or corpus.langs
    rows = corpus.select(langs, args.limit, aligned=args.require_aligned)
    short = args.format == "table"
    emit_rows(
        ["item_id", "lang", "text"],
        [(row.item_id, row.lang, _one_line(row.text, 90 if short else None)) for row in rows],
        args.format,
    )
    unaligned = corpus.unaligned(langs)
    print(
        f"{corpus.corpus_id}: {len(corpus.items)} items in {len(corpus.langs)} languages from {corpus.source}; "
        f"template {corpus.template!r}; {len(unaligned)} items lack some of the {len(langs)} languages shown"
        + (" (left out)" if args.require_aligned and unaligned else ""),
        file=sys.stderr,
    )
    return 0


def _one_line(text: str, width: int | None) -> str:
    flat = " ".join(text.split()) if width else text
    return flat if width is None or len(flat) <= width else flat[: width - 1] + "…"
