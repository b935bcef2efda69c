"""The `polyroute` command: trace a corpus into the store, list runs and corpora, look up languages,
analyse a run, query the store with SQL, build the demo store.

Bad input ends with one line, `polyroute: error: <problem>: <fix>`, and exit code 2; nothing
already stored is changed by a failed command, and a store file the command created is removed
again unless it holds a run to resume. `main` is the one place that turns failures into that line.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moe_core.errors import PolyrouteError, RemoteError
from moe_core.languages import parse_langs
from polyroute import (
    DEFAULT_DB,
    adapt_cli,
    analyze_cli,
    default_db,
    demo_cli,
    eval_cli,
    exchange_cli,
    plan_cli,
    serve_cli,
    steer_cli,
    upgrade_cli,
)
from polyroute.arguments import Parser, device, positive_int
from polyroute.output import emit_rows, quiet_libraries
from store import StoreError
from store.connection import discard_if_unused
from store.errors import StoreFull

EXIT_USAGE = 2
EXIT_BUG = 1
DEBUG_ENV = "POLYROUTE_DEBUG"  # set to 1 to see the traceback of an unexpected error


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="polyroute", description="Capture and explore how Mixture-of-Experts models route languages.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    trace = commands.add_parser("trace", help="run a model over a parallel corpus and store its routing")
    trace.add_argument("--model", type=Path, help="folder of a transformers MoE checkpoint (unless --backend URL)")
    _add_corpus(trace)
    trace.add_argument("--batch-size", type=positive_int, default=8, help="sequences per forward pass (default 8)")
    trace.add_argument("--save-logits", action="store_true", help="also store every token's router logits")
    trace.add_argument(
        "--resume", type=positive_int, metavar="RUN_ID", help="finish an interrupted run with its own settings"
    )
    trace.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    trace.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16 (default auto)")
    trace.add_argument("--max-tokens", type=positive_int, default=512, help="truncate longer texts (default 512)")
    trace.add_argument("--template", default="plain", choices=["plain", "chat"], help="wrap texts in the chat template")
    trace.add_argument("--model-id", help="name of the model in the store (default: the folder name)")
    serve_cli.add_client_args(trace, sharded=True)
    _add_db(trace)

    corpus = commands.add_parser("corpus", help="the parallel corpora Polyroute reads: list them, show one")
    corpus_commands = corpus.add_subparsers(dest="corpus_command", required=True, metavar="ACTION")
    corpus_list = corpus_commands.add_parser("list", help="the built-in corpus, the benchmarks, and stored corpora")
    _add_db(corpus_list)
    _add_format(corpus_list)
    show = corpus_commands.add_parser("show", help="print a corpus's aligned texts")
    show.add_argument("name", metavar="CORPUS", help=CORPUS_HELP)
    show.add_argument("--langs", help="comma-separated FLORES-200 codes (default: every language it has)")
    show.add_argument("--limit", type=positive_int, default=5, help="show the first N items (default 5)")
    _add_selection(show)
    _add_format(show)

    langs = commands.add_parser("languages", help="the FLORES-200 languages with their family and resource class")
    langs.add_argument("--family", help="only this family, e.g. Indo-European (case-insensitive)")
    langs.add_argument("--script", help="only this script, e.g. Cyrl")
    langs.add_argument("--resource-class", type=int, choices=range(6), help="only this class (0-5, Joshi et al.)")
    _add_format(langs)

    runs = commands.add_parser("runs", help="list the runs in the store")
    _add_db(runs)
    _add_format(runs)

    analyze_cli.add_parser(commands, _add_db)
    demo_cli.add_parser(commands, _add_db)
    plan_cli.add_parser(commands, _add_db)
    steer_cli.add_parser(commands, _add_db)
    eval_cli.add_parser(commands, _add_db)
    adapt_cli.add_parser(commands, _add_db)
    serve_cli.add_parser(commands, _add_db)
    upgrade_cli.add_parser(commands, _add_db)
    exchange_cli.add_parser(commands, _add_db)

    sql = commands.add_parser("sql", help="run one read-only SQL query on the store")
    sql.add_argument("query", help='for example "SELECT lang, count(*) FROM sequences GROUP BY lang"')
    sql.add_argument("--max-rows", type=positive_int, default=1000, help="show at most this many rows (default 1000)")
    _add_db(sql)
    _add_format(sql)
    return parser


CORPUS_HELP = (
    "builtin, a benchmark from a local copy (flores_plus:DIR, belebele:DIR, mgsm:DIR, xquad:DIR, polymath:DIR), "
    "the same names without :DIR to read the Hugging Face Hub, or a .jsonl/.csv/.tsv/.parquet file "
    "with item_id, lang, text (`polyroute corpus list`)"
)


def _add_corpus(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", help=CORPUS_HELP)
    parser.add_argument("--langs", help="comma-separated FLORES-200 codes, e.g. eng_Latn,deu_Latn")
    parser.add_argument("--limit", type=positive_int, help="trace only the first N items of the corpus")
    _add_selection(parser)


def _add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", help="the corpus split: train|heldout (builtin), dev|devtest (flores_plus) ...")
    parser.add_argument(
        "--require-aligned", action="store_true", help="keep only items present in every chosen language"
    )


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, default=None, help=f"store file (default $POLYROUTE_DB or {DEFAULT_DB})")


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", default="table", choices=["table", "csv", "json"], help="output format")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure ends here as one line on stderr and its exit code."""
    try:
        args = build_parser().parse_args(argv)
        if "db" in args:
            args.db = args.db or default_db()
        return _run_leaving_no_empty_store(args)
    except (PolyrouteError, StoreError) as error:
        return _fail(str(error))
    except BrokenPipeError:  # the reader (`head`, a closed pager) stopped early: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as error:  # a file or folder the command needed
        return _fail(_describe_os_error(error))
    except Exception as error:
        if os.environ.get(DEBUG_ENV):
            raise
        print(
            f"polyroute: internal error: {type(error).__name__}: {_first_line(error)}. This is a bug in Polyroute, "
            f"not in your input: please report it as a Polyroute issue with the command you ran (rerun with "
            f"{DEBUG_ENV}=1 for the traceback); the store keeps everything written before",
            file=sys.stderr,
        )
        return EXIT_BUG
    except KeyboardInterrupt:
        print("\npolyroute: interrupted", file=sys.stderr)
        return 130


