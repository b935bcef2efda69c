"""Adaptation runs (RISE), end to end: a trace run's routing -> the selected experts -> training only
them on target-language text -> held-out loss per language before and after (and, given a task
corpus, the task's scores) -> an `adaptation` run in the store and an adapter folder (the trained
slices and a manifest) on disk.

The composition root of one job, shared by the CLI and the app, like trace.py: every input is
checked (the trace run, target, budget, ratios, corpora, the task, the model and that the run traced it)
before anything is written, so a bad request leaves the store as it was; the run's rows are
written in one transaction when training is done, and the run is marked failed if it stops early.
`select` previews the subnetwork from the store alone, without loading a model.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moe_core.adapt import AdaptProgress, LanguageLoss, ProgressCallback, TrainingLog, TrainSettings
from moe_core.adapt.task import TaskItems, score_task, task_items
from moe_core.analysis.rise import DEFAULT_RATIOS, ZONES, depth_zones
from moe_core.backends.options import HFOptions
from moe_core.corpora import BUILTIN, ParallelCorpus, load_corpus
from moe_core.errors import PolyrouteError
from moe_core.languages import normalise_lang
from moe_core.records import TaskScore
from polyroute.analyses import analyze_rise
from polyroute.run_data import RunData, Selection
from polyroute.workflows.common import mark_stopped, record_corpus
from store import Store, open_store
from store import queries as q
from store import writer as w


@dataclass(frozen=True, kw_only=True)
class Subnetwork:
    """The experts RISE selects for `target` from trace run `run_id`, with the map they sit on."""

    run_id: int
    model_id: str
    target: str
    budget: int
    ratios: tuple[float, float, float]
    alpha: float
    langs: list[str]  # the run's languages: the statistics the scores are computed over
    n_layers: int
    layers: list[int]  # decoder-layer indices with a router
    zones: list[str]  # zone of each of `layers`: shallow | middle | deep
    n_experts: int
    experts: list[w.AdaptedExpert]  # in selection order (rank 1 first)

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """(decoder layer, expert) of every selected expert, in selection order."""
        return [(e.layer, e.expert) for e in self.experts]


def select(
    store: Store,
    run_id: int,
    target: str,
    budget: int,
    ratios: tuple[float, float, float] = DEFAULT_RATIOS,
    alpha: float = 10.0,
) -> Subnetwork:
    """The RISE subnetwork of `target` from the activation frequencies of trace run `run_id`."""
    run = q.get_run(store, run_id)
    if run is None or run.kind != "trace":
        what = "no run" if run is None else f"run {run_id} is an {run.kind} run, and there is no trace run"
        raise PolyrouteError(f"{what} {run_id} to select experts from: choose a trace run (`polyroute runs`)")
    target = normalise_lang(target)
    data = RunData(store, run_id, Selection())
    available = len(data.layers) * data.layout.n_experts
    if budget > available:
        raise PolyrouteError(
            f"--budget {budget} is more than the {available} routed experts of {data.layout.model_id} "
            f"({len(data.layers)} MoE layers x {data.layout.n_experts}): choose 1-{available}"
        )
    result = analyze_rise(data, target=target, budget=budget, ratios=ratios, alpha=alpha)
    return Subnetwork(
        run_id=run_id,
        model_id=data.layout.model_id,
        target=target,
        budget=budget,
        ratios=ratios,
        alpha=alpha,
        langs=data.langs,
        n_layers=data.layout.n_layers,
        layers=data.layers,
        zones=[ZONES[z] for z in depth_zones(np.asarray(data.layers), data.layout.n_layers)],
        n_experts=data.layout.n_experts,
        experts=[w.AdaptedExpert(**row) for row in result.table("selected").records()],
    )


@dataclass(frozen=True, kw_only=True)
class AdaptRequest:
    """An adaptation: which model and trace run, the target and budget, the texts, how to train."""

    db: Path
    model: Path  # the checkpoint the trace run traced
    run_id: int  # the trace run whose routing selects the experts
    target: str
    budget: int
    ratios: tuple[float, float, float] = DEFAULT_RATIOS
    alpha: float = 10.0
    train_corpus: str = BUILTIN
    train_split: str | None = "train"
    eval_corpus: str = BUILTIN
    eval_split: str | None = "heldout"
    eval_langs: Sequence[str] | None = None  # default: every language of the trace run
    task: str | None = None  # a benchmark task (moe_core.evaluation.tasks) scored before and after, in eval_langs
    task_corpus: str | None = None  # its local copy, NAME:DIR (or NAME, from the Hub)
    task_limit: int | None = None  # score only the first N items
    settings: TrainSettings = field(default_factory=TrainSettings)
    out: Path | None = None  # the adapter folder (default: adapters/ beside the store)
    options: HFOptions = field(default_factory=HFOptions)


@dataclass(frozen=True, kw_only=True)
class AdaptOutcome:
    run_id: int  # the adaptation run
    adapter_dir: Path
    subnetwork: Subnetwork
    before: list[LanguageLoss]  # target first, then the other languages
    after: list[LanguageLoss]
    task_before: list[TaskScore]  # the task's scores, language by language (empty without a task)
    task_after: list[TaskScore]  # in the order of task_before
    training: TrainingLog
    n_trained: int  # weights trained


def start_adaptation(
    request: AdaptRequest, progress: ProgressCallback | None = None, *, store: Store | None = None
) -> AdaptOutcome:
    """Select, train, evaluate and record one adaptation, in `store` when the caller holds it open
    (the app) or else in the store file `request.db`."""
    # torch and transformers load only when a model trains: the app's pages import this module.
    from moe_core.adapt.checkpoint import save_adapter, slices_digest
    from moe_core.adapt.training import language_losses, train_subnetwork

    request.settings.check()
    with nullcontext(store) if store else open_store(request.db) as store:
        job = _prepare(store, request, progress)
        model, tokenizer, eval_texts = job.backend.model, job.tokenizer, job.eval_texts
        record_corpus(store, job.train_corpus)
        run_id = w.create_run(
            store,
            kind="adaptation",
            model_id=job.subnetwork.model_id,
            corpus_id=job.train_corpus.corpus_id,
            backend=job.backend.name,
            params=job.params,
            n_planned=len(job.subnetwork.experts),
            weight_bound=job.backend.info().weight_bound,
        )
        saved = False
        try:
            before = language_losses(model, tokenizer, eval_texts, stage="before", progress=progress)
            task_before, answers_before = score_task(job.backend, job.task, "before", progress)
            log = train_subnetwork(model, tokenizer, job.slices, job.train_texts, request.settings, progress)
            after = language_losses(model, tokenizer, eval_texts, stage="after", progress=progress)
            task_after, answers_after = score_task(job.backend, job.task, "after", progress)
            record = {
                **job.params,
                "adaptation_run": run_id,
                "config_hash": job.backend.info().config_hash,
                "training": asdict(log),
                "loss_before": {score.lang: score.loss for score in before},
                "loss_after": {score.lang: score.loss for score in after},
            }
            save_adapter(job.out, model, job.slices, record, slices_digest(job.base_values))
            saved = True
            w.write_adaptation(
                store,
                run_id,
                job.subnetwork.experts,
                [*_scores(before, "before"), *_scores(after, "after"), *task_before, *task_after],
                [*answers_before, *answers_after],
            )
        except BaseException as error:
            mark_stopped(store, run_id, error)
            if saved:
                shutil.rmtree(job.out, ignore_errors=True)  # an adapter whose run holds no rows would mislead
            raise
        w.set_run_status(store, run_id, "complete")
        return AdaptOutcome(
            run_id=run_id,
            adapter_dir=job.out,
            subnetwork=job.subnetwork,
            before=before,
            after=after,
            task_before=task_before,
            task_after=task_after,
            training=log,
            n_trained=sum(int(value.numel()) for value in job.base_values.values()),
        )


@dataclass(frozen=True, kw_only=True)
class _Job:
    """An adaptation with every input checked and the model loaded; nothing is written yet."""

    subnetwork: Subnetwork
    train_corpus: ParallelCorpus
    train_texts: list[str]
    eval_texts: dict[str, list[str]]  # target first
    task: TaskItems | None
    out: Path
    backend: Any  # HFBackend (its module imports torch)
    tokenizer: Any
    slices: list[Any]  # ExpertSlice
    base_values: dict[str, Any]  # the slices' weights before training (tensors)
    params: dict[str, Any]


def _prepare(store: Store, request: AdaptRequest, progress: ProgressCallback | None) -> _Job:
    """Check everything a user can get wrong, cheapest first, then load the model and find its experts."""
    from transformers import AutoTokenizer

    from moe_core.adapt.checkpoint import check_new_folder
    from moe_core.adapt.subnetwork import expert_slices, slice_values
    from moe_core.backends.hf import HFBackend

    subnetwork = select(store, request.run_id, request.target, request.budget, request.ratios, request.alpha)
    target = subnetwork.target
    train_corpus = load_corpus(request.train_corpus, [target], request.train_split)
    eval_langs = [target, *(lang for lang in request.eval_langs or subnetwork.langs if lang != target)]
    eval_corpus = load_corpus(request.eval_corpus, eval_langs, request.eval_split)
    train_texts = _texts(train_corpus, [target], "--train-corpus")[target]
    eval_texts = _texts(eval_corpus, eval_langs, "--eval-corpus")
    task = task_items(request.task, request.task_corpus, request.task_limit, eval_langs)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = request.out or store.path.parent / "adapters" / f"{subnetwork.model_id}-{target}-k{request.budget}-{stamp}"
    check_new_folder(out, "--out")
    if progress:
        progress(AdaptProgress(stage="loading", done=0, total=1))
    backend = HFBackend(request.model, request.options)
    info = backend.info()
    if info.config_hash != q.model_config_hash(store, subnetwork.model_id):
        raise PolyrouteError(
            f"trace run {request.run_id} traced {subnetwork.model_id}, not the model at {request.model} (their "
            "configs differ): pass --model the checkpoint that run traced, or trace this model first"
        )
    slices = expert_slices(backend.model, subnetwork.pairs)
    return _Job(
        subnetwork=subnetwork,
        train_corpus=train_corpus,
        train_texts=train_texts,
        eval_texts=eval_texts,
        task=task,
        out=out,
        backend=backend,
        tokenizer=AutoTokenizer.from_pretrained(info.source),
        slices=slices,
        base_values=slice_values(backend.model, slices),
        params=_params(request, subnetwork, eval_langs, task, out, info.source),
    )


def _texts(corpus: ParallelCorpus, langs: Sequence[str], option: str) -> dict[str, list[str]]:
    """Each language's texts in corpus order; a language the corpus lacks is an error naming the fix."""
    texts: dict[str, list[str]] = {lang: [] for lang in langs}
    for row in corpus.rows:
        if row.lang in texts:
            texts[row.lang].append(row.text)
    absent = [lang for lang, rows in texts.items() if not rows]
    if absent:
        raise PolyrouteError(
            f"{option} {corpus.name} has no text in {', '.join(absent)}; it has {', '.join(corpus.langs)}: "
            f"choose another {option} or other languages"
        )
    return texts


