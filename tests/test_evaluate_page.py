"""The Evaluate page with AppTest, on a copy of the planted store plus an evaluation of its model:
scores per language and variant, the strength sweep, and divergence against the score; and an
evaluation launched on the page (the demo model on a small MGSM copy), which stores what
`polyroute eval` stores for the same request, refuses bad settings with messages, and waits for
no other job writing the store."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import pearsonr

from moe_core.demo import DEMO_MODEL_DIR
from moe_core.errors import PolyrouteError
from moe_core.evaluation.tasks import BUILTIN_TASK
from moe_core.records import TaskScore
from polyroute.background import Job, JobState, Outcome, start_job
from polyroute.ui.data import shared_store
from polyroute.ui.evaluate import STEERING_PLAN
from store import SharedStore, Store, open_store
from store import queries as q
from store import writer as w
from tests.apptest import chart, charts, open_page, wait_for_job
from tests.helpers import PLAN, SWEEP, cli_scores, fill_in, finish, mgsm_copy, steering_controls, stored_scores

LANGS = ["deu_Latn", "eng_Latn", "fra_Latn", "kan_Knda", "kaz_Cyrl", "tam_Taml", "tel_Telu", "tur_Latn", "uzn_Latn"]
VARIANTS = {"unsteered": 0.0, "strength=0": 0.0, "strength=0.5": 0.05, "strength=1": 0.1}  # -> accuracy gain
FAR = {"kan_Knda", "tam_Taml", "tel_Telu"}  # the planted Dravidian family routes furthest from English


def add_evaluation(db: Path) -> int:
    """Accuracy and language consistency, unsteered and at three strengths; far languages score lower."""
    scores = []
    for lang in LANGS:
        base = 0.3 if lang in FAR else 0.8
        for variant, gain in (("unsteered", 0.0), ("strength=0", 0.0), ("strength=0.5", 0.05), ("strength=1", 0.1)):
            scores.append(
                TaskScore(task="mgsm", lang=lang, variant=variant, metric="accuracy", value=base + gain, n=10)
            )
            scores.append(
                TaskScore(task="mgsm", lang=lang, variant=variant, metric="language_consistency", value=1, n=10)
            )
    with open_store(db) as store:
        (trace,) = q.list_runs(store)
        run = w.create_run(
            store, kind="evaluation", model_id=trace.model_id, corpus_id=None, backend="hf",
            params={"task": "mgsm", "langs": LANGS}, n_planned=0, weight_bound=1.0,
        )  # fmt: skip
        w.write_evaluation(store, run, scores, [])
        w.set_run_status(store, run, "complete")
    return run


def test_evaluate_shows_scores_the_sweep_and_the_correlation(app_db):
    run = add_evaluation(app_db)
    at = open_page("pages/evaluate.py")
    assert at.selectbox(key="evaluate_run").value == run
    bars = chart(at, "accuracy per language").rows()
    assert len(bars) == len(LANGS) * 4 and set(bars["variant"]) == set(VARIANTS)
    sweep = chart(at, "as the plan's strength changes").rows()
    assert sorted(sweep["point"].unique()) == [0.0, 0.5, 1.0]
    scatter = chart(at, "Divergence from eng_Latn").rows()
    assert set(scatter["lang"]) == set(LANGS) - {"eng_Latn"}
    (summary,) = [caption.value for caption in at.caption if caption.value.startswith("Pearson r = ")]
    pearson = float(summary.split("Pearson r = ")[1].split(" ")[0])
    # As scipy computes it from the plotted points; negative: the far languages diverge more and score lower.
    assert pearson == round(pearsonr(scatter["divergence"], scatter["score"]).statistic, 4) < -0.5

    at.selectbox(key="evaluate_metric").set_value("language_consistency").run()
    assert not at.exception
    assert set(chart(at, "language_consistency per language").rows()["value"]) == {1.0}
    # Every language scored 1: no correlation to draw, and the page says why instead of failing.
    assert "scores that vary across languages" in at.warning[0].value
    assert not [c for c in charts(at) if c.title.startswith("Divergence from")]


def test_an_evaluation_run_on_the_page_stores_what_polyroute_eval_stores(app_db, tmp_path):
    corpus = f"mgsm:{mgsm_copy(tmp_path / 'mgsm')}"
    at = open_page("pages/evaluate.py")
    assert at.expander[0].label == "Run an evaluation" and at.expander[0].proto.expanded
    message = finish(fill_in(at, corpus))
    assert "is complete: 2 languages, 2 items, 3 variants" in message
    with shared_store(str(app_db)).reading() as store:  # the app's own instance holds the file
        run = max((r for r in q.list_runs(store) if r.kind == "evaluation"), key=lambda r: r.run_id)
        assert run.status == "complete" and run.backend == "hf" and run.params["sweep"] == SWEEP
        scores = stored_scores(store, run.run_id)
    assert scores == cli_scores(tmp_path, corpus)
    assert {variant for _, variant, *_ in scores} == {"unsteered", "strength=0", "strength=4"}
    # The page shows the new run: chosen, its bars and its sweep drawn.
    assert at.selectbox(key="evaluate_run").value == run.run_id
    assert len(chart(at, "accuracy per language").rows()) == 2 * 3
    assert sorted(chart(at, "as the plan's strength changes").rows()["point"].unique()) == [0.0, 4.0]


def test_bad_settings_are_messages_and_start_nothing(app_db, tmp_path):
    add_evaluation(app_db)
    corpus = f"mgsm:{mgsm_copy(tmp_path / 'mgsm')}"
    at = fill_in(open_page("pages/evaluate.py"), corpus, sweep="lambda=a")
    assert not at.expander[0].proto.expanded  # the store holds scores: the form waits, closed
    assert any("'a' is not a number" in info.value for info in at.info) and at.button(key="evaluate_start").disabled
    at.text_input(key="widget_evaluate_sweep").set_value("window=deep").run()
    assert any("'deep' is not a zone" in info.value for info in at.info)
    at.text_input(key="widget_evaluate_sweep").set_value(SWEEP).run()
    at.text_area(key="widget_evaluate_plan_json").set_value("{not json").run()
    assert any("not valid JSON" in info.value for info in at.info)
    assert at.text_input(key="widget_evaluate_sweep").disabled
    at.text_area(key="widget_evaluate_plan_json").set_value(PLAN.to_json()).run()
    at.text_input(key="widget_evaluate_model").set_value(str(tmp_path / "nothing")).run()
    assert any("is not a model folder" in info.value for info in at.info)
    at.text_input(key="widget_evaluate_model").set_value(str(DEMO_MODEL_DIR)).run()
    at.text_input(key="widget_evaluate_corpus").set_value(str(tmp_path / "none.jsonl")).run()
    assert at.info and at.button(key="evaluate_start").disabled and not at.exception
    # A corpus without MGSM's answers is refused before Start, in the page's words, and Start stays off.
    flores = tmp_path / "texts.jsonl"
    flores.write_text('{"item_id": "1", "lang": "eng_Latn", "text": "Hello."}\n', encoding="utf-8")
    at.text_input(key="widget_evaluate_corpus").set_value(str(flores)).run()
    at.multiselect(key=f"evaluate_langs_{flores}_None").set_value(["eng_Latn"]).run()
    said = [info.value for info in at.info if "no answer field, which task mgsm scores with" in info.value]
    assert said and "--" not in said[0] and at.button(key="evaluate_start").disabled and not at.exception
    # The scores below the form stay drawn: a bad setting does not end the page.
    assert chart(at, "accuracy per language")
    with shared_store(str(app_db)).reading() as store:
        assert len([r for r in q.list_runs(store) if r.kind == "evaluation"]) == 1  # the one added above


def test_the_plan_built_on_the_steering_page_is_offered(app_db):
    at = open_page("pages/evaluate.py")
    at.radio(key="widget_evaluate_plan").set_value(STEERING_PLAN).run()
    assert any("Build a plan on the **Steering** page first" in info.value for info in at.info)
    assert at.text_input(key="widget_evaluate_sweep").disabled
    at.switch_page("pages/steering.py").run()
    steering_controls(at, strength=2.0, experts=[5])
    at.switch_page("pages/evaluate.py").run()
    assert at.radio(key="widget_evaluate_plan").value == STEERING_PLAN and not at.exception
    assert any("soft steering of layers 2-2, strength 2" in caption.value for caption in at.caption)
    assert not at.text_input(key="widget_evaluate_sweep").disabled


class Holding(Job[JobState[Any]]):
    """A job that writes nothing and holds the store until the test lets it go."""

    kind, what = "holding", "a test job"

    def __init__(self, store: SharedStore) -> None:
        super().__init__(store, JobState())
        self.gate = threading.Event()

    def work(self, store: Store) -> Outcome:
        assert self.gate.wait(60)
        raise PolyrouteError("let go")


def test_start_waits_while_another_job_writes_the_store(app_db, tmp_path):
    at = fill_in(open_page("pages/evaluate.py"), f"mgsm:{mgsm_copy(tmp_path / 'mgsm')}")
    held = shared_store(str(app_db))  # the app's own instance, as a job of the app would hold it
    other = start_job(held, Holding(held))
    try:
        at.run()  # the page sees the other job before anyone presses Start
        waits = [box.value for box in at.info if box.value.startswith("The evaluation waits: a test job into")]
        assert waits and "is already running" in waits[0] and at.button(key="evaluate_start").disabled
        assert not at.exception and not at.get("progress")
        at.switch_page("pages/collect.py").run()  # one piece decides for every page that starts a job
        assert any(box.value.startswith("Collecting waits: a test job into") for box in at.info)
        assert at.button[0].disabled
    finally:
        other.gate.set()
        other.wait(10)


def test_the_default_form_runs_the_built_in_task_on_the_demo_store(demo_app_db):
    """A new user's first evaluation: nothing to download or type, Start, and the page shows each
    language's loss, unsteered, the answers item by item, and what the correlation needs."""
    at = open_page("pages/evaluate.py")
    assert at.selectbox(key="widget_evaluate_task").value == BUILTIN_TASK
    assert not at.button(key="evaluate_start").disabled, [info.value for info in at.info]
    at.number_input(key="widget_evaluate_limit").set_value(3).run()  # the default (10) works too, slower
    at.button(key="evaluate_start").click().run()
    message = str(wait_for_job(at, timeout=240).success[0].value)
    assert "is complete: 2 languages, 3 items, 1 variant (unsteered)" in message
    with shared_store(str(demo_app_db)).reading() as store:
        run = max((r for r in q.list_runs(store) if r.kind == "evaluation"), key=lambda r: r.run_id)
        scores = {(r.lang, r.metric): r.value for r in q.eval_results(store, run.run_id)}
        answers = q.run_answers(store, run.run_id)
    assert run.status == "complete" and run.params["corpus"] == "builtin"
    assert {lang for lang, _ in scores} == {"eng_Latn", "deu_Latn"}
    for lang in ("eng_Latn", "deu_Latn"):
        assert scores[lang, "perplexity"] == pytest.approx(math.exp(scores[lang, "loss"]))
    at.selectbox(key="evaluate_metric").set_value("loss").run()
    bars = chart(at, "loss per language").rows()
    assert sorted(bars["lang"]) == ["deu_Latn", "eng_Latn"] and set(bars["variant"]) == {"unsteered"}
    (table,) = [frame.value for frame in at.dataframe if "prompt" in frame.value.columns]
    assert len(table) == len(answers) == 2 * 3 and list(table.columns[:3]) == ["item", "language", "prompt"]
    assert sorted(table["unsteered"]) == sorted(answer.output for answer in answers)
    (needs,) = [info.value for info in at.info if "The correlation needs at least 3 languages" in info.value]
    assert "this run has 2" in needs and not at.exception


