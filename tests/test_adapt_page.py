"""The Adapt page with Streamlit's AppTest on copies of real stores: the map shows exactly the
experts `select()` returns and follows the target and budget; a bad ratio, a model folder that is
not the traced model and a store another process holds each say why; training the demo model
finishes and shows every language's stored before/after loss; stored adaptations reopen."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st

from moe_core.analysis.rise import ZoneRule
from moe_core.demo import DEMO_MODEL_DIR
from polyroute.ui.adapt import NUMBERED_CELLS_MAX, expert_map
from polyroute.ui.data import shared_store
from polyroute.workflows.adapt import select
from store import queries as q
from tests.apptest import Chart, chart, charts, open_page, wait_for_job
from tests.conftest import _as_the_apps_store
from tests.helpers import store_held_by_another_process

PAGE = "pages/adapt.py"


def first_chart(at, title_part: str) -> Chart:
    """The first chart whose title has `title_part`: a run just trained shows in both tabs."""
    return next(found for found in charts(at) if title_part in found.title)


def shown_experts(at, title_part: str) -> list[tuple[int, int]]:
    """(layer, expert) of the first such map's selected cells, in rank order."""
    cells = first_chart(at, title_part).rows()
    chosen = cells[cells["selected"] == "yes"].sort_values("rank")
    assert chosen["rank"].tolist() == list(range(1, len(chosen) + 1))
    return list(zip(chosen["layer"].astype(int), chosen["expert"].astype(int), strict=True))


def frames(at, column: str) -> list:
    """The page's tables that have `column`, in page order (the first tab's before the second's)."""
    return [frame.value for frame in at.dataframe if column in frame.value.columns]


def selected(
    db: Path, target: str, budget: int, ratios=(0.35, 0.25, 0.40), zones: ZoneRule = "reference"
) -> list[tuple[int, int]]:
    with shared_store(str(db)).reading() as store:  # the app's own instance: it holds the file
        return select(store, 1, target, budget, ratios, zones=zones).pairs


@pytest.mark.parametrize("n_experts", [NUMBERED_CELLS_MAX, NUMBERED_CELLS_MAX + 1])
def test_the_map_numbers_the_selected_experts_in_their_cells_or_above_squares_when_cells_are_thin(n_experts):
    rows = []
    for layer in range(2):
        for expert in range(n_experts):
            chosen = (layer, expert) == (1, 5)
            rows.append({"layer": layer, "expert": expert, "zone": "shallow", "selected": "yes" if chosen else "no",
                         "rank": 1 if chosen else None, "score": 0.5 if chosen else None})  # fmt: skip
    frame = pd.DataFrame(rows)
    spec = expert_map(frame, title="The experts").to_dict()  # Altair checks it against Vega-Lite's schema
    marks = [layer["mark"] if isinstance(layer["mark"], dict) else {"type": layer["mark"]} for layer in spec["layer"]]
    thin = n_experts > NUMBERED_CELLS_MAX
    assert [mark["type"] for mark in marks] == (["rect", "square", "text"] if thin else ["rect", "text"])
    assert (marks[-1].get("dy", 0) < 0) == thin  # the rank above its square, else inside its cell
    assert spec["title"]["subtitle"].startswith("Squares mark" if thin else "Solid cells are")


