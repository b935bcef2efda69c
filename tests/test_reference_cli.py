"""The published rules from the command line: RISE's two zone rules (`analyze rise --zones`), the
2601.14050 presets (`plan shared|exclusive --preset`) on the demo model and on a 48-layer model, and
the routing distributions an id-only run cannot give (`analyze --source`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from moe_core.analysis.rise import ZONE_RULES, ZONES, select_rise
from moe_core.steering.plan import SteeringPlan
from moe_core.steering.presets import PRESETS, preset_for, preset_names
from moe_core.synthetic import PlantedRouting
from polyroute.cli import main
from polyroute.run_data import RunData, Selection
from store import open_store
from tests.conftest import trace_synthetic
from tests.helpers import make_id_only

WIDE_PLANTED = {"tam_Taml": ((2, 5), (24, 5), (45, 5))}  # one exclusive expert in each published window


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _run_data(db: Path, **selection) -> RunData:
    return RunData(open_store(db, read_only=True), 1, Selection(**selection))


# RISE: --zones ---------------------------------------------------------------------------------


def _rise(capsys, db: Path, *extra: str) -> dict:
    argv = ("analyze", "rise", "--run", "1", "--db", str(db), "--target", "kor_Hang", "--budget", "10")
    code, out, err = _run(capsys, *argv, "--format", "json", *extra)
    assert code == 0, err
    return json.loads(out)


def test_rise_zones_select_as_the_chosen_rule_and_the_two_rules_differ_on_the_demo(built_demo_store, capsys):
    data = _run_data(built_demo_store)
    selected = {}
    for zones in ZONE_RULES:
        payload = _rise(capsys, built_demo_store, "--zones", zones)
        expected = select_rise(
            data.frequencies, data.langs.index("kor_Hang"), layers=data.layers, n_layers=data.layout.n_layers,
            budget=10, zones=zones,
        )  # fmt: skip
        selected[zones] = [(row["layer"], row["expert"]) for row in payload["tables"]["selected"]]
        assert selected[zones] == [(data.layers[y], e) for y, e in expected.experts]
        assert [row["zone"] for row in payload["tables"]["zones"]] == [ZONES[z] for z in expected.layer_zones]
        assert payload["params"]["zones"] == zones
        assert payload["summary"]["zone_quotas"] == ",".join(map(str, expected.quotas))
    assert [(row["layer"], row["expert"]) for row in _rise(capsys, built_demo_store)["tables"]["selected"]] == (
        selected["reference"]
    )  # the default
    # 4 decoder layers: the reference's bounds round(1.5) = round(2.5) = 2 leave no middle zone, so the
    # middle's share goes to the zone with most room; by depth fraction layer 2 is the middle zone.
    assert selected["reference"] != selected["fraction"]
    zones_of = {
        zones: {row["zone"] for row in _rise(capsys, built_demo_store, "--zones", zones)["tables"]["zones"]}
        for zones in ZONE_RULES
    }
    assert zones_of == {"reference": {"shallow", "deep"}, "fraction": {"shallow", "middle", "deep"}}
    code, _, err = _run(capsys, "analyze", "rise", "--run", "1", "--db", str(built_demo_store), "--target", "ko",
                        "--zones", "depth")  # fmt: skip
    assert code == 2 and "--zones" in err and "reference" in err and "fraction" in err


# presets: --preset ----------------------------------------------------------------------------


def _plan(capsys, tmp_path: Path, db: Path, *argv: str) -> SteeringPlan:
    target = tmp_path / "plan.json"
    code, _, err = _run(capsys, "plan", *argv, "--run", "1", "--db", str(db), "-o", str(target))
    assert code == 0, err
    return SteeringPlan.load(target)


def _pairs(plan: SteeringPlan) -> set[tuple[int, int]]:
    return {(entry.layer, e) for entry in plan.experts for e in entry.experts}


def _shares(freq: np.ndarray, k: int) -> np.ndarray:
    """[L, Y, E] -> each language's k most used experts per layer kept (ties: lower expert), then shared."""
    kept = np.zeros_like(freq)
    for i, y in np.ndindex(freq.shape[:2]):
        top = sorted(range(freq.shape[2]), key=lambda e: (-freq[i, y, e], e))[:k]
        kept[i, y, top] = freq[i, y, top]
    return kept / (kept.sum(axis=0) + 1e-10)


def _expected_shared(db: Path, langs: list[str], band: tuple[int, int], k: int, thr: float) -> set[tuple[int, int]]:
    data = _run_data(db, langs=langs, layers=band)
    shares = _shares(data.frequencies, k)
    mask = (shares > 0).any(axis=0) & (shares < thr).all(axis=0) & (shares[0] > 0)
    return {(data.layers[y], int(e)) for y, e in zip(*np.nonzero(mask), strict=True)}


