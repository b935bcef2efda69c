"""A benchmark task scored before and after an adaptation (docs/methods.md, "Evaluation"): its items, read
and checked as `polyroute eval` reads them, and the scores and answers of the model as it is now,
through the evaluation runner and the backend that holds the model being trained.

No torch and no store: the backend generates, `polyroute.workflows.adapt` records what comes back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from moe_core.adapt.settings import AdaptProgress, ProgressCallback
from moe_core.backends.base import Backend, GenerationParams
from moe_core.corpora import TextRow
from moe_core.errors import CorpusError, PolyrouteError
from moe_core.evaluation.runner import evaluate
from moe_core.evaluation.tasks import TaskSpec, get_task, read_items
from moe_core.records import GeneratedAnswer, TaskScore

EVAL_BATCH_SIZE = 8  # prompts per generation batch: `polyroute eval`'s default, as padding can move greedy outputs


@dataclass(frozen=True, kw_only=True)
class TaskItems:
    """The items a task scores before and after training, checked against the task."""

    spec: TaskSpec
    corpus: str  # as given: NAME:DIR (or NAME, from the Hub)
    limit: int | None
    rows: list[TextRow]  # the evaluated languages' items, item by item
    sources: dict[str, TextRow]  # item_id -> its text in spec.source_lang (translation)
    params: GenerationParams
    template: str  # the benchmark's prompt template

    def record(self) -> dict[str, Any]:
        """What decides the task's numbers, recorded with the run."""
        return {
            "name": self.spec.name,
            "corpus": self.corpus,
            "limit": self.limit,
            "n_items": len({row.item_id for row in self.rows}),
            "decoding": asdict(self.params),
            "batch_size": EVAL_BATCH_SIZE,
            "prompt_template": self.template,
        }


def task_items(task: str | None, corpus: str | None, limit: int | None, langs: Sequence[str]) -> TaskItems | None:
    """The items of `task` in every language of `langs` (the target first) from `corpus`; None
    without a task. Checked before any model loads: an unknown task, a corpus without the task's
    fields or without one of `langs` is a PolyrouteError that names the fix."""
    if task is None and corpus is None:
        return None
    if task is None or corpus is None:
        raise PolyrouteError("{task} and {task_corpus} go together: name the task and its local copy (NAME:DIR)")
    spec = get_task(task)
    if limit is not None and limit < 1:
        raise PolyrouteError("{task_limit} must be at least 1")
    try:
        chosen = read_items(spec, corpus, langs, limit)
    except CorpusError as error:
        raise CorpusError(
            f"{{task_corpus}} {corpus}: {error.template} (task {spec.name} is scored in the target and every other "
            "evaluated language; {langs} chooses the others)"
        ) from None
    return TaskItems(
        spec=spec,
        corpus=corpus,
        limit=limit,
        rows=chosen.rows,
        sources=chosen.sources,
        params=GenerationParams(max_new_tokens=spec.max_new_tokens),
        template=chosen.corpus.template,
    )


def score_task(
    backend: Backend, items: TaskItems | None, variant: str, progress: ProgressCallback | None = None
) -> tuple[list[TaskScore], list[GeneratedAnswer]]:
    """The task's scores and answers, as variant `variant` (before | after), of the model `backend`
    holds as it is now: the adaptation trains that very model in place. No task, none of either."""
    if items is None:
        return [], []
    spec, n_rows, done = items.spec, len(items.rows), 0

    def on_batch(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(AdaptProgress(stage=f"{spec.name} {variant}", done=done, total=n_rows))

    return evaluate(
        backend,
        items.spec,
        items.rows,
        [(variant, None)],
        items.params,
        sources=items.sources,
        batch_size=EVAL_BATCH_SIZE,
        on_batch=on_batch,
    )
