"""The options several commands share, each declared in one place: the store (`--db`), the output
format, the corpus and its selection, and a model on a `polyroute serve` server (`--backend URL`,
`--token`) instead of a local folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from moe_core.errors import PolyrouteError
from polyroute import DEFAULT_DB
from polyroute.cli.arguments import positive_int

ENGINES = ("hf", "vllm")
TOKEN_ENV = "POLYROUTE_TOKEN"

CORPUS_HELP = (
    "builtin, a benchmark from a local copy (flores_plus:DIR, belebele:DIR, mgsm:DIR, xquad:DIR, polymath:DIR), "
    "the same names without :DIR to read the Hugging Face Hub, or a .jsonl/.csv/.tsv/.parquet file "
    "with item_id, lang, text (`polyroute corpus list`)"
)


def add_corpus(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", help=CORPUS_HELP)
    parser.add_argument("--langs", help="comma-separated FLORES-200 codes, e.g. eng_Latn,deu_Latn")
    parser.add_argument("--limit", type=positive_int, help="trace only the first N items of the corpus")
    add_selection(parser)


def add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", help="the corpus split: train|heldout (builtin), dev|devtest (flores_plus) ...")
    parser.add_argument(
        "--require-aligned", action="store_true", help="keep only items present in every chosen language"
    )


def add_db(parser: argparse.ArgumentParser, *, default: object = None) -> None:
    """`--db FILE`: every command that reads or writes a store takes it this way (`main` fills in the default).
    A subcommand passes `default=argparse.SUPPRESS`, so that `--db` given before it is kept."""
    parser.add_argument("--db", type=Path, default=default, help=f"store file (default $POLYROUTE_DB or {DEFAULT_DB})")


def add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", default="table", choices=["table", "csv", "json"], help="output format")


def add_client_args(parser: argparse.ArgumentParser, *, sharded: bool) -> None:
    """`--backend` and `--token` for commands that can run their model on `polyroute serve`."""
    several = " (several, comma-separated, share the run by language)" if sharded else ""
    parser.add_argument(
        "--backend",
        default="hf",
        help=f"hf (the model folder, here; default) or the URL of a `polyroute serve`, http://HOST:PORT{several}",
    )
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV), help=f"the server's bearer token (${TOKEN_ENV})")


def servers(args: argparse.Namespace, *, sharded: bool) -> tuple[str, ...]:
    """The server URLs `--backend` names; none for the local hf backend."""
    if args.backend == "hf":
        return ()
    urls = tuple(url.strip() for url in args.backend.split(",") if url.strip())
    if not urls or any(url in ENGINES for url in urls):
        raise PolyrouteError(f"--backend {args.backend}: give hf, or server URLs like http://gpu-box:8765")
    if len(urls) > 1 and not sharded:
        raise PolyrouteError(f"--backend names {len(urls)} servers; this command runs on one: give one URL")
    return urls


def model_or_server(args: argparse.Namespace) -> Path | Any:
    """`--model DIR` (loaded later by the job), or the one server `--backend URL` names, connected."""
    urls = servers(args, sharded=False)
    if urls and args.model is not None:
        raise PolyrouteError("give --model or --backend URL, not both: a server runs the model it was started with")
    if urls:
        from moe_core.backends.remote import RemoteBackend

        return RemoteBackend(urls[0], token=args.token)
    if args.model is None:
        raise PolyrouteError("no model: pass --model DIR, or --backend URL of a `polyroute serve`")
    return args.model


def note_hub(corpus: str) -> None:
    """A benchmark named without a local copy is downloaded: say so, since it can take a while (or fail slowly)."""
    from moe_core.corpora import BENCHMARKS

    if corpus in BENCHMARKS:
        print(
            f"note: reading {BENCHMARKS[corpus].title} from the Hugging Face Hub "
            f"(without a network this fails after the Hub's retries; --corpus {corpus}:DIR reads a local copy)",
            file=sys.stderr,
        )
