"""The Evaluate page with AppTest, on a copy of the planted store plus an evaluation of its model:
scores per language and variant, the strength sweep, and divergence against the score."""

from __future__ import annotations

from pathlib import Path

from scipy.stats import pearsonr

from moe_core.records import TaskScore
from store import open_store
from store import queries as q
from store import writer as w
from tests.apptest import chart, charts, open_page

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


def test_evaluate_without_an_evaluation_says_how_to_run_one(app_db):
    at = open_page("pages/evaluate.py")
    assert [info.value for info in at.info if "polyroute eval --task mgsm" in info.value]
