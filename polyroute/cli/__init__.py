"""The `polyroute` command: trace a corpus into the store, list runs and corpora, look up languages,
analyse a run, export and import runs, query the store with SQL, build the demo store. One module per command in this
package (`add_parser(commands)` and the handler it sets); the shared flags are in `options.py`.

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

from moe_core.errors import PolyrouteError, flag
from polyroute import default_db
from polyroute.cli import (
    adapt,
    analyze,
    corpus,
    demo,
    eval,
    export,
    import_run,
    languages,
    plan,
    runs,
    serve,
    sql,
    steer,
    trace,
    upgrade,
)
from polyroute.cli.arguments import Parser
from store import StoreError
from store.connection import discard_if_unused

# The commands in the order `polyroute --help` lists them. Each module's `add_parser(commands)` declares
# its flags and sets its handler (`set_defaults(handler=run)`), which `main` calls.
COMMANDS = (
    trace,
    corpus,
    languages,
    runs,
    analyze,
    demo,
    plan,
    steer,
    eval,
    adapt,
    serve,
    upgrade,
    export,
    import_run,
    sql,
)

EXIT_USAGE = 2
EXIT_BUG = 1
DEBUG_ENV = "POLYROUTE_DEBUG"  # set to 1 to see the traceback of an unexpected error


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="polyroute", description="Capture and explore how Mixture-of-Experts models route languages.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every failure ends here as one line on stderr and its exit code."""
    try:
        args = build_parser().parse_args(argv)
        if "db" in args:
            args.db = args.db or default_db()
        return _run_leaving_no_empty_store(args)
    except (PolyrouteError, StoreError) as error:  # the domain names its parameters; the CLI says them as its flags
        return _fail(error.named(flag))
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
        code = int(args.handler(args))
        return code
    finally:
        if new_store and code != 0 and db is not None:
            discard_if_unused(db)