def _params(
    request: AdaptRequest,
    subnetwork: Subnetwork,
    eval_langs: list[str],
    task: TaskItems | None,
    out: Path,
    source: str,
) -> dict[str, Any]:
    """Every setting that decides the run's numbers (runs.params, and the adapter's manifest)."""
    return {
        "trace_run": subnetwork.run_id,
        "target": subnetwork.target,
        "budget": subnetwork.budget,
        "ratios": list(subnetwork.ratios),
        "alpha": subnetwork.alpha,
        "selected": [list(pair) for pair in subnetwork.pairs],
        "train_corpus": str(request.train_corpus),
        "train_split": request.train_split,
        "eval_corpus": str(request.eval_corpus),
        "eval_split": request.eval_split,
        "langs": eval_langs,
        "task": task.record() if task else None,
        "settings": asdict(request.settings),
        "adapter_dir": str(out),
        "base_model": source,
        "model_id": subnetwork.model_id,
        **{f"hf_{key}": value for key, value in asdict(request.options).items() if key != "model_id"},
    }


def _scores(losses: Sequence[LanguageLoss], variant: str) -> list[TaskScore]:
    return [
        TaskScore(task=q.ADAPTATION_TASK, lang=s.lang, variant=variant, metric=metric, value=value, n=s.n_tokens)
        for s in losses
        for metric, value in (("loss", s.loss), ("perplexity", s.perplexity))
    ]
