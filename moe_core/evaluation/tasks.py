"""The evaluation tasks as declarative specs: how a benchmark row becomes a prompt, how many tokens
an answer may take, and how a language's outputs are scored (docs/methods.md, "Evaluation").

Pure functions on rows and strings: no model, no store. Metric names are those of `eval_results`:
accuracy, chrf++, language_consistency, exact_match, f1; the built-in task (`heldout`, the one that
needs no download) adds the model's own loss and perplexity on each text (`model_loss`, measured by
`moe_core.evaluation.heldout` as the runner goes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from moe_core.corpora import BUILTIN, ParallelCorpus, load_corpus
from moe_core.corpora.base import TextRow
from moe_core.errors import CorpusError, ParameterError, PolyrouteError
from moe_core.evaluation.answers import final_number, numbers_match, parse_choice
from moe_core.evaluation.language_id import check_language
from moe_core.evaluation.metrics import chrf_corpus, exact_match, token_f1
from moe_core.languages import language

FLORES_SOURCE = "eng_Latn"  # FLORES+ is scored as translation out of English (docs/methods.md)
BUILTIN_TASK = "heldout"  # the task that runs on the built-in corpus, so with no download at all

Scorer = Callable[[Sequence[str], Sequence[TextRow]], dict[str, float]]


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """One task: the fields its rows must carry, its prompt, its decoding budget and its scorer.

    `prompt(row, source)` gets the row and, for translation, the same item in `source_lang`.
    `score(outputs, rows)` returns metric -> value over one language's items. A `model_loss` task
    is also scored by the model's mean token loss (and perplexity) on each language's texts,
    unsteered and under each plan.
    """

    name: str
    benchmark: str  # the corpus reader whose rows carry the fields (moe_core.corpora.BENCHMARKS), or BUILTIN
    required_fields: tuple[str, ...]
    max_new_tokens: int
    prompt: Callable[[TextRow, TextRow | None], str]
    score: Scorer
    source_lang: str | None = None
    model_loss: bool = False
    default_split: str | None = None  # the split read when none is given (None: the corpus's own default)

    @property
    def needs_copy(self) -> bool:
        """Whether the task reads a benchmark copy (every task but the built-in one)."""
        return self.benchmark != BUILTIN


def first_line(output: str) -> str:
    """The first non-empty line: short answers and translations stop there; a model that carries
    on with a new question must not be scored on it."""
    return next((line.strip() for line in output.splitlines() if line.strip()), "")


def _consistency(outputs: Sequence[str], rows: Sequence[TextRow]) -> float:
    # Text without letters (empty, digits only) counts as not in the language, so every metric of a
    # language is over the same n items and a variant that writes nothing cannot score 1.
    return sum(check_language(out, row.lang).matches is True for out, row in zip(outputs, rows, strict=True)) / len(
        rows
    )


def _field(row: TextRow, name: str) -> object:
    assert row.fields is not None  # check_fields ran first
    return row.fields[name]


def score_math(outputs: Sequence[str], rows: Sequence[TextRow]) -> dict[str, float]:
    """MGSM, PolyMath: the final number (first \\boxed{}, else the last number) equals the gold one."""
    correct = sum(
        numbers_match(final_number(out), str(_field(row, "answer"))) for out, row in zip(outputs, rows, strict=True)
    )
    return {"accuracy": correct / len(rows), "language_consistency": _consistency(outputs, rows)}


def score_choice(outputs: Sequence[str], rows: Sequence[TextRow]) -> dict[str, float]:
    """Belebele: the option letter (or number) the answer names is the correct one."""
    correct = sum(parse_choice(out) == int(str(_field(row, "answer"))) for out, row in zip(outputs, rows, strict=True))
    return {"accuracy": correct / len(rows)}


def score_translation(outputs: Sequence[str], rows: Sequence[TextRow]) -> dict[str, float]:
    """FLORES+: corpus chrF++ of the translations against the target texts, and their language."""
    hypotheses = [first_line(out) for out in outputs]
    references = [[str(_field(row, "text"))] for row in rows]
    return {"chrf++": chrf_corpus(hypotheses, references), "language_consistency": _consistency(hypotheses, rows)}


def score_extractive(outputs: Sequence[str], rows: Sequence[TextRow]) -> dict[str, float]:
    """XQuAD: SQuAD exact match and token F1 of the answer's first line against all gold answers."""
    answers = [first_line(out) for out in outputs]
    golds = [[str(gold) for gold in _field(row, "answers")] for row in rows]  # type: ignore[attr-defined]
    return {
        "exact_match": sum(map(exact_match, answers, golds)) / len(rows),
        "f1": sum(map(token_f1, answers, golds)) / len(rows),
    }


def score_continuation(outputs: Sequence[str], rows: Sequence[TextRow]) -> dict[str, float]:
    """The built-in task: whether the model carries on a text in its own language (its loss is the runner's)."""
    return {"language_consistency": _consistency(outputs, rows)}