def _expected_exclusive(db: Path, lang: str, band: tuple[int, int], k: int, thr: float) -> set[tuple[int, int]]:
    data = _run_data(db, layers=band)
    shares = _shares(data.frequencies, k)[data.langs.index(lang)]
    return {(data.layers[y], int(e)) for y, e in zip(*np.nonzero(shares > thr), strict=True)}


def test_the_presets_are_the_published_ones_and_plan_help_lists_them(capsys):
    assert preset_names("shared") == ("2601.14050",)
    assert preset_names("exclusive") == ("2601.14050-mgsm", "2601.14050-flores", "2601.14050-xquad")
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    out = capsys.readouterr().out
    for name in PRESETS:
        assert sum(line.lstrip().startswith(name + " ") for line in out.splitlines()) == 1
    assert "round(p (Y - 1) / 47)" in out and "override" in out
    for kind in ("shared", "exclusive"):
        with pytest.raises(SystemExit):
            main(["plan", kind, "--help"])
        assert "override" in capsys.readouterr().out


def test_the_shared_preset_on_the_demo_model(built_demo_store, tmp_path, capsys):
    data = _run_data(built_demo_store)
    preset = preset_for("2601.14050", moe_layers=data.layers)
    (band,) = (window.band for window in preset.windows)
    assert band == (1, 2)  # 10-39 of 48 on 4 layers
    k = min(preset.k, data.layout.n_experts)  # the published k 20 keeps all of the demo's 8 experts, said as k 8
    assert k == 8
    for langs in (["eng_Latn", "zho_Hans"], ["zho_Hans", "eng_Latn"]):
        plan = _plan(capsys, tmp_path, built_demo_store, "shared", "--preset", "2601.14050", "--langs", ",".join(langs))
        assert plan.band == band and plan.method == preset.method
        assert plan.strength == dict(preset.strengths)[langs[0]]  # 0.022 from English, 0.034 from Chinese
        assert f"k {k}, thr {preset.thr}" in plan.source and "preset 2601.14050" in plan.source
        assert _pairs(plan) == _expected_shared(built_demo_store, langs, band, preset.k, preset.thr)
    # Without --langs, the published pool (English first); flags given override the preset.
    assert _plan(capsys, tmp_path, built_demo_store, "shared", "--preset", "2601.14050") == _plan(
        capsys, tmp_path, built_demo_store, "shared", "--preset", "2601.14050", "--langs", "eng_Latn,zho_Hans"
    )
    plan = _plan(capsys, tmp_path, built_demo_store, "shared", "--preset", "2601.14050", "--langs", "eng_Latn,zho_Hans",
                 "--thr", "0.8", "--layers", "2-3", "--strength", "0.5")  # fmt: skip
    assert plan.band == (2, 3) and plan.strength == 0.5 and "k 8, thr 0.8" in plan.source
    assert _pairs(plan) == _expected_shared(built_demo_store, ["eng_Latn", "zho_Hans"], (2, 3), 20, 0.8)
    code, _, err = _run(capsys, "plan", "shared", "--preset", "2601.14050", "--langs", "deu_Latn,eng_Latn", "--run",
                        "1", "--db", str(built_demo_store))  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "--strength" in err and "eng_Latn (0.022)" in err


def test_the_exclusive_presets_on_the_demo_model(built_demo_store, tmp_path, capsys):
    data = _run_data(built_demo_store)
    layers = data.layers
    # round(p 3 / 47) of the published first and last layers: 0-4, 22-26, 43-47 and 0-9, 19-28, 38-47.
    scaled = {"2601.14050-xquad": [(0, 1), (1, 2), (2, 3)]}
    for name in preset_names("exclusive"):
        preset = preset_for(name, moe_layers=layers)
        assert [w.band for w in preset.windows] == scaled.get(name, [(0, 0), (1, 2), (3, 3)])
        # 34 languages share each of the demo's 8 experts: none is exclusive at the published thr, and the
        # refusal names the k it used (the preset's, capped at the expert count), the thr and the window.
        for window in preset.windows:
            code, _, err = _run(capsys, "plan", "exclusive", "--preset", name, "--lang", "kor_Hang", "--window",
                                window.name, "--run", "1", "--db", str(built_demo_store))  # fmt: skip
            first, last = window.band
            where = f"layer {first}" if first == last else f"layers {first}-{last}"
            k = min(preset.k, data.layout.n_experts)
            assert code == 2 and f"at k {k}, thr {preset.thr} in {where}:" in err
    # With a lower thr given (it overrides the preset), the middle window has one.
    plan = _plan(capsys, tmp_path, built_demo_store, "exclusive", "--preset", "2601.14050-mgsm", "--lang", "kor_Hang",
                 "--window", "middle", "--thr", "0.1")  # fmt: skip
    assert plan.band == (1, 2) and plan.method == "ablate" and "k 8, thr 0.1" in plan.source
    assert _pairs(plan) == _expected_exclusive(built_demo_store, "kor_Hang", (1, 2), 15, 0.1) != set()
    code, _, err = _run(capsys, "plan", "exclusive", "--preset", "2601.14050", "--lang", "ko", "--window", "early",
                        "--run", "1", "--db", str(built_demo_store))  # fmt: skip
    assert code == 2 and "--preset" in err and "2601.14050-mgsm" in err


