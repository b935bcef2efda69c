"""Evaluation runs, end to end: benchmark corpus -> backend (unsteered, steered, swept) -> store.

Like trace.py, the composition root of one job: it opens the store first (a locked store fails
before a model loads), checks the corpus and plans before generating, records the run with every
setting that decides its numbers, and marks it failed (or cancelled) when it stops early.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

from moe_core.backends.base import Backend, GenerationParams
from moe_core.backends.options import HFOptions
from moe_core.errors import PolyrouteError
from moe_core.evaluation.runner import check_plans, evaluate
from moe_core.evaluation.sweeps import Sweep, build_variants
from moe_core.evaluation.tasks import get_task, read_items, task_corpus
from moe_core.records import TaskScore
from moe_core.steering.plan import SteeringPlan
from polyroute.workflows.common import hf_backend, mark_stopped, record_corpus
from store import Store, open_store
from store import writer as w

ProgressFactory = Callable[[int, int], Callable[[int], None]]  # (run_id, generations) -> on_batch(n)


@dataclass(frozen=True, kw_only=True)
class EvalRequest:
    db: Path
    task: str
    model: Path | Backend
    langs: list[str]
    corpus: str | None = None  # None: the task's own corpus (the built-in one for task heldout)
    split: str | None = None
    limit: int | None = None
    plan: Path | SteeringPlan | None = None  # a plan file, or a plan the caller built
    sweep: Sweep | None = None
    max_new_tokens: int | None = None  # None: the task's own budget
    batch_size: int = 8
    options: HFOptions = field(default_factory=HFOptions)


@dataclass(frozen=True, kw_only=True)
class EvalOutcome:
    run_id: int
    scores: list[TaskScore]
    n_items: int


def run_evaluation(
    request: EvalRequest, progress: ProgressFactory | None = None, *, store: Store | None = None
) -> EvalOutcome:
    """Create an evaluation run, generate and score every variant, and store the results, in `store`
    when the caller holds it open (the app) or else in the store file `request.db`."""
    task = get_task(request.task)
    if request.limit is not None and request.limit < 1:
        raise PolyrouteError("{limit} must be at least 1")
    if request.max_new_tokens is not None and request.max_new_tokens < 1:
        raise PolyrouteError("{max_new_tokens} must be at least 1")
    plan = SteeringPlan.load(request.plan) if isinstance(request.plan, Path) else request.plan
    if request.sweep is not None and plan is None:
        raise PolyrouteError(f"{{sweep}} {request.sweep} sweeps a plan: pass {{plan}} plan.json too")
    corpus_spec = task_corpus(task, request.corpus)
    with nullcontext(store) if store else open_store(request.db) as store:
        items = read_items(task, corpus_spec, request.langs, request.limit, request.split)
        corpus, rows = items.corpus, items.rows
        backend = request.model if isinstance(request.model, Backend) else hf_backend(request.model, request.options)
        info = backend.info()
        variants = build_variants(plan, request.sweep, n_layers=info.n_layers, moe_layers=info.moe_layers)
        check_plans(backend, variants)
        params = GenerationParams(max_new_tokens=request.max_new_tokens or task.max_new_tokens)
        model_id = w.ensure_model(store, info)
        record_corpus(store, corpus)
        n_planned = len(rows) * len(variants)
        run_id = w.create_run(
            store,
            kind="evaluation",
            model_id=model_id,
            corpus_id=corpus.corpus_id,
            backend=backend.name,
            params={
                "task": task.name,
                "corpus": corpus_spec,
                "split": request.split,
                "langs": request.langs,
                "limit": request.limit,
                "max_new_tokens": params.max_new_tokens,
                "decoding": asdict(params),
                "batch_size": request.batch_size,
                "prompt_template": corpus.template,
                "plan_source": str(request.plan) if isinstance(request.plan, Path) else None,
                "plan": None if plan is None else plan.to_dict(),
                "sweep": None if request.sweep is None else str(request.sweep),
                "variants": [name for name, _ in variants],
                "model_source": info.source,
            },
            n_planned=n_planned,
            weight_bound=info.weight_bound,
        )
        try:
            on_batch = progress(run_id, n_planned) if progress else None
            scores, answers = evaluate(
                backend,
                task,
                rows,
                variants,
                params,
                sources=items.sources,
                batch_size=request.batch_size,
                on_batch=on_batch,
            )
            w.write_evaluation(store, run_id, scores, answers)
        except BaseException as error:
            mark_stopped(store, run_id, error)
            raise
        w.set_run_status(store, run_id, "complete")
        return EvalOutcome(run_id=run_id, scores=scores, n_items=len({row.item_id for row in rows}))
