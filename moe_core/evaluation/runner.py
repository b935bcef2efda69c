"""Run a task on a backend: generate every variant's answers, language by language, and score them.

The engine half of an evaluation: it returns `TaskScore` and `GeneratedAnswer` records and never
touches the store (polyroute/workflows/evaluate.py writes them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from moe_core.backends.base import Backend, GenerationParams
from moe_core.corpora.base import TextRow
from moe_core.errors import PolyrouteError
from moe_core.evaluation.heldout import NEEDS_LOCAL_MODEL, can_measure_loss, text_losses
from moe_core.evaluation.sweeps import Variant
from moe_core.evaluation.tasks import TaskSpec
from moe_core.records import GeneratedAnswer, TaskScore


def check_plans(backend: Backend, variants: Sequence[Variant]) -> None:
    """Refuse, before any generation, a variant's plan that names layers or experts the model lacks."""
    info = backend.info()
    for _, plan in variants:
        if plan is not None:
            plan.check_against(
                n_layers=info.n_layers, moe_layers=info.moe_layers, n_experts=info.n_experts, top_k=info.top_k
            )


def evaluate(
    backend: Backend,
    task: TaskSpec,
    rows: Sequence[TextRow],
    variants: Sequence[Variant],
    params: GenerationParams,
    *,
    sources: Mapping[str, TextRow] | None = None,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[list[TaskScore], list[GeneratedAnswer]]:
    """Scores (one per language, variant and metric, over that language's items) and every answer.

    sources: item_id -> the row in `task.source_lang` (translation tasks). Prompts of one language
    go through the model together, `batch_size` at a time, so no batch mixes very different
    lengths or scripts; `on_batch(n)` is told after each batch of n prompts. A `model_loss` task
    also gets each language's loss and perplexity on its texts, under the variant's plan.
    """
    check_plans(backend, variants)
    if task.model_loss and not can_measure_loss(backend):
        raise PolyrouteError(NEEDS_LOCAL_MODEL)  # before the first answer is generated
    by_lang: dict[str, list[TextRow]] = {}
    for row in rows:
        by_lang.setdefault(row.lang, []).append(row)
    prompts = {
        lang: [task.prompt(row, (sources or {}).get(row.item_id)) for row in group] for lang, group in by_lang.items()
    }
    scores: list[TaskScore] = []
    answers: list[GeneratedAnswer] = []
    for name, plan in variants:
        plan_json = None if plan is None else plan.to_json()
        for lang, group in by_lang.items():
            outputs: list[str] = []
            for start in range(0, len(group), batch_size):
                batch = prompts[lang][start : start + batch_size]
                outputs += backend.generate(batch, params, plan).texts
                if on_batch:
                    on_batch(len(batch))
            answers += [
                GeneratedAnswer(variant=name, item_id=row.item_id, lang=lang, prompt=prompt, output=output)
                for row, prompt, output in zip(group, prompts[lang], outputs, strict=True)
            ]
            scores += [
                TaskScore(
                    task=task.name, lang=lang, variant=name, metric=metric, value=value, n=len(group), plan=plan_json
                )
                for metric, value in task.score(outputs, group).items()
            ]
        if task.model_loss:
            losses = text_losses(backend, {lang: [row.text for row in group] for lang, group in by_lang.items()}, plan)
            scores += [
                TaskScore(
                    task=task.name, lang=loss.lang, variant=name, metric=metric, value=value,
                    n=len(by_lang[loss.lang]), plan=plan_json,
                )
                for loss in losses
                for metric, value in (("loss", loss.loss), ("perplexity", loss.perplexity))
            ]  # fmt: skip
    return scores, answers