def opening(row: TextRow, source: TextRow | None) -> str:
    """The first half of the text (by words; by characters in a script written without spaces),
    for the model to carry on."""
    words = row.text.split()
    if len(words) >= 2:
        return " ".join(words[: len(words) // 2])
    return row.text[: max(1, len(row.text) // 2)]


def _as_is(row: TextRow, source: TextRow | None) -> str:
    return row.text  # the benchmark's template, recorded with the corpus, is already the prompt


def translation_prompt(row: TextRow, source: TextRow | None) -> str:
    """Ask for the target-language translation of the English text of the same item."""
    if source is None:
        raise CorpusError(f"item {row.item_id} has no {FLORES_SOURCE} text to translate into {row.lang}")
    source_name, target_name = language(source.lang).name, language(row.lang).name
    return (
        f"Translate the following sentence from {source_name} to {target_name}.\n"
        f"{source_name}: {source.text}\n{target_name}:"
    )


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name=BUILTIN_TASK,
            benchmark=BUILTIN,
            required_fields=(),
            max_new_tokens=24,
            prompt=opening,
            score=score_continuation,
            model_loss=True,
            default_split="heldout",  # sentences the demo model never trained on
        ),
        TaskSpec(
            name="belebele",
            benchmark="belebele",
            required_fields=("answer", "mc_answer1", "mc_answer2", "mc_answer3", "mc_answer4"),
            max_new_tokens=8,
            prompt=_as_is,
            score=score_choice,
        ),
        TaskSpec(
            name="mgsm",
            benchmark="mgsm",
            required_fields=("answer",),
            max_new_tokens=256,
            prompt=_as_is,
            score=score_math,
        ),
        TaskSpec(
            name="polymath",
            benchmark="polymath",
            required_fields=("answer",),
            max_new_tokens=512,
            prompt=_as_is,
            score=score_math,
        ),
        TaskSpec(
            name="flores",
            benchmark="flores_plus",
            required_fields=("text",),
            max_new_tokens=128,
            prompt=translation_prompt,
            score=score_translation,
            source_lang=FLORES_SOURCE,
        ),
        TaskSpec(
            name="xquad",
            benchmark="xquad",
            required_fields=("answers",),
            max_new_tokens=32,
            prompt=_as_is,
            score=score_extractive,
        ),
    )
}


def get_task(name: str) -> TaskSpec:
    """The spec of task `name`; PolyrouteError naming the tasks for an unknown one."""
    if name not in TASKS:
        raise PolyrouteError(f"unknown task {name!r}: use one of {', '.join(TASKS)}")
    return TASKS[name]


def check_fields(task: TaskSpec, rows: Sequence[TextRow], source: str) -> None:
    """Refuse rows that lack a field the task scores with (a plain corpus, another benchmark)."""
    for row in rows:
        fields: Mapping[str, object] = row.fields or {}
        absent = [name for name in task.required_fields if name not in fields]
        if absent:
            raise CorpusError(
                f"{source}: item {row.item_id} ({row.lang}) has no {', '.join(absent)} field, which task "
                f"{task.name} scores with: the corpus must be a copy of {task.benchmark} ({task.benchmark}:FOLDER)"
            )


def task_corpus(task: TaskSpec, corpus: str | None) -> str:
    """The corpus `task` reads: `corpus` as given, or the built-in one for the built-in task; a task
    that reads a benchmark copy refuses to go without one."""
    if corpus:
        return str(corpus)
    if not task.needs_copy:
        return BUILTIN
    raise ParameterError(
        f"task {task.name} reads a copy of {task.benchmark}: pass {{corpus}} {task.benchmark}:FOLDER "
        f"(or {task.benchmark}, read from the Hugging Face Hub)"
    )


@dataclass(frozen=True, kw_only=True)
class TaskSelection:
    """What a task scores in some languages: the corpus read, the items, and their sources."""

    corpus: ParallelCorpus
    rows: list[TextRow]  # the chosen languages' items
    sources: dict[str, TextRow]  # item_id -> its text in the task's source language (translation)


def read_items(
    task: TaskSpec, corpus: str, langs: Sequence[str], limit: int | None = None, split: str | None = None
) -> TaskSelection:
    """The items of `task` in `langs` from `corpus`, checked against the task's fields. A translation
    task reads its source language too, and only items that have it. Without a split, the built-in
    corpus gives the task's `default_split`."""
    wanted = list(dict.fromkeys([*langs, *([task.source_lang] if task.source_lang else [])]))
    read = load_corpus(corpus, wanted, split or (task.default_split if corpus == BUILTIN else None))
    selected = read.select(wanted, limit, aligned=task.source_lang is not None)
    rows = [row for row in selected if row.lang in langs]
    check_fields(task, rows, read.source)
    return TaskSelection(
        corpus=read, rows=rows, sources={row.item_id: row for row in selected if row.lang == task.source_lang}
    )