def test_the_map_shows_the_selected_experts_and_follows_target_and_budget(demo_app_db: Path):
    at = open_page(PAGE)
    target = at.selectbox(key="adapt_target_1").value
    assert target == "arb_Arab" and at.number_input(key="adapt_budget_1").value == 8
    assert shown_experts(at, "experts RISE selects") == selected(demo_app_db, target, 8)
    cells = chart(at, "experts RISE selects").rows()
    # Every expert, by zone: the reference rule cuts the demo's 4 layers at round(1.5) = round(2.5) = 2.
    assert len(cells) == 4 * 8 and set(cells["zone"]) == {"shallow", "deep"}
    table = frames(at, "specificity")[0]
    assert list(zip(table["layer"], table["expert"], strict=True)) == selected(demo_app_db, target, 8)
    at.radio(key="adapt_zones").set_value("fraction").run()
    assert set(chart(at, "experts RISE selects").rows()["zone"]) == {"shallow", "middle", "deep"}
    assert any(caption.value.startswith("fraction: zones cut where") for caption in at.caption)
    fraction = selected(demo_app_db, target, 8, zones="fraction")
    assert shown_experts(at, "experts RISE selects") == fraction != selected(demo_app_db, target, 8)
    at.radio(key="adapt_zones").set_value("reference").run()

    at.selectbox(key="adapt_target_1").set_value("kor_Hang").run()
    at.number_input(key="adapt_budget_1").set_value(5).run()
    assert not at.exception
    expected = selected(demo_app_db, "kor_Hang", 5)
    assert shown_experts(at, "The 5 experts RISE selects for kor_Hang") == expected
    assert expected != selected(demo_app_db, target, 8)[:5]

    at.number_input(key="adapt_ratio_middle").set_value(0.0).run()
    at.number_input(key="adapt_ratio_deep").set_value(0.65).run()
    assert shown_experts(at, "experts RISE selects") == selected(demo_app_db, "kor_Hang", 5, (0.35, 0.0, 0.65))


def test_a_bad_ratio_or_model_folder_says_why(demo_app_db: Path, tiny_model):
    at = open_page(PAGE)
    at.number_input(key="adapt_ratio_shallow").set_value(0.6).run()
    assert not at.exception
    assert "must add up to 1; they add up to 1.25" in at.warning[0].value
    assert not [c for c in charts(at) if "RISE selects" in c.title]
    assert len(at.tabs) == 2  # the page goes on: the past adaptations tab is still drawn

    at.number_input(key="adapt_ratio_shallow").set_value(0.35).run()
    at.text_input(key="adapt_model").set_value("/no/such/model").run()
    assert "is not a model folder" in at.info[0].value and at.button(key="adapt_train").disabled
    at.text_input(key="adapt_model").set_value(str(tiny_model("qwen3_moe"))).run()
    assert "is not polyroute-demo, the model this run traced" in at.info[0].value
    assert at.button(key="adapt_train").disabled
    at.text_input(key="adapt_model").set_value(str(DEMO_MODEL_DIR)).run()
    assert not at.info and not at.button(key="adapt_train").disabled


