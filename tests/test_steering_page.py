"""The Steering page with Streamlit's AppTest, on a copy of a demo store (the demo model traced
over the built-in corpus) and the demo model itself (4 layers, 8 experts, top-2; middle band = layer 2):
the default steering demo changes the text, every preset has its controls, and a preset that finds
no expert says why in page words and offers settings that work."""

from __future__ import annotations

import json

import pytest

from polyroute.ui.steering import EXCLUSIVE, GAINED, KEPT, NONE, PUBLISHED, STEERED, UNSTEERED, preset_key
from polyroute.workflows.steer import DEMO_STEERING
from tests.apptest import chart, charts, open_page
from tests.helpers import generate, steering_controls

PAGE = "pages/steering.py"
MASS = "Routing mass on the plan's experts"


def test_a_preset_builds_a_plan_whose_experts_are_shown(demo_app_db):
    at = open_page(PAGE)
    assert at.title[0].value == "Steering"
    assert at.text_input(key="steering_prompt").value == DEMO_STEERING.prompt
    assert not at.warning and not charts(at)  # nothing generated before Generate
    # The default preset is the steering demo: a language's experts against English in its band.
    plan = at.dataframe[0].value
    first, last = DEMO_STEERING.band
    assert plan["layer"].between(first, last).all() and set(plan["method"]) == {"soft"}
    assert set(plan["strength"]) == {f"{DEMO_STEERING.strength:g}"}
    assert plan["experts"].str.len().min() > 0
    captions = " ".join(c.value for c in at.caption)
    assert f"language experts: run 1, lang {DEMO_STEERING.lang} vs eng_Latn" in captions

    at.radio(key="steering_preset").set_value(EXCLUSIVE).run()
    at.selectbox(key="steering_lang").set_value("zho_Hans").run()
    at.select_slider(key="steering_preset_band_1_exclusive").set_value((0, 3)).run()
    at.slider(key="steering_thr_exclusive").set_value(0.1).run()
    assert not at.exception and not at.warning
    plan = at.dataframe[0].value
    assert set(plan["method"]) == {"ablate"} and plan["layer"].between(0, 3).all()


def test_the_default_demo_changes_the_text(demo_app_db):
    at = open_page(PAGE)
    plain, steered = generate(at)
    result = at.session_state["steering_result"][1]
    assert result.plain != result.steered and plain != steered
    assert not any("did not change the text" in box.value for box in at.info)
    # The strength reaches the plan: the steered layers' change shows on a scale that fits it.
    masses = chart(at, MASS).rows()
    assert "domain" not in json.dumps(chart(at, MASS).spec["encoding"]["y"].get("scale", {}))
    change = masses[masses["generation"] == STEERED].set_index("layer")["change"]
    assert change.loc[DEMO_STEERING.band[0] : DEMO_STEERING.band[1]].max() > 0.05
    tokens = result.tokens
    assert (tokens["status"] == GAINED).any() and set(tokens["status"]) <= {GAINED, KEPT, NONE}
    assert any(":green-background[" in block.value for block in at.markdown)  # the token strip


def test_a_preset_that_finds_no_expert_says_why_and_offers_settings_that_work(demo_app_db):
    at = open_page(PAGE)
    at.radio(key="steering_preset").set_value(EXCLUSIVE).run()
    at.slider(key="steering_thr_exclusive").set_value(0.95).run()
    assert not at.exception
    message = at.warning[0].value
    assert "has no exclusive expert at k 8, thr 0.95" in message  # k clamped to the model's 8 experts
    assert "--" not in message and "the share threshold" in message
    offers = [button for button in at.button if button.label.startswith("Use ")]
    assert offers and not at.dataframe
    offers[0].click().run()
    assert not at.exception and not at.warning
    assert set(at.dataframe[0].value["method"]) == {"ablate"}


@pytest.mark.parametrize("kind", PUBLISHED)
def test_every_published_preset_has_its_controls_and_a_plan_or_a_way_to_one(demo_app_db, kind):
    at = open_page(PAGE)
    at.radio(key="steering_preset").set_value(kind).run()
    assert not at.exception
    assert at.number_input(key=f"steering_k_{preset_key(kind)}").value <= 8  # the published k of 15-32, clamped
    strength = at.slider(key=f"steering_preset_strength_{preset_key(kind)}")
    assert strength.disabled == (kind != "2601.14050")  # ablation has no strength
    if at.warning:  # no expert at the published threshold: the page offers one that finds some
        assert "--" not in at.warning[0].value
        next(button for button in at.button if button.label.startswith("Use ")).click().run()
        assert not at.exception and not at.warning
    assert at.dataframe[0].value["method"].iloc[0] in ("adaptive", "ablate")


def test_a_band_of_one_layer_is_said_as_one(demo_app_db):
    at = open_page(PAGE)
    at.select_slider(key="steering_preset_band_1_language").set_value((2, 2)).run()
    assert not at.exception
    captions = [c.value for c in at.caption]
    assert "Steers layer 2." in captions and not any("2-2" in c for c in captions)


def test_generate_shows_both_outputs_and_a_strong_push_moves_mass_in_the_band(demo_app_db):
    at = open_page(PAGE)
    at.text_input(key="steering_prompt").set_value("Please enter a valid").run()
    at = steering_controls(at, strength=4.0, experts=[5])
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


def test_a_run_of_another_model_shape_says_how_to_steer_with_it(app_db):
    """The planted store's run (16 experts, 8 layers) against the demo model (8 experts, 4 layers)."""
    at = open_page(PAGE)
    captions = " ".join(c.value for c in at.caption)
    assert "a model of another shape than the one above (8 experts, 4 MoE layers)" in captions
    assert "put that model's folder above, or choose a run traced with this model in the sidebar" in captions
    assert not at.exception
