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

import dataclasses
import hashlib
import json
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
from moe_core.analysis.rise import DEFAULT_RATIOS, ZONES, ZoneRule, depth_zones
from moe_core.backends.options import HFOptions
from moe_core.corpora import BUILTIN, ParallelCorpus, load_corpus
from moe_core.errors import PolyrouteError
from moe_core.languages import normalise_lang
from moe_core.records import TaskScore
from polyroute.analyses import analyze_rise
from polyroute.run_data import RunData, Selection
from polyroute.run_status import writer_record
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
    zone_rule: ZoneRule  # how the zones are cut and a full zone's share passed on (moe_core.analysis.rise)
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
    zones: ZoneRule = "reference",
) -> Subnetwork:
    """The RISE subnetwork of `target` from the activation frequencies of trace run `run_id`, chosen
    by `polyroute analyze rise` (`moe_core.analysis.rise.select_rise`) under the zone rule `zones`
    (reference or fraction)."""
    run = q.get_run(store, run_id)
    if run is None or run.kind != "trace":
        what = "no run" if run is None else f"run {run_id} is an {run.kind} run, and there is no trace run"
        raise PolyrouteError(f"{what} {run_id} to select experts from: choose a trace run (`polyroute runs`)")
    target = normalise_lang(target)
    data = RunData(store, run_id, Selection())
    available = len(data.layers) * data.layout.n_experts
    if budget > available:
        raise PolyrouteError(
            f"{{budget}} {budget} is more than the {available} routed experts of {data.layout.model_id} "
            f"({len(data.layers)} MoE layers x {data.layout.n_experts}): choose 1-{available}"
        )
    result = analyze_rise(data, target=target, budget=budget, ratios=ratios, alpha=alpha, zones=zones)
    return Subnetwork(
        run_id=run_id,
        model_id=data.layout.model_id,
        target=target,
        budget=budget,
        ratios=ratios,
        alpha=alpha,
        zone_rule=zones,
        langs=data.langs,
        n_layers=data.layout.n_layers,
        layers=data.layers,
        zones=[ZONES[z] for z in depth_zones(np.asarray(data.layers), data.layout.n_layers, zones)],
        n_experts=data.layout.n_experts,
        experts=[w.AdaptedExpert(**row) for row in result.table("selected").records()],
    )


def default_eval_langs(target: str, langs: Sequence[str]) -> list[str]:
    """The languages an adaptation scores unless told otherwise: the target, and English as the
    language to watch for what the others lose (the run's first other language without English)."""
    others = [lang for lang in langs if lang != target]
    compare = "eng_Latn" if "eng_Latn" in others else others[:1]
    return [target, *([compare] if isinstance(compare, str) else compare)]


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
    zones: ZoneRule = "reference"  # the RISE zone rule (moe_core.analysis.rise.select_rise)
    train_corpus: str = BUILTIN
    train_split: str | None = "train"
    eval_corpus: str = BUILTIN
    eval_split: str | None = "heldout"
    eval_langs: Sequence[str] | None = None  # default: the target and English (`default_eval_langs`)
    eval_all: bool = False  # score every language of the trace run (slow: each is a full held-out pass)
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
    reused: list[str] = field(default_factory=list)  # languages whose "before" loss came from the store


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
        # "Before" losses of the same model weights on the same texts are the same numbers: take them
        # from the store where an earlier adaptation measured them.
        stored = q.stored_before_losses(store, job.subnetwork.model_id, job.before_key)
        reused = {lang: stored[lang] for lang in eval_texts if lang in stored}
        to_measure = {lang: texts for lang, texts in eval_texts.items() if lang not in reused}
        record_corpus(store, job.train_corpus)
        run_id = w.create_run(
            store,
            kind="adaptation",
            model_id=job.subnetwork.model_id,
            corpus_id=job.train_corpus.corpus_id,
            backend=job.backend.name,
            params={
                **job.params,
                "writer": writer_record(),  # so that a run whose process died shows as interrupted
                "before_key": job.before_key,
                "before_reused": {lang: found.run_id for lang, found in reused.items()},
            },
            n_planned=len(job.subnetwork.experts),
            weight_bound=job.backend.info().weight_bound,
        )
        clock = _Clock(
            progress,
            before=sum(_eval_batches(texts) for texts in to_measure.values()),
            steps=_steps(len(job.train_texts), request.settings),
            after=sum(_eval_batches(texts) for texts in eval_texts.values()),
        )
        saved = False
        try:
            measured = (
                language_losses(model, tokenizer, to_measure, stage="before", batch_size=EVAL_BATCH, progress=clock)
                if to_measure
                else []
            )
            by_lang = {loss.lang: loss for loss in measured} | {
                lang: LanguageLoss(lang=lang, loss=found.loss, n_tokens=found.n_tokens)
                for lang, found in reused.items()
            }
            before = [by_lang[lang] for lang in eval_texts]
            task_before, answers_before = score_task(job.backend, job.task, "before", clock)
            log = train_subnetwork(model, tokenizer, job.slices, job.train_texts, request.settings, clock)
            after = language_losses(model, tokenizer, eval_texts, stage="after", batch_size=EVAL_BATCH, progress=clock)
            task_after, answers_after = score_task(job.backend, job.task, "after", clock)
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
            w.merge_run_params(store, run_id, {"timing": clock.timing(job.load_seconds, log)})
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
            reused=sorted(reused),
        )