def _fail(message: str) -> int:
    print(f"polyroute: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_USAGE


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else "(no message)"


# errno -> what to do about it, for the files and folders a command reads or creates.
_OS_FIXES = {
    errno.ENOSPC: "free some space, or pass --db a file on another disk",
    errno.EDQUOT: "free some space, or pass --db a file on another disk",
    errno.EACCES: "choose a file or folder you may use, or change its permissions",
    errno.EPERM: "choose a file or folder you may use, or change its permissions",
    errno.EROFS: "pass --db a file on a writable disk",
    errno.EEXIST: "a file stands where a folder is needed: choose another path",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "that is a folder: give a file",
    errno.ENOENT: "check the path",
}


def _describe_os_error(error: OSError) -> str:
    """`<path>: <what happened>; <fix>` for an operating-system error on a file."""
    where = f"{error.filename}: " if error.filename else ""
    fix = _OS_FIXES.get(error.errno or 0, "check the path, its permissions and the free space on its disk")
    return f"{where}{error.strerror or error}; {fix}"


def _run_leaving_no_empty_store(args: argparse.Namespace) -> int:
    """Run the command; a store file that it created is removed again if the command fails before
    storing a run (a run, even unfinished, stays for `--resume`)."""
    db: Path | None = args.db if "db" in args else None
    new_store = db is not None and not db.exists()
    code = EXIT_BUG
    try:
        code = _dispatch(args)
        return code
    finally:
        if new_store and code != 0 and db is not None:
            discard_if_unused(db)


# Commands whose module parses and runs them (`add_parser`, `run`).
_COMMAND_MODULES: dict[str, Any] = {
    "analyze": analyze_cli,
    "demo": demo_cli,
    "plan": plan_cli,
    "steer": steer_cli,
    "eval": eval_cli,
    "adapt": adapt_cli,
    "serve": serve_cli,
    "upgrade": upgrade_cli,
    "export": exchange_cli,
    "import": exchange_cli,
}


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in _COMMAND_MODULES:
        return int(_COMMAND_MODULES[args.command].run(args))
    if args.command == "trace":
        return _trace(args)
    if args.command == "runs":
        return _runs(args)
    if args.command == "corpus":
        return _corpus_list(args) if args.corpus_command == "list" else _corpus_show(args)
    if args.command == "languages":
        return _languages(args)
    return _sql(args)


def _trace(args: argparse.Namespace) -> int:
    quiet_libraries()
    if args.corpus:
        _note_hub(args.corpus)
    from tqdm import tqdm

    from moe_core.backends.options import HFOptions
    from polyroute.tracing import TraceRequest, resume_trace, start_trace

    bars: list[tqdm[Any]] = []
    started: list[int] = []
    servers = serve_cli.servers(args, sharded=True)

    def progress(run_id: int, n_sequences: int, n_tokens: int) -> Any:
        started.append(run_id)
        bar = tqdm(total=n_sequences, unit="seq", desc=f"run {run_id}", dynamic_ncols=True, file=sys.stderr)
        bars.append(bar)
        return lambda sequences, tokens: bar.update(sequences)

    try:
        if args.resume is not None:
            ignored = [f"--{name}" for name in ("model", "corpus", "langs", "split") if getattr(args, name) is not None]
            if ignored:
                print(
                    f"note: {', '.join(ignored)} ignored: run {args.resume} resumes with its own settings",
                    file=sys.stderr,
                )
            outcome = resume_trace(args.db, args.resume, progress, servers=servers, token=args.token)
        else:
            missing = [name for name in ("corpus", "langs") if getattr(args, name) is None]
            if args.model is None and not servers:
                missing.insert(0, "model (or --backend URL)")
            if missing:
                raise PolyrouteError(f"trace needs --{', --'.join(missing)} (or --resume RUN_ID)")
            options = HFOptions(
                device=args.device,
                dtype=args.dtype,
                max_tokens=args.max_tokens,
                template=args.template,
                model_id=args.model_id,
            )
            request = TraceRequest(
                db=args.db,
                model=args.model,
                servers=servers,
                token=args.token,
                corpus=args.corpus,
                langs=parse_langs(args.langs),
                split=args.split,
                require_aligned=args.require_aligned,
                limit=args.limit,
                batch_size=args.batch_size,
                save_logits=args.save_logits,
                options=options,
            )
            outcome = start_trace(request, progress)
    except KeyboardInterrupt:
        hint = f": finish it with `polyroute trace --resume {started[0]} --db {args.db}`" if started else ""
        print(f"\npolyroute: interrupted{hint}", file=sys.stderr)
        return 130
    except StoreFull as error:
        if not started:
            raise
        raise StoreFull(
            f"{error}: finish run {started[0]} with `polyroute trace --resume {started[0]} --db {args.db}` once "
            "there is room"
        ) from error
    except RemoteError as error:
        if not started:
            raise
        # The batches that arrived are stored; the run picks up there, on the same or another server.
        raise RemoteError(
            f"{error}; run {started[0]} keeps what arrived: finish it with `polyroute trace --resume {started[0]} "
            f"--db {args.db}` (add --backend URL if the server moved)"
        ) from error
    finally:
        for bar in bars:
            bar.close()
    if outcome.already_complete:
        print(f"run {outcome.run_id} is already complete; nothing to do")
        return 0
    if outcome.n_truncated:
        print(f"warning: {outcome.n_truncated} texts were longer than --max-tokens and were truncated", file=sys.stderr)
    if outcome.n_unaligned:
        print(
            f"note: --require-aligned left out {outcome.n_unaligned} items that some chosen language lacks",
            file=sys.stderr,
        )
    if outcome.missing:
        item, lang = outcome.missing[0]
        print(
            f"warning: {len(outcome.missing)} (item, language) pairs are missing from the corpus "
            f"(first: item {item} in {lang}); those items were traced in the languages they have",
            file=sys.stderr,
        )
    print(f"run {outcome.run_id}: stored {outcome.n_sequences} sequences, {outcome.n_tokens} tokens in {args.db}")
    return 0


def _corpus_list(args: argparse.Namespace) -> int:
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


def _corpus_show(args: argparse.Namespace) -> int:
    from moe_core.corpora import load_corpus

    wanted = parse_langs(args.langs) if args.langs else None
    quiet_libraries()
    _note_hub(args.name)
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


def _languages(args: argparse.Namespace) -> int:
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


def _runs(args: argparse.Namespace) -> int:
    from polyroute.run_status import INTERRUPTED, interrupted_note, shown_status
    from store import open_store
    from store.queries import list_runs

    with open_store(args.db, read_only=True) as store:
        runs = list_runs(store)
    statuses = {run.run_id: shown_status(run) for run in runs}
    columns = ["run_id", "kind", "model_id", "corpus_id", "langs", "status", "sequences", "tokens", "created_at"]
    rows = [
        (
            run.run_id,
            run.kind,
            run.model_id,
            run.corpus_id,
            ",".join(run.params.get("langs", [])),
            statuses[run.run_id],
            f"{run.n_stored}/{run.n_planned}",
            run.n_tokens,
            run.created_at.strftime("%Y-%m-%d %H:%M"),
        )
        for run in runs
    ]
    emit_rows(columns, rows, args.format)
    for run in runs:
        status = statuses[run.run_id]
        if run.kind == "trace" and status in (INTERRUPTED, "failed"):
            why = interrupted_note(run) if status == INTERRUPTED else "it stopped on an error"
            print(
                f"run {run.run_id} is {status} ({why}): finish it with `polyroute trace --resume {run.run_id} "
                f"--db {args.db}`",
                file=sys.stderr,
            )
    return 0


def _sql(args: argparse.Namespace) -> int:
    from store.sandbox import run_sql

    result = run_sql(args.db, args.query, max_rows=args.max_rows)
    emit_rows(result.columns, result.rows, args.format)
    if result.truncated:
        print(f"(showing the first {args.max_rows} rows; raise --max-rows for more)", file=sys.stderr)
    return 0


def _note_hub(corpus: str) -> None:
    """A benchmark named without a local copy is downloaded: say so, since it can take a while (or fail slowly)."""
    from moe_core.corpora import BENCHMARKS

    if corpus in BENCHMARKS:
        print(
            f"note: reading {BENCHMARKS[corpus].title} from the Hugging Face Hub "
            f"(without a network this fails after the Hub's retries; --corpus {corpus}:DIR reads a local copy)",
            file=sys.stderr,
        )


if __name__ == "__main__":
    raise SystemExit(main())
