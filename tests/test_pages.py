"""The Divergence, Expert sharing and Collect pages with Streamlit's AppTest, on a copy of the
planted synthetic store (9 languages in 3 families, 8 layers, 16 experts, top-2; tam_Taml owns
expert 5 of layer 0 and kaz_Cyrl expert 11 of layer 7): each renders, and its controls change
what it shows."""

from __future__ import annotations

from pathlib import Path

import duckdb

from moe_core.demo import DEMO_MODEL_DIR
from moe_core.steering import SteeringPlan
from store import open_store, upgrades
from store import queries as q
from tests.apptest import chart, charts, open_page, wait_for_job
from tests.helpers import STEERING_PLAN

LANGS = ["deu_Latn", "eng_Latn", "fra_Latn", "kan_Knda", "kaz_Cyrl", "tam_Taml", "tel_Telu", "tur_Latn", "uzn_Latn"]


def test_divergence_curves_follow_the_languages_band_and_reference(app_db):
    at = open_page("pages/divergence.py")
    titles = [c.title for c in charts(at)]
    assert len(titles) == 4 and "Routing divergence from eng_Latn · English, per layer" in titles
    curves = chart(at, "Routing divergence from").rows()
    assert sorted(curves["lang"].unique()) == [lang for lang in LANGS if lang != "eng_Latn"]
    assert sorted(curves["layer"].unique()) == list(range(8))
    x_scale = chart(at, "Routing divergence from").spec["layer"][-1]["encoding"]["x"]["scale"]
    assert x_scale == {"domain": [-0.5, 7.5], "nice": False}, "the axis ends at the model's last layer"
    # The planted families: a Dravidian language routes further from English than German does.
    means = curves.groupby("lang")["divergence"].mean()
    assert means["tam_Taml"] > 2 * means["deu_Latn"]
    # The default band is the middle zone (layers 3-4 of 8), shaded and averaged.
    assert "layers 3-4" in chart(at, "Mean divergence").title

    at.multiselect(key="divergence_langs_1").set_value(["tam_Taml", "deu_Latn"]).run()
    at.select_slider(key="divergence_band_1").set_value((0, 7)).run()
    assert not at.exception
    assert sorted(chart(at, "Routing divergence from").rows()["lang"].unique()) == ["deu_Latn", "tam_Taml"]
    bars = chart(at, "Mean divergence from eng_Latn · English in layers 0-7").rows()
    assert sorted(bars["lang"]) == ["deu_Latn", "tam_Taml"]

    at.selectbox(key="widget_ref").set_value("fra_Latn").run()
    assert not at.exception
    curves = chart(at, "Routing divergence from fra_Latn").rows()  # the chosen languages stay chosen
    assert sorted(curves["lang"].unique()) == ["deu_Latn", "tam_Taml"]
    assert curves["divergence"].tolist() != bars["divergence"].tolist()


def test_expert_sharing_finds_the_planted_families_and_exclusive_experts(app_db):
    at = open_page("pages/expert_sharing.py")
    assert not at.warning
    graph = chart(at, "Languages linked by the experts they share")
    nodes = max((d for d in graph.data if "community" in d), key=len)
    assert sorted(nodes["lang"]) == LANGS
    heatmap = chart(at, "How alike languages route").rows()
    assert len(heatmap) == len(LANGS) ** 2
    clusters = at.dataframe[0].value.set_index("lang")
    # Three clusters by default (three families), and they are the families.
    for family in (["eng_Latn", "deu_Latn", "fra_Latn"], ["tam_Taml", "tel_Telu", "kan_Knda"]):
        assert clusters.loc[family, "cluster"].nunique() == 1, clusters

    at.select_slider(key="sharing_band_1").set_value((0, 7)).run()
    at.slider(key="sharing_k_1").set_value(4).run()
    at.slider(key="sharing_thr").set_value(0.5).run()
    assert not at.exception
    exclusive = at.dataframe[2].value
    planted = {("tam_Taml", 0, 5), ("kaz_Cyrl", 7, 11)}
    assert planted <= set(zip(exclusive["lang"], exclusive["layer"], exclusive["expert"], strict=True))

    at.select_slider(key="sharing_band_1").set_value((7, 7)).run()
    exclusive = at.dataframe[2].value
    assert ("kaz_Cyrl", 7, 11) in set(zip(exclusive["lang"], exclusive["layer"], exclusive["expert"], strict=True))
    assert set(exclusive["layer"]) == {7}
    assert "layer 7" in chart(at, "Languages linked").title  # one layer, said as one (not "layers 7-7")