EVAL_BATCH = 32  # held-out texts per forward pass


def _eval_batches(texts: Sequence[str]) -> int:
    return -(-len(texts) // EVAL_BATCH)


def _steps(n_texts: int, settings: TrainSettings) -> int:
    """Optimizer steps training will take (as `train_subnetwork` counts them)."""
    per_epoch = -(-n_texts // settings.batch_size)
    return min(per_epoch * settings.epochs, settings.max_steps or per_epoch * settings.epochs)


class _Clock:
    """Passes each progress step on with the time left, from what this job measured so far: the
    seconds per held-out batch and per training step (an after-pass takes as long per batch as the
    before-pass; with every before-loss reused, as long as a training step until it is measured)."""

    def __init__(self, progress: ProgressCallback | None, *, before: int, steps: int, after: int) -> None:
        self._progress = progress
        self._plan = {"before": before, "training": steps, "after": after}  # batches, steps, batches
        self._started: dict[str, float] = {}
        self._per_unit: dict[str, float] = {}
        self._last = time.monotonic()  # a stage starts when the step before it ended

    def __call__(self, step: AdaptProgress) -> None:
        now = time.monotonic()
        started = self._started.setdefault(step.stage, self._last)
        self._last = now
        if step.done and step.stage in self._plan:
            self._per_unit[step.stage] = (now - started) / step.done
        if self._progress:
            self._progress(dataclasses.replace(step, seconds_left=self._left(step)))

    def _left(self, step: AdaptProgress) -> float | None:
        per_unit = dict(self._per_unit)
        per_unit.setdefault("after", per_unit.get("before") or per_unit.get("training"))  # type: ignore[arg-type]
        stages = list(self._plan)
        if step.stage not in stages:
            return None
        left = 0.0
        for stage in stages[stages.index(step.stage) :]:
            units = self._plan[stage] - (step.done if stage == step.stage else 0)
            if units <= 0:
                continue
            if per_unit.get(stage) is None:
                return None  # not measured yet: no guess
            left += units * per_unit[stage]
        return left

    def timing(self, load_seconds: float, log: TrainingLog) -> dict[str, float | None]:
        """What this job measured, recorded with the run for the next one's estimate."""
        return {
            "load_s": load_seconds,
            "step_s": log.seconds / log.steps if log.steps else None,
            "eval_batch_s": self._per_unit.get("after") or self._per_unit.get("before"),
        }


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
    before_key: str  # what decides a "before" loss: stored ones with the same key are reused
    load_seconds: float


def _prepare(store: Store, request: AdaptRequest, progress: ProgressCallback | None) -> _Job:
    """Check everything a user can get wrong, cheapest first, then load the model and find its experts."""
    from transformers import AutoTokenizer

    from moe_core.adapt.checkpoint import check_new_folder
    from moe_core.adapt.subnetwork import expert_slices, slice_values
    from moe_core.backends.hf import HFBackend

    subnetwork = select(
        store, request.run_id, request.target, request.budget, request.ratios, request.alpha, request.zones
    )
    target = subnetwork.target
    train_corpus = load_corpus(request.train_corpus, [target], request.train_split)
    chosen: Sequence[str] = subnetwork.langs
    if not request.eval_all:
        chosen = request.eval_langs or default_eval_langs(target, subnetwork.langs)
    eval_langs = [target, *(lang for lang in chosen if lang != target)]
    eval_corpus = load_corpus(request.eval_corpus, eval_langs, request.eval_split)
    train_texts = _texts(train_corpus, [target], "{train_corpus}")[target]
    eval_texts = _texts(eval_corpus, eval_langs, "{eval_corpus}")
    task = task_items(request.task, request.task_corpus, request.task_limit, eval_langs)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = request.out or store.path.parent / "adapters" / f"{subnetwork.model_id}-{target}-k{request.budget}-{stamp}"
    check_new_folder(out, "{out}")
    if progress:
        progress(AdaptProgress(stage="loading", done=0, total=1))
    loading = time.monotonic()
    backend = HFBackend(request.model, request.options)
    info = backend.info()
    if info.config_hash != q.model_config_hash(store, subnetwork.model_id):
        raise PolyrouteError(
            f"trace run {request.run_id} traced {subnetwork.model_id}, not the model at {request.model} (their "
            "configs differ): pass {model} the checkpoint that run traced, or trace this model first"
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
        before_key=_before_key(request, info.source, info.config_hash),
        load_seconds=time.monotonic() - loading,
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
        "zones": subnetwork.zone_rule,
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


def _before_key(request: AdaptRequest, source: str, config_hash: str) -> str:
    """A digest of everything that decides a language's "before" loss: the model's config and weight
    files (name, size, modification time: no need to read gigabytes), where it runs, and the
    held-out corpus and split. Two adaptations with the same key measure the same numbers."""
    folder = Path(source)
    files = sorted(
        (path.name, path.stat().st_size, path.stat().st_mtime_ns)
        for path in folder.iterdir()
        if path.suffix in (".safetensors", ".bin", ".pt")
    )
    what = {
        "config_hash": config_hash,
        "weights": files,
        "eval_corpus": str(request.eval_corpus),
        "eval_split": request.eval_split,
        "dtype": request.options.dtype,
        "device": request.options.device,
        "batch_size": EVAL_BATCH,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class Estimate:
    """How long an adaptation should take, from the last one of the same model in this store."""

    seconds: float | None  # None: no adaptation of this model recorded its times yet
    reused: list[str]  # languages whose "before" loss is stored already (not measured again)
    step_seconds: float | None


def estimate(store: Store, request: AdaptRequest, model_id: str, eval_langs: Sequence[str]) -> Estimate:
    """The time `request` should take (loading, the "before" losses not stored yet, the training
    steps and the "after" losses), at the speeds the last adaptation of `model_id` measured; read
    from the store and the corpora, without loading the model."""
    from moe_core.model_identity import config_hash

    source = str(Path(request.model).expanduser().resolve())
    key = _before_key(request, source, config_hash(Path(source)))
    stored = q.stored_before_losses(store, model_id, key)
    reused = [lang for lang in eval_langs if lang in stored]
    timing = q.adaptation_timing(store, model_id)
    step_s = timing.get("step_s") if timing else None
    batch_s = timing.get("eval_batch_s") if timing else None
    if timing is None or step_s is None or batch_s is None:
        return Estimate(seconds=None, reused=reused, step_seconds=None)
    train = load_corpus(request.train_corpus, [request.target], request.train_split)
    held = load_corpus(request.eval_corpus, list(eval_langs), request.eval_split)
    count = {lang: 0 for lang in eval_langs}
    for row in held.rows:
        if row.lang in count:
            count[row.lang] += 1
    steps = _steps(sum(row.lang == request.target for row in train.rows), request.settings)
    batches_after = sum(-(-n // EVAL_BATCH) for n in count.values())
    batches_before = sum(-(-n // EVAL_BATCH) for lang, n in count.items() if lang not in reused)
    seconds = (timing.get("load_s") or 0.0) + steps * step_s + (batches_before + batches_after) * batch_s
    return Estimate(seconds=seconds, reused=reused, step_seconds=step_s)
