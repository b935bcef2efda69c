"""Trace runs, end to end: corpus -> backend -> store, new or resumed.

This is the composition root shared by the CLI and the app: the one place that joins the engine
(`moe_core`, which never touches the store) with the store (which never runs a model). It opens
the store first, so a locked or damaged store fails before a model is loaded, and it marks a run
`failed` or `cancelled` (resumable either way) whenever it stops early.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

from moe_core.backends.base import Backend
from moe_core.backends.options import HFOptions
from moe_core.corpora import ParallelCorpus, TextRow, load_corpus
from moe_core.errors import ParameterError, PolyrouteError
from moe_core.pipeline import PlannedSequence, Progress, TracedBatch, plan_trace, run_trace
from moe_core.steering.plan import PlanError, SteeringPlan
from polyroute.run_status import writer_record
from polyroute.workflows.common import connect, mark_stopped, record_corpus
from store import Store, open_store
from store import queries as q
from store import writer as w

ProgressFactory = Callable[[int, int, int], Progress]  # (run_id, sequences, tokens) -> callback


@dataclass(frozen=True, kw_only=True)
class TraceRequest:
    """A new trace run: which model, which corpus and languages, how to batch."""

    db: Path
    model: Path | Backend | None = None  # a checkpoint folder (run with the hf backend), or a running backend
    servers: tuple[str, ...] = ()  # or `polyroute serve` URLs instead: the run is shared among them by language
    token: str | None = None  # the servers' bearer token
    corpus: str | Path  # a corpus name: builtin, flores_plus:DIR, belebele, FILE.jsonl ... (moe_core.corpora)
    langs: list[str]
    split: str | None = None
    require_aligned: bool = False  # keep only items present in every language
    limit: int | None = None
    batch_size: int = 8
    save_logits: bool = False
    plan: SteeringPlan | None = None  # steer the routers while tracing (a steered run; the hf backend)
    options: HFOptions = field(default_factory=HFOptions)


@dataclass(frozen=True, kw_only=True)
class TraceOutcome:
    run_id: int
    n_sequences: int  # traced now
    n_tokens: int
    n_truncated: int
    missing: list[tuple[str, str]]  # (item_id, lang) the corpus lacks among the chosen items
    n_unaligned: int = 0  # items left out by require_aligned because some language lacks them
    already_complete: bool = False


def start_trace(
    request: TraceRequest, progress: ProgressFactory | None = None, *, store: Store | None = None
) -> TraceOutcome:
    """Create a trace run and fill it, in `store` when the caller holds it open (the app) or else
    in the store file `request.db`."""
    if request.batch_size < 1:
        raise PolyrouteError("{batch_size} must be at least 1")
    if request.limit is not None and request.limit < 1:
        raise PolyrouteError("{limit} must be at least 1")
    # Servers answer at once, so an unreachable one fails before the store is touched; a local model
    # loads only once the store has opened (a locked store then fails before minutes of loading).
    servers = connect(request.model, request.options, request.servers, request.token) if request.servers else None
    with nullcontext(store) if store else open_store(request.db) as store:
        corpus = load_corpus(request.corpus, request.langs, request.split)
        rows = corpus.select(request.langs, request.limit, aligned=request.require_aligned)
        missing = [] if request.require_aligned else corpus.missing(request.langs, request.limit)
        backends = servers or connect(request.model, request.options)
        info = backends[0].info()
        if request.plan is not None:
            check_plan(request.plan, backends)
        model_id = w.ensure_model(store, info)
        record_corpus(store, corpus)
        plan = plan_trace(backends[0], [(row.item_id, row.lang, row.text) for row in rows])
        params = {
            "langs": request.langs,
            "corpus": str(request.corpus),
            "split": request.split,
            "require_aligned": request.require_aligned,
            "prompt_template": corpus.template,
            "limit": request.limit,
            "batch_size": request.batch_size,
            "save_logits": request.save_logits,
            "model_source": info.source,
            "servers": list(request.servers),
            "capture": ",".join(sorted({backend.capture_name for backend in backends})),  # which filled the routing
            "writer": writer_record(),  # a run left `running` by a dead writer shows as interrupted
            # A server loads its model with its own settings; local runs record how this one was loaded.
            **{
                f"hf_{key}": value
                for key, value in asdict(request.options).items()
                if key != "model_id" and not request.servers
            },
        }
        run_id = w.create_run(
            store,
            kind="trace",
            model_id=model_id,
            corpus_id=corpus.corpus_id,
            backend=backends[0].name,
            params=params,
            n_planned=len(plan.sequences),
            weight_bound=info.weight_bound,
            plan=None if request.plan is None else request.plan.to_json(),
        )
        fill_run(
            store, backends, run_id, plan.sequences, request.batch_size, request.save_logits, progress, request.plan
        )
        return TraceOutcome(
            run_id=run_id,
            n_sequences=len(plan.sequences),
            n_tokens=plan.n_tokens,
            n_truncated=plan.n_truncated,
            missing=missing,
            n_unaligned=len(corpus.unaligned(request.langs)) if request.require_aligned else 0,
        )


def resume_trace(
    db: Path,
    run_id: int,
    progress: ProgressFactory | None = None,
    *,
    servers: Sequence[str] = (),
    token: str | None = None,
    plan: SteeringPlan | None = None,
) -> TraceOutcome:
    """Trace the sequences of run `run_id` that are not stored yet, with the run's own settings (its
    steering plan too), on the servers it ran on (or on `servers`, when they moved), else on its
    local model folder. A `plan` given must be the run's own."""
    with open_store(db) as store:
        run = q.get_run(store, run_id)
        if run is None or run.kind != "trace":
            raise PolyrouteError(f"there is no trace run {run_id} in {db}: see `polyroute runs --db {db}`")
        own_plan = None if run.plan is None else SteeringPlan.from_json(run.plan)
        if plan is not None and plan != own_plan:
            was = "without a plan" if own_plan is None else "with another plan"
            raise ParameterError(
                f"run {run_id} was traced {was}: a resumed run keeps its own, so leave out {{plan}} "
                "(or start a new run)"
            )
        if run.status == "complete" and run.n_stored == run.n_planned:
            return TraceOutcome(
                run_id=run_id, n_sequences=0, n_tokens=0, n_truncated=0, missing=[], already_complete=True
            )
        params = run.params
        options = HFOptions(**{key[3:]: value for key, value in params.items() if key.startswith("hf_")})
        servers = tuple(servers or params.get("servers", ()))
        backends = connect(None if servers else Path(params["model_source"]), options, servers, token)
        if backends[0].info().config_hash != q.model_config_hash(store, run.model_id):
            where = ", ".join(servers) if servers else params["model_source"]
            raise PolyrouteError(f"the model at {where} changed since run {run_id} began; start a new run instead")
        assert run.corpus_id is not None
        source = q.corpus_source(store, run.corpus_id) or ("store", "store")
        corpus = ParallelCorpus(
            name=run.corpus_id,
            source=source[0],
            format=source[1],
            rows=tuple(TextRow(*row) for row in q.corpus_texts(store, run.corpus_id)),
        )
        rows = corpus.select(params["langs"], params["limit"], aligned=params.get("require_aligned", False))
        planned = plan_trace(backends[0], [(row.item_id, row.lang, row.text) for row in rows])
        if len(planned.sequences) != run.n_planned:
            raise PolyrouteError(
                f"run {run_id} planned {run.n_planned} sequences but now finds {len(planned.sequences)}"
            )
        if own_plan is not None:
            check_plan(own_plan, backends)
        stored = q.stored_seq_ids(store, run_id)
        remaining = [seq for seq in planned.sequences if seq.seq_id not in stored]
        w.set_run_status(store, run_id, "running")
        fill_run(store, backends, run_id, remaining, params["batch_size"], params["save_logits"], progress, own_plan)
        return TraceOutcome(
            run_id=run_id,
            n_sequences=len(remaining),
            n_tokens=sum(seq.n_tokens for seq in remaining),
            n_truncated=planned.n_truncated,
            missing=[] if params.get("require_aligned") else corpus.missing(params["langs"], params["limit"]),
        )