def test_training_the_demo_model_shows_the_chosen_languages_loss_before_and_after(demo_app_db: Path):
    at = open_page(PAGE)
    at.selectbox(key="adapt_target_1").set_value("kor_Hang").run()
    at.number_input(key="adapt_steps").set_value(10).run()
    assert at.multiselect(key="adapt_eval_langs_1_kor_Hang").value == ["eng_Latn"]  # by default: the target, English
    assert any("No time estimate yet" in caption.value for caption in at.caption)
    started = time.monotonic()
    at.button(key="adapt_train").click().run()
    # Running, it is in Past adaptations already, marked so.
    assert "kor_Hang · K=8 · running" in at.selectbox(key="adapt_past_run").options[0]
    stages: list[str] = []
    left: list[str] = []

    def record_stage(at) -> None:
        stages.extend(bar.proto.text.split(":")[0].split(" · ")[0] for bar in at.get("progress"))
        left.extend(bar.proto.text for bar in at.get("progress") if "s left" in bar.proto.text)

    wait_for_job(at, timeout=240, each=record_stage)
    print(f"train path: {time.monotonic() - started:.1f} s; stages seen: {list(dict.fromkeys(stages))}")
    assert not at.exception
    assert "Run 2 is complete" in at.success[0].value and "kor_Hang" in at.success[0].value
    assert "Training the selected experts" in stages
    assert left, "the progress bar never said the time left"

    with shared_store(str(demo_app_db)).reading() as store:
        (run,) = q.adaptation_runs(store)
        stored = {s.lang: s for s in q.adaptation_scores(store, run.run_id) if s.metric == "loss"}
        trained = [(e.layer, e.expert) for e in q.adaptation_experts(store, run.run_id)]
    assert (run.run_id, run.status, run.target, run.budget) == (2, "complete", "kor_Hang", 8)
    assert sorted(stored) == ["eng_Latn", "kor_Hang"]  # only those were measured
    assert run.params["zones"] == "reference" and run.params["timing"]["step_s"] > 0
    losses = first_chart(at, "Held-out loss per language, before and after training for kor_Hang")
    dots = max(losses.data, key=len)
    assert len(dots) == 2 * 2
    for _, row in dots.iterrows():
        expected = stored[row["lang"]]
        assert row["loss"] == pytest.approx(expected.before if row["when"] == "before training" else expected.after)
    table = frames(at, "loss before")[0]
    assert table["code"].tolist() == ["kor_Hang", "eng_Latn"]  # the target first
    assert dict(zip(table["code"], table["change"], strict=True)) == pytest.approx(
        {lang: s.change for lang, s in stored.items()}
    )
    assert stored["kor_Hang"].change < 0  # it learnt the target language
    assert trained == selected(demo_app_db, "kor_Hang", 8) == shown_experts(at, "experts RISE selects for kor_Hang")
    # The Past tab draws the run's own map.
    assert shown_experts(at, "The 8 experts trained for kor_Hang") == trained
    assert Path(run.adapter_dir or "").is_dir()
    # The next adaptation has an estimate from this one's speed, and reuses its losses before training.
    estimate = next(caption.value for caption in at.caption if "Should take about" in caption.value)
    assert "kor_Hang · Korean, eng_Latn · English is stored from an earlier adaptation" in estimate

    merged = demo_app_db.parent / "merged"
    at.text_input(key="new_merge_out").set_value(str(merged)).run()
    at.button(key="new_merge").click().run()
    assert not at.exception and any(f"Saved the adapted model to `{merged}`" in s.value for s in at.success)
    assert (merged / "config.json").is_file() and (merged / "adapter.json").is_file()

    # The run is a past adaptation now, and reopens there.
    assert at.selectbox(key="adapt_past_run").value == 2
    assert frames(at, "loss before")[1].equals(table)

    # A new session opens its form on the adaptation it shows below, not on the default target.
    fresh = open_page(PAGE)
    assert fresh.selectbox(key="adapt_target_1").value == "kor_Hang"
    assert frames(fresh, "loss before")[0]["code"].tolist() == ["kor_Hang", "eng_Latn"]
    fresh.selectbox(key="adapt_target_1").set_value("heb_Hebr").run()
    assert any("The last adaptation (run 2, kor_Hang" in caption.value for caption in fresh.caption)
    assert len(frames(fresh, "loss before")) == 1  # only the Past tab's: the result below follows the form


@pytest.fixture
def tiny_app_db(tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The tiny Qwen3-MoE store (run 1 traced, run 3 an adaptation of deu_Latn), as the app's store."""
    yield from _as_the_apps_store(tiny_store, tmp_path, monkeypatch)


def test_a_stored_adaptation_reopens_with_its_experts_and_scores(tiny_app_db: Path):
    at = open_page(PAGE)
    assert at.selectbox(key="adapt_past_run").value == 3
    assert shown_experts(at, "The 1 experts trained for deu_Latn") == [(0, 3)]
    (losses,) = frames(at, "loss before")
    assert losses[["code", "loss before", "loss after"]].values.tolist() == [["deu_Latn", 3.0, 2.5]]
    (benchmark,) = frames(at, "metric")  # `polyroute adapt --task` scores, beside the losses
    assert benchmark[["task", "code", "metric", "before", "after"]].values.tolist() == [
        ["belebele", "deu_Latn", "accuracy", 0.25, 0.5]
    ]
    # Its adapter folder was never saved: the page says nothing of merging it.
    assert not [e for e in at.expander if "Merge" in e.label]
    # The default model folder (the demo model) is not the model this store traced.
    assert "the model this run traced" in at.info[0].value and at.button(key="adapt_train").disabled


def test_a_store_another_process_reads_refuses_training(built_demo_store: Path, tmp_path, monkeypatch):
    db = tmp_path / "held.duckdb"
    shutil.copyfile(built_demo_store, db)
    monkeypatch.setenv("POLYROUTE_DB", str(db))
    try:
        with store_held_by_another_process(db, read_only=True):
            at = open_page(PAGE)
            assert "opened the store read-only, so it cannot train" in at.info[0].value
            assert "in use by process" in at.info[0].value and at.button(key="adapt_train").disabled
            assert chart(at, "experts RISE selects")  # choosing experts needs no writing
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()
