"""`polyroute steer` and `Backend.generate(..., plan)` on a real tiny model: the plan moves routing
mass onto its experts, a zero-strength plan changes nothing, and a plan the model cannot take is
refused before anything runs; `polyroute demo --steer` changes the demo prompt's text."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from moe_core.backends.base import GenerationParams
from moe_core.backends.hf import HFBackend
from moe_core.steering import LayerExperts, SteeringPlan
from moe_core.steering.hooks import Steering
from polyroute.cli import main
from polyroute.workflows.steer import DEMO_STEERING

PROMPT = "The quick brown fox jumps over the lazy dog because"


def soft_plan(strength: float, layer: int = 1, experts: tuple[int, ...] = (3,)) -> SteeringPlan:
    return SteeringPlan(
        method="soft",
        band=(layer, layer),
        experts=(LayerExperts(layer=layer, experts=experts),),
        strength=strength,
        source="test",
    )


def test_generate_with_a_plan_is_generate_inside_steering(tiny_model):
    backend = HFBackend(tiny_model("qwen3_moe"))
    params = GenerationParams(max_new_tokens=6)
    plan = soft_plan(3.0)
    through_backend = backend.generate([PROMPT], params, plan)
    with Steering(backend.model, plan):
        by_hand = backend.generate([PROMPT], params)
    assert through_backend.texts == by_hand.texts
    np.testing.assert_array_equal(through_backend.routing.expert_ids, by_hand.routing.expert_ids)
    unsteered = backend.generate([PROMPT], params)
    layer = list(unsteered.routing.layers).index(1)
    assert (through_backend.routing.expert_ids[:, layer] == 3).any(axis=-1).mean() > (
        unsteered.routing.expert_ids[:, layer] == 3
    ).any(axis=-1).mean()


def test_steer_prints_both_outputs_and_the_mass_moved(tiny_model, tmp_path: Path, capsys):
    model = tiny_model("qwen3_moe")
    plan = soft_plan(3.0).save(tmp_path / "plan.json")
    assert main(["steer", "--model", str(model), "--plan", str(plan), "--prompt", PROMPT, "--max-new-tokens", "5"]) == 0
    out = capsys.readouterr().out
    assert "unsteered: " in out and "steered:   " in out
    row = next(line.split() for line in out.splitlines() if line.startswith("1 "))
    before, after = float(row[2]), float(row[3])
    assert after > before and row[4] == f"{after - before:+.3f}"

    zero = soft_plan(0.0).save(tmp_path / "zero.json")
    assert main(["steer", "--model", str(model), "--plan", str(zero), "--prompt", PROMPT, "--max-new-tokens", "5"]) == 0
    out = capsys.readouterr().out
    texts = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith(("unsteered:", "steered:"))]
    assert texts[0] == texts[1] and out.splitlines()[-1].endswith("+0.000")


def test_steer_refuses_a_plan_the_model_cannot_take(tiny_model, tmp_path: Path, capsys):
    model = tiny_model("qwen3_moe")
    plan = soft_plan(1.0, experts=(99,)).save(tmp_path / "plan.json")
    assert main(["steer", "--model", str(model), "--plan", str(plan), "--prompt", PROMPT]) == 2
    assert "expert 99" in capsys.readouterr().err
    assert main(["steer", "--model", str(model), "--plan", str(tmp_path / "none.json"), "--prompt", PROMPT]) == 2
    assert "no plan at" in capsys.readouterr().err


def test_demo_steer_prints_the_demo_and_its_text_changes(built_demo_store: Path, tmp_path: Path, capsys):
    db = tmp_path / "demo.duckdb"
    shutil.copyfile(built_demo_store, db)
    assert main(["demo", "--db", str(db), "--steer"]) == 0
    out = capsys.readouterr().out
    assert f"steering demo: prompt {DEMO_STEERING.prompt!r}; language experts: run 1, lang {DEMO_STEERING.lang}" in out
    plain = next(line for line in out.splitlines() if line.startswith("unsteered: "))[len("unsteered: ") :]
    steered = next(line for line in out.splitlines() if line.startswith("steered:   "))[len("steered:   ") :]
    assert plain.strip() and plain != steered
    # Every steered layer's experts get more of the mass.
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    first, last = DEMO_STEERING.band
    assert [int(row[0]) for row in rows] == list(range(first, last + 1))
    assert all(float(row[-1]) > 0.3 for row in rows)
