"""`polyroute adapt --task belebele --task-corpus belebele:DIR` end to end on a tiny model: the task's
scores and answers before training are those `polyroute eval` gives the base model on the same
items, those after training are those it gives the merged adapted checkpoint; both are stored with
the run (variants before and after), printed, and returned by `adaptation_scores`. Bad task input
exits 2 before anything is written or trained."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from polyroute.cli import main
from store import open_store
from store import queries as q
from tests.conftest import PARALLEL, write_jsonl
from tests.helpers import belebele_copy, belebele_item, mgsm_copy, run_id_of, store_digest, trace_argv

# Strong enough that the trained experts change what the tiny model writes.
TRAIN = ["--max-steps", "6", "--batch-size", "4", "--lr", "5e-2"]
LANGS = ("deu_Latn", "eng_Latn")  # the target first, as adapt orders them
ITEMS = 2  # --task-limit: of the copy's 3 items


@pytest.fixture(scope="module")
def adapted(tmp_path_factory: pytest.TempPathFactory, tiny_model) -> dict[str, Any]:
    """A store with a trace of a tiny Qwen3-MoE (run 1) and its adaptation to German scored on
    Belebele (run 2), what the command printed, and the merged checkpoint of the adaptation."""
    root = tmp_path_factory.mktemp("adapt_task")
    rows = [{"item_id": f"item{i}", "lang": lang, "text": t} for lang, ts in PARALLEL.items() for i, t in enumerate(ts)]
    corpus = write_jsonl(root / "parallel.jsonl", rows)
    model, db = tiny_model("qwen3_moe"), root / "s.duckdb"
    belebele = f"belebele:{belebele_copy(root / 'belebele')}"
    assert main(trace_argv(db, model, corpus, ",".join(LANGS))) == 0
    task = ["--task", "belebele", "--task-corpus", belebele, "--task-limit", str(ITEMS)]
    printed = io.StringIO()
    with redirect_stdout(printed):
        assert main(_adapt_argv(db, model, corpus, root / "adapter", *task)) == 0
    merged = root / "merged"
    assert main(["adapt", "merge", "--adapter", str(root / "adapter"), "--out", str(merged)]) == 0
    return {"root": root, "db": db, "model": model, "corpus": corpus, "belebele": belebele, "merged": merged,
            "printed": printed.getvalue()}  # fmt: skip


def _adapt_argv(db: Path, model: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        *("adapt", "--db", str(db), "--model", str(model), "--run", "1", "--out", str(out)),
        *("--target", "deu_Latn", "--budget", "4", "--train-corpus", str(corpus), "--eval-corpus", str(corpus)),
        *TRAIN,
        *extra,
    ]


def _evaluated(model: Path, belebele: str, db: Path) -> tuple[dict[tuple[str, str], tuple[float, int]], list]:
    """What `polyroute eval` scores and answers for `model` on the same items, in a store of its own."""
    argv = ["eval", "--task", "belebele", "--model", str(model), "--corpus", belebele, "--langs", ",".join(LANGS)]
    printed = io.StringIO()
    with redirect_stdout(printed):
        assert main([*argv, "--limit", str(ITEMS), "--db", str(db)]) == 0
    run_id = run_id_of(printed.getvalue())
    with open_store(db, read_only=True) as store:
        scores = {(r.lang, r.metric): (r.value, r.n) for r in q.eval_results(store, run_id)}
        answers = [q.generated_answers(store, run_id, lang, "unsteered") for lang in LANGS]
    return scores, answers


def _adaptation(db: Path, variant: str) -> tuple[dict[tuple[str, str], tuple[float, int]], list]:
    with open_store(db, read_only=True) as store:
        scores = {
            (r.lang, r.metric): (r.value, r.n) for r in q.eval_results(store, 2) if r.task == "belebele"
            and r.variant == variant
        }  # fmt: skip
        answers = [q.generated_answers(store, 2, lang, variant) for lang in LANGS]
    return scores, answers


def test_the_scores_before_training_are_those_eval_gives_the_base_model(adapted):
    scores, answers = _adaptation(adapted["db"], "before")
    expected_scores, expected_answers = _evaluated(adapted["model"], adapted["belebele"], adapted["root"] / "e1.duckdb")
    assert scores == expected_scores and set(scores) == {(lang, "accuracy") for lang in LANGS}
    assert {n for _, n in scores.values()} == {ITEMS}
    assert answers == expected_answers and [len(a) for a in answers] == [ITEMS, ITEMS]


def test_the_scores_after_training_are_those_eval_gives_the_adapted_checkpoint(adapted):
    scores, answers = _adaptation(adapted["db"], "after")
    expected_scores, expected_answers = _evaluated(
        adapted["merged"], adapted["belebele"], adapted["root"] / "e2.duckdb"
    )
    assert scores == expected_scores and answers == expected_answers
    # ...and not those of the base model: training changed what the model writes.
    assert answers != _adaptation(adapted["db"], "before")[1]


def test_the_run_records_the_task_and_the_query_and_the_command_show_it(adapted):
    with open_store(adapted["db"], read_only=True) as store:
        (run,) = q.adaptation_runs(store)
        scores = q.adaptation_scores(store, run.run_id)
        stored = {(r.task, r.lang, r.variant, r.metric): r.value for r in q.eval_results(store, run.run_id)}
    assert run.status == "complete" and run.params["task"]["name"] == "belebele"
    assert run.params["task"]["limit"] == ITEMS and run.params["task"]["n_items"] == ITEMS
    # The held-out losses come first, as before; then the task's scores, with their change.
    assert [(s.task, s.lang, s.metric) for s in scores] == [
        *((q.ADAPTATION_TASK, lang, metric) for lang in LANGS for metric in ("loss", "perplexity")),
        *(("belebele", lang, "accuracy") for lang in LANGS),
    ]
    for s in scores:
        assert (s.before, s.after) == (
            stored[s.task, s.lang, "before", s.metric],
            stored[s.task, s.lang, "after", s.metric],
        )
        assert s.change == pytest.approx(s.after - s.before)
    assert {s.n for s in scores if s.task == "belebele"} == {ITEMS}
    lines = adapted["printed"].splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("task"))
    assert lines[header].split() == ["task", "lang", "metric", "before", "after", "change", "n"]
    task_rows = [line.split() for line in lines[header + 2 : header + 2 + len(LANGS)]]
    assert [row[:3] for row in task_rows] == [["belebele", lang, "accuracy"] for lang in LANGS]
    by_lang = {s.lang: s for s in scores if s.task == "belebele"}
    assert [float(row[3]) for row in task_rows] == [pytest.approx(by_lang[lang].before, abs=1e-3) for lang in LANGS]
    assert [float(row[4]) for row in task_rows] == [pytest.approx(by_lang[lang].after, abs=1e-3) for lang in LANGS]


def test_bad_task_input_exits_2_before_anything_is_written_or_trained(adapted, capsys):
    root, db = adapted["root"], adapted["db"]
    english_only = root / "belebele_eng"
    english_only.mkdir(exist_ok=True)
    write_jsonl(english_only / "eng_Latn.jsonl", [belebele_item("eng_Latn", n) for n in range(3)])
    mgsm = f"mgsm:{mgsm_copy(root / 'mgsm')}"
    cases = {
        "unknown task": (["--task", "gsm8k", "--task-corpus", adapted["belebele"]], "unknown task 'gsm8k'"),
        "another benchmark": (
            ["--task", "belebele", "--task-corpus", mgsm],
            "no mc_answer1, mc_answer2, mc_answer3, mc_answer4 field, which task belebele scores with",
        ),
        "a plain corpus": (["--task", "belebele", "--task-corpus", str(adapted["corpus"])], "no answer, mc_answer1"),
        "no target text": (
            ["--task", "belebele", "--task-corpus", f"belebele:{english_only}"],
            "has no Belebele text in deu_Latn",
        ),
        "a task without its corpus": (["--task", "belebele"], "--task and --task-corpus go together"),
        "a corpus without its task": (["--task-corpus", mgsm], "go together"),
        "task limit 0": (
            ["--task", "belebele", "--task-corpus", adapted["belebele"], "--task-limit", "0"],
            "at least 1",
        ),
    }
    before, files = store_digest(db), sorted(p.name for p in root.iterdir())
    for name, (extra, message) in cases.items():
        capsys.readouterr()
        assert main(_adapt_argv(db, adapted["model"], adapted["corpus"], root / "never", *extra)) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith("polyroute: error: ") and message in err and "\n" not in err, (name, err)
        assert store_digest(db) == before, name
    assert sorted(p.name for p in root.iterdir()) == files  # no adapter folder
