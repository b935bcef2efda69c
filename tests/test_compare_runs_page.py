"""The Compare runs page (AppTest): two runs' curves on normalised depth, the steered-minus-unsteered
chart, the band means per run, choices kept in the URL, and a reference some run lacks."""

from __future__ import annotations

from tests.apptest import chart, charts, open_page
from tests.helpers import STEERED_LAYER

PAGE = "pages/compare_runs.py"


def test_two_runs_of_different_depth_line_up_and_the_steered_one_shows_what_changed(compare_app_db):
    at = open_page(PAGE)
    # The default: the two newest runs (2, steered, and 3, the 8-layer synthetic one).
    assert at.multiselect(key="compare_runs").value == [2, 3]
    at.multiselect(key="compare_runs").set_value([1, 2]).run()
    assert not at.exception, at.exception
    assert at.query_params["runs"] == "1,2"
    titles = [c.title for c in charts(at)]
    assert len(titles) == 2, titles  # no middle-band bars: neither 3-layer model has a middle-zone layer
    assert any("no middle-band mean to compare" in info.value for info in at.info)
    curves = chart(at, "Routing divergence from eng_Latn · English by depth").rows()
    assert sorted(curves["run"].unique()) == [1, 2]
    assert sorted(curves["depth"].unique()) == [0.0, 0.5, 1.0]
    assert sorted(curves["label"].unique()) == ["run 1 · qwen3_moe", "run 2 · qwen3_moe · steered"]
    difference = chart(at, "What steering changed").rows()
    assert set(difference["run"]) == {2}
    by_layer = difference.set_index("layer")["difference"]
    assert by_layer[0] == 0 and abs(by_layer[STEERED_LAYER]) > 1e-3

    at.multiselect(key="compare_runs").set_value([1, 3]).run()
    at.selectbox(key="compare_lang").set_value("deu_Latn").run()
    assert not at.exception, at.exception
    assert at.query_params["lang"] == "deu_Latn"
    curves = chart(at, "by depth: deu_Latn").rows()
    assert curves.groupby("run")["depth"].max().tolist() == [1.0, 1.0], "a 3-layer and an 8-layer model both end at 1"
    assert len(curves[curves["run"] == 3]) == 8
    assert any("steered run" in info.value for info in at.info), "no steered pair: the page says so"
    assert len(charts(at)) == 2
    bars = chart(at, "middle band").rows()
    assert set(bars["run"]) == {3}, "a three-layer model has no layer in the middle zone; the 8-layer one has"
    assert any(caption.value.startswith("Not drawn: run 1,") for caption in at.caption)


def test_a_link_reopens_the_choices_and_the_reference_is_one_every_run_traced(compare_app_db):
    from streamlit.testing.v1 import AppTest

    from tests.apptest import APP

    at = AppTest.from_file(APP, default_timeout=90)
    at.query_params["runs"] = "1,3"
    at.query_params["ref"] = "deu_Latn"
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    assert at.multiselect(key="compare_runs").value == [1, 3]
    reference = at.selectbox(key="compare_ref")
    assert reference.value == "deu_Latn"
    assert reference.options == ["deu_Latn · German", "eng_Latn · English"], "rus_Cyrl: run 3 lacks it"
    assert "from deu_Latn · German" in chart(at, "by depth").title
