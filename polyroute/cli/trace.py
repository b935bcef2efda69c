"""`polyroute trace`: run a model over a parallel corpus and store its routing (a new run, or
`--resume RUN_ID`); the job itself is `polyroute.workflows.trace`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from moe_core.errors import PolyrouteError, RemoteError
from moe_core.languages import parse_langs
from polyroute.cli.arguments import device, positive_int
from polyroute.cli.options import add_client_args, add_corpus, add_db, note_hub
from polyroute.cli.options import servers as servers_of
from store.errors import StoreFull


def add_parser(commands: Any) -> None:
    trace = commands.add_parser("trace", help="run a model over a parallel corpus and store its routing")
    trace.add_argument("--model", type=Path, help="folder of a transformers MoE checkpoint (unless --backend URL)")
    add_corpus(trace)
    trace.add_argument("--batch-size", type=positive_int, default=8, help="sequences per forward pass (default 8)")
    trace.add_argument("--save-logits", action="store_true", help="also store every token's router logits")
    trace.add_argument(
        "--resume", type=positive_int, metavar="RUN_ID", help="finish an interrupted run with its own settings"
    )
    trace.add_argument(
        "--plan",
        type=Path,
        metavar="PLAN.json",
        help="steer the routers while tracing with a plan from `polyroute plan ... -o PLAN.json` (a steered run)",
    )
    trace.add_argument("--device", type=device, default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    trace.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16 (default auto)")
    trace.add_argument("--max-tokens", type=positive_int, default=512, help="truncate longer texts (default 512)")
    trace.add_argument("--template", default="plain", choices=["plain", "chat"], help="wrap texts in the chat template")
    trace.add_argument("--model-id", help="name of the model in the store (default: the folder name)")
    add_client_args(trace, sharded=True)
    add_db(trace)
    trace.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from polyroute.workflows.common import quiet_libraries

    quiet_libraries()
    if args.corpus:
        note_hub(args.corpus)
    from tqdm import tqdm

    from moe_core.backends.options import HFOptions
    from moe_core.steering.plan import PlanError, SteeringPlan
    from polyroute.workflows.trace import TraceRequest, resume_trace, start_trace

    plan = None
    if args.plan is not None:
        if not args.plan.is_file():
            raise PolyrouteError(f"no plan at {args.plan}: make one with `polyroute plan ... -o {args.plan}`")
        try:
            plan = SteeringPlan.load(args.plan)
        except PlanError as error:
            raise PlanError(f"--plan {args.plan}: {error}") from error

    bars: list[tqdm[Any]] = []
    started: list[int] = []
    servers = servers_of(args, sharded=True)

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
            outcome = resume_trace(args.db, args.resume, progress, servers=servers, token=args.token, plan=plan)
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
                plan=plan,
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
    steered = " (steered)" if plan is not None else ""
    stored = f"{outcome.n_sequences} sequences, {outcome.n_tokens} tokens"
    print(f"run {outcome.run_id}{steered}: stored {stored} in {args.db}")
    return 0