def fill_run(
    store: Store,
    backends: Sequence[Backend],
    run_id: int,
    sequences: Sequence[PlannedSequence],
    batch_size: int,
    save_logits: bool,
    progress: ProgressFactory | None,
    plan: SteeringPlan | None = None,
) -> None:
    """Trace and store `sequences` into run `run_id` (on several backends: shared by language; steered
    by `plan` when given), then mark it complete (or failed, or cancelled) and checkpoint."""
    batch_writer = w.BatchWriter(store, run_id)
    on_progress = progress(run_id, len(sequences), sum(s.n_tokens for s in sequences)) if progress else None

    def sink(group: Sequence[TracedBatch]) -> None:
        batch_writer.write(
            [([w.SequenceKey(s.seq_id, s.item_id, s.lang) for s in chunk], batch) for chunk, batch in group]
        )

    try:
        run_trace(
            backends,
            sequences,
            sink,
            batch_size=batch_size,
            save_logits=save_logits,
            plan=plan,
            on_progress=on_progress,
        )
    except BaseException as error:
        mark_stopped(store, run_id, error)
        raise
    finally:
        batch_writer.close()
    w.set_run_status(store, run_id, "complete")
    w.checkpoint(store)


def check_plan(plan: SteeringPlan, backends: Sequence[Backend]) -> None:
    """Refuse, before a run is created or resumed, a plan the backends cannot apply to a trace or
    one naming layers or experts their model does not have (a plan made for another model)."""
    refusing = [backend.name for backend in backends if not backend.steers_traces]
    if refusing:
        raise ParameterError(
            f"the {refusing[0]} backend cannot steer a trace: drop {{plan}}, or trace on a local model folder "
            "(the hf backend)"
        )
    info = backends[0].info()
    try:
        plan.check_against(
            n_layers=info.n_layers, moe_layers=info.moe_layers, n_experts=info.n_experts, top_k=info.top_k
        )
    except PlanError as error:
        raise ParameterError(f"{{plan}} does not fit {info.model_id}: {error}") from error
