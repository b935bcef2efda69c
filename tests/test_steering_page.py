"""The Steering page with Streamlit's AppTest, on a copy of a demo store (the demo model traced
over the built-in corpus) and the demo model itself (4 layers, 8 experts, top-2; middle band = layer 2)."""

from __future__ import annotations

import json

import pytest

from polyroute.ui.steering import STEERED, UNSTEERED
from tests.apptest import chart, charts, open_page
from tests.helpers import generate, steering_controls

PAGE = "pages/steering.py"
MASS = "Routing mass on the plan's experts"


def test_a_preset_builds_a_plan_whose_experts_are_shown(demo_app_db):
    at = open_page(PAGE)
    assert at.title[0].value == "Steering"
    assert at.text_input(key="steering_prompt").value == "Please enter a valid"
    assert not at.warning and not charts(at)  # nothing generated before Generate
    # The default preset: zho_Hans's experts against English in the middle layer (2 of 4).
    plan = at.dataframe[0].value
    assert set(plan["layer"]) == {2} and set(plan["method"]) == {"soft"}
    assert plan["experts"].str.len().min() > 0
    assert "language experts: run 1, lang zho_Hans vs eng_Latn" in " ".join(c.value for c in at.caption)

    at.radio(key="steering_preset").set_value("silence a language's exclusive experts (ablate)").run()
    at.select_slider(key="steering_preset_band_1").set_value((0, 3)).run()
    at.slider(key="steering_thr").set_value(0.1).run()
    assert not at.exception and not at.warning
    plan = at.dataframe[0].value
    assert set(plan["method"]) == {"ablate"} and plan["layer"].between(0, 3).all()


def test_generate_shows_both_outputs_and_a_strong_push_moves_mass_in_the_band(demo_app_db):
    at = steering_controls(open_page(PAGE), strength=4.0, experts=[5])
    assert at.dataframe[0].value["layer"].tolist() == [2]
    generate(at)
    assert [c.markdown[0].value for c in at.columns[-2:]] == [
        f"**{UNSTEERED.capitalize()}**",
        f"**{STEERED.capitalize()}**",
    ]
    masses = chart(at, MASS).rows().pivot(index="layer", columns="generation", values="mass")
    assert masses.index.tolist() == [0, 1, 2, 3]
    # Layer 2 is steered: expert 5 gets far more mass; layers 0-1 come before it and route alike.
    assert masses.loc[2, STEERED] > masses.loc[2, UNSTEERED] + 0.2
    assert masses.loc[2, STEERED] > 0.4
    for layer in (0, 1):
        assert masses.loc[layer, STEERED] == pytest.approx(masses.loc[layer, UNSTEERED], abs=0.05)


def test_strength_zero_changes_nothing(demo_app_db):
    at = steering_controls(open_page(PAGE), strength=0.0, experts=[1, 3])
    plain, steered = generate(at)
    assert plain == steered and ":red-background" not in plain
    assert "did not change the text" in at.info[0].value
    masses = chart(at, MASS).rows().pivot(index="layer", columns="generation", values="mass")
    assert (masses[STEERED] - masses[UNSTEERED]).abs().max() < 1e-6


def test_impossible_plans_are_refused_with_a_message(demo_app_db):
    at = open_page(PAGE)
    at.radio(key="steering_source").set_value("a plan file").run()
    assert "Upload a plan file" in at.info[0].value
    plan = {"method": "soft", "strength": 1.0, "band": [2, 2], "experts": [{"layer": 2, "experts": [99]}]}
    at.text_area(key="steering_json").set_value(json.dumps(plan)).run()
    assert not at.exception
    assert "expert 99 of layer 2 does not exist: experts are 0-7" in at.warning[0].value
    assert not at.button  # the page stops before Generate

    at.text_area(key="steering_json").set_value("{not json").run()
    assert not at.exception and "not valid JSON" in at.warning[0].value

    # Ablating every expert leaves a token nothing to choose.
    at = steering_controls(at, method="ablate", experts=list(range(8)))
    assert not at.exception and "leaves fewer than the 2" in at.warning[0].value


def test_a_missing_model_folder_is_a_message(demo_app_db):
    at = open_page(PAGE)
    at.text_input(key="steering_model").set_value("/no/such/model").run()
    assert not at.exception and at.warning and "/no/such/model" in at.warning[0].value