@pytest.fixture(scope="module")
def wide_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 48-layer synthetic model (every layer MoE, as Qwen3-30B-A3B) with an exclusive Tamil expert
    in each published window."""
    root = tmp_path_factory.mktemp("wide")
    plan = PlantedRouting(
        langs=("eng_Latn", "zho_Hans", "deu_Latn", "tam_Taml"),
        families=("Indo-European", "Sino-Tibetan", "Indo-European", "Dravidian"),
        n_layers=48,
        n_items=6,
        exclusive=WIDE_PLANTED,
    )
    db = root / "wide.duckdb"
    assert trace_synthetic(db, plan, root) == 1
    return db


def test_the_presets_on_a_48_layer_model_use_the_published_windows(wide_store, tmp_path, capsys):
    assert _run_data(wide_store).layers == list(range(48))
    plan = _plan(capsys, tmp_path, wide_store, "shared", "--preset", "2601.14050")
    # The preset's k 20 keeps every one of the synthetic model's 16 experts: the plan says k 16.
    assert plan.band == (10, 39) and plan.strength == 0.022 and "k 16, thr 0.7" in plan.source
    assert _pairs(plan) == _expected_shared(wide_store, ["eng_Latn", "zho_Hans"], (10, 39), 20, 0.7) != set()
    for name in preset_names("exclusive"):
        published = PRESETS[name]
        preset = preset_for(name, moe_layers=range(48))
        for window, (first, last), (layer, expert) in zip(
            preset.windows, published.windows, WIDE_PLANTED["tam_Taml"], strict=True
        ):
            plan = _plan(capsys, tmp_path, wide_store, "exclusive", "--preset", name, "--lang", "tam_Taml",
                         "--window", window.name)  # fmt: skip
            assert plan.band == window.band == (first, last)
            assert f"k {min(published.k, 16)}, thr {published.thr}" in plan.source  # k capped at 16 experts
            assert (layer, expert) in _pairs(plan)
            expected = _expected_exclusive(wide_store, "tam_Taml", (first, last), published.k, published.thr)
            assert _pairs(plan) == expected
    # A window given as A-B overrides the preset's.
    plan = _plan(capsys, tmp_path, wide_store, "exclusive", "--preset", "2601.14050-xquad", "--lang", "tam_Taml",
                 "--window", "20-30")  # fmt: skip
    assert plan.band == (20, 30) and _pairs(plan) == _expected_exclusive(wide_store, "tam_Taml", (20, 30), 32, 0.5)


# routing distributions: --source on an id-only run --------------------------------------------


@pytest.fixture(scope="module")
def id_only_store(planted_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("id_only") / "id-only.duckdb"
    shutil.copy(planted_store, db)
    make_id_only(db)
    return db


def test_an_id_only_run_says_which_sources_it_cannot_give_and_which_it_can(id_only_store, tmp_path, capsys):
    scores = tmp_path / "scores.csv"
    scores.write_text("lang,score\n" + "".join(f"{lang},{i / 10}\n" for i, lang in enumerate(
        ("deu_Latn", "rus_Cyrl", "tam_Taml", "kaz_Cyrl", "tel_Telu"))))  # fmt: skip
    every = {"divergence": [], "entropy": [], "similarity": [], "correlation": ["--scores", str(scores)]}
    for analysis, extra in every.items():
        argv = ["analyze", analysis, "--run", "1", "--db", str(id_only_store), *extra]
        for source in ("soft", "weight"):
            code, out, err = _run(capsys, *argv, "--source", source)
            assert code == 2 and out == "" and err.count("\n") == 1, (analysis, err)
            assert (
                "run 1 stored no router probabilities or routing weights (an id-only trace), so it cannot give "
                "--source soft or weight: choose --source hard" in err
            )
        code, out, err = _run(capsys, *argv, "--source", "hard", "--format", "json")
        assert code == 0, err
        if analysis != "similarity" or json.loads(out)["params"]["measure"] == "divergence":
            assert json.loads(out)["params"]["source"] == "activation_frequencies"
    # Cosine similarity reads no distribution: any source is fine.
    code, _, err = _run(capsys, "analyze", "similarity", "--run", "1", "--db", str(id_only_store), "--measure",
                        "cosine", "--source", "soft")  # fmt: skip
    assert code == 0, err
    # Analyses that count chosen experts take no --source, and say so.
    code, _, err = _run(capsys, "analyze", "shared", "--run", "1", "--db", str(id_only_store), "--source", "hard")
    assert code == 2 and "leave out --source" in err and "divergence, entropy, similarity, correlation" in err