def test_collect_traces_a_run_that_the_other_pages_then_show(app_db: Path):
    at = open_page("pages/collect.py")
    assert at.text_input(key="collect_model").value == str(DEMO_MODEL_DIR)
    at.text_input(key="collect_model").set_value("/no/such/model").run()
    assert "is not a model folder" in at.info[0].value and at.button[0].disabled

    at.text_input(key="collect_model").set_value(str(DEMO_MODEL_DIR)).run()
    at.multiselect(key="collect_langs_builtin_all").set_value(["eng_Latn", "rus_Cyrl"]).run()
    at.number_input(key="collect_limit").set_value(5).run()
    at.button[0].click().run()
    assert "Run 2 is complete: 10 sentences" in wait_for_job(at).success[0].value

    at.switch_page("pages/divergence.py").run()
    at.selectbox(key="widget_model").set_value("polyroute-demo").run()
    assert not at.exception
    assert at.selectbox(key="widget_run_id").value == 2
    assert sorted(chart(at, "Routing divergence from").rows()["lang"].unique()) == ["rus_Cyrl"]


def test_collect_reports_a_failed_collection_as_a_message(app_db: Path, tmp_path: Path):
    dense = tmp_path / "dense"
    dense.mkdir()
    (dense / "config.json").write_text('{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}')
    at = open_page("pages/collect.py")
    at.text_input(key="collect_model").set_value(str(dense)).run()
    at.button[0].click().run()
    wait_for_job(at, until="warning", timeout=60)
    assert at.warning[0].value.startswith("The collection stopped:") and "Traceback" not in at.warning[0].value
    assert "point the model at an MoE checkpoint" in at.warning[0].value  # the control, never a flag
    assert "--" not in at.warning[0].value
    assert not at.exception and not at.button[0].disabled  # the user can fix the folder and start again


def test_pages_load_no_model_library():
    import subprocess
    import sys

    code = (
        "import sys, polyroute.ui.frame, polyroute.ui.charts, polyroute.background.trace; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True).stdout
    assert out.strip() == "[]"


def test_overview_counts_the_store(app_db: Path):
    with open_store(app_db, read_only=True) as store:
        tokens = sum(run.n_tokens for run in q.list_runs(store))
    at = open_page()
    assert [m.value for m in at.metric] == ["1", "1", "9", f"{tokens:,}"]
    assert len(at.get("page_link")) >= 10  # the sidebar's navigation and the map of the pages


def test_an_id_only_run_is_shown_from_activation_frequencies_and_says_so(app_db: Path):
    # What the vLLM backend stores: expert ids only, no routing weights, no router probabilities.
    con = duckdb.connect(str(app_db))
    con.execute("DELETE FROM router_probs")
    con.execute("UPDATE route_lists SET weight_codes = NULL")
    con.close()
    with open_store(app_db) as store:
        upgrades.rebuild_summaries(store, 1)  # the rows were edited by hand
    at = open_page("pages/divergence.py")
    assert any("activation frequencies" in box.value for box in at.info)
    assert not chart(at, "Routing divergence from").rows().empty
    at.switch_page("pages/token_paths.py").run()
    assert not at.exception
    assert any("expert ids only, without weights" in caption.value for caption in at.caption)
    at.switch_page("pages/expert_sharing.py").run()
    assert not at.exception and charts(at)


def test_collect_traces_with_a_steering_plan_picked_from_the_store(compare_app_db: Path):
    at = open_page("pages/collect.py")
    assert at.selectbox(key="collect_plan").value == "none"
    at.selectbox(key="collect_plan").set_value("upload").run()
    assert not at.exception, at.exception
    assert "Upload a plan file" in at.info[0].value and at.button[0].disabled
    assert at.selectbox(key="collect_plan").options[2:] == ["the plan of run 2"]  # the store's one steered run

    at.selectbox(key="collect_plan").set_value("run 2").run()
    at.multiselect(key="collect_langs_builtin_all").set_value(["eng_Latn", "rus_Cyrl"]).run()
    at.number_input(key="collect_limit").set_value(2).run()
    assert not at.button[0].disabled
    at.button[0].click().run()
    assert "Run 4 is complete: 4 sentences" in wait_for_job(at).success[0].value
    from polyroute.ui.data import shared_store

    with shared_store(str(compare_app_db)).reading() as store:  # the app holds the store open
        runs = {run.run_id: run for run in q.list_runs(store)}
    assert runs[4].plan is not None and SteeringPlan.from_json(runs[4].plan) == STEERING_PLAN