def test_checks_before_start_say_what_a_task_needs_in_page_words(demo_app_db):
    at = open_page("pages/evaluate.py")
    at.selectbox(key="widget_evaluate_task").set_value("flores").run()
    assert any("Enter a copy of flores_plus" in info.value for info in at.info)
    assert any("hf download openlanguagedata/flores_plus" in caption.value for caption in at.caption)
    at.text_input(key="widget_evaluate_corpus").set_value("builtin").run()
    (said,) = [info.value for info in at.info if "The built-in corpus has no text field" in info.value]
    assert f"choose task {BUILTIN_TASK}" in said and "--" not in said
    assert at.button(key="evaluate_start").disabled and not at.exception


def test_zero_scores_are_drawn_and_the_distribution_is_kept_in_the_url(app_db):
    run = add_evaluation(app_db)
    with open_store(app_db) as store:
        zero = w.create_run(
            store, kind="evaluation", model_id=q.get_run(store, run).model_id, corpus_id=None, backend="hf",
            params={"task": "mgsm", "langs": LANGS}, n_planned=0, weight_bound=1.0,
        )  # fmt: skip
        scores = [
            TaskScore(task="mgsm", lang=lang, variant="unsteered", metric="accuracy", value=0, n=4) for lang in LANGS
        ]
        w.write_evaluation(store, zero, scores, [])
        w.set_run_status(store, zero, "complete")
    at = open_page("pages/evaluate.py")
    assert at.selectbox(key="evaluate_run").value == zero
    bars = chart(at, "accuracy per language")
    # A bar of 0 has no height: its tick on the axis draws it, and the subtitle says so.
    assert [layer["mark"]["type"] for layer in bars.spec["layer"]] == ["bar", "tick"]
    assert set(bars.rows()["value"]) == {0.0} and "Every score is 0" in bars.spec["title"]["subtitle"]
    at.selectbox(key="evaluate_run").set_value(run).run()
    at.radio(key="distribution").set_value("hard").run()
    assert dict(at.query_params)["distribution"] in ("hard", ["hard"]) and not at.exception
    assert "(hard)" in chart(at, "Divergence from eng_Latn").title
