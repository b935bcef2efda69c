"""Comparing runs (`polyroute analyze divergence --runs A,B,...`): the pure comparison against a
brute-force loop, the facade against each run's own divergence analysis, steered minus unsteered,
and the one-line refusals of the command line."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from moe_core.analysis.divergence import compare_runs
from moe_core.errors import ParameterError
from polyroute.analyses import analyze_divergence, compare_divergence
from polyroute.cli import main
from polyroute.run_data import RunData, Selection
from store import open_store
from tests.helpers import STEERED_LAYER


def _brute_mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def test_compare_runs_equals_a_brute_force_computation_per_run():
    rng = np.random.default_rng(0)
    shapes = [(4, 3), (4, 12), (4, 3)]  # run 2 is a twin of run 0 (same layers), run 1 a deeper model
    curves = [rng.random(shape) for shape in shapes]
    curves[1][2] = np.nan  # a language the deeper run lacks
    curves[0][1, 0] = np.nan  # one layer of a language without aligned pairs
    layers = [np.array([0, 1, 2]), np.arange(12), np.array([0, 1, 2])]
    n_layers = [3, 12, 3]
    bands = [np.array([False, True, False]), (np.arange(12) >= 4) & (np.arange(12) < 8), np.array([False, True, True])]
    baselines = [-1, -1, 0]
    found = compare_runs(curves, layers, n_layers, bands, baselines)
    for r, curve in enumerate(curves):
        n_langs, n_y = curve.shape
        for y in range(n_y):
            assert found.depth[r][y] == pytest.approx(layers[r][y] / (n_layers[r] - 1))
            column = [float(curve[i, y]) for i in range(n_langs)]
            np.testing.assert_allclose(found.mean_curves[r][y], _brute_mean(column))
        for i in range(n_langs):
            in_band = [float(curve[i, y]) for y in range(n_y) if bands[r][y]]
            np.testing.assert_allclose(found.band_means[r, i], _brute_mean(in_band))
            for y in range(n_y):
                base = baselines[r]
                expected = math.nan if base < 0 else float(curve[i, y]) - float(curves[base][i, y])
                np.testing.assert_allclose(found.differences[r][i, y], expected)
    assert found.depth[1][-1] == 1.0 and found.depth[0][-1] == 1.0, "both models end at depth 1"
    assert np.isnan(found.band_means[1, 2])
    with pytest.raises(ValueError, match="different layers"):
        compare_runs(curves, layers, n_layers, bands, [1, -1, -1])


def test_a_model_with_no_layer_in_the_middle_zone_has_no_band_mean_and_no_warning(compare_store):
    with open_store(compare_store, read_only=True) as store, warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" would be one
        result = analyze_divergence(RunData(store, 1, Selection(ref="eng_Latn")))
    assert result.params["band"] == "none"
    assert [row["divergence"] for row in result.table("band_mean").records()] == [None, None, None]


def test_the_comparison_holds_each_runs_own_divergence_and_steered_minus_unsteered(compare_store):
    with open_store(compare_store, read_only=True) as store:
        result = compare_divergence(store, [1, 2, 3], Selection(ref="eng_Latn"))
        own = {run: analyze_divergence(RunData(store, run, Selection(ref="eng_Latn"))) for run in (1, 2, 3)}
    runs = {row["run"]: row for row in result.table("runs").records()}
    assert runs[2]["steered"] and not runs[1]["steered"] and runs[2]["compared_with"] == 1
    assert runs[1]["compared_with"] is None and runs[3]["compared_with"] is None
    assert runs[3]["n_layers"] == 8 and runs[1]["n_layers"] == 3
    by_layer = {(row["run"], row["lang"], row["layer"]): row for row in result.table("by_layer").records()}
    for run, analysed in own.items():
        for row in analysed.table("by_layer").records():
            if row["lang"] == "eng_Latn":
                continue
            mine = by_layer[(run, row["lang"], row["layer"])]
            assert mine["divergence"] == row["divergence"]
            assert mine["depth"] == pytest.approx(row["layer"] / (runs[run]["n_layers"] - 1))
        band = {(row["run"], row["lang"]): row["divergence"] for row in result.table("band_mean").records()}
        for row in analysed.table("band_mean").records():
            if row["lang"] != "eng_Latn":  # None both: a three-layer model has no layer in the middle zone
                assert band[(run, row["lang"])] == pytest.approx(row["divergence"], abs=1e-6)
    steered = {
        (row["lang"], row["layer"]): row["difference"] for row in result.table("by_layer").records() if row["run"] == 2
    }
    plain = {
        (row["lang"], row["layer"]): row["divergence"] for row in result.table("by_layer").records() if row["run"] == 1
    }
    assert len(steered) == 3 * len(result.params["langs"].split(","))
    for (lang, layer), difference in steered.items():
        if plain[(lang, layer)] is None:  # a language only the synthetic run traced
            assert difference is None
            continue
        expected = by_layer[(2, lang, layer)]["divergence"] - plain[(lang, layer)]
        assert difference == pytest.approx(expected, abs=2e-6)
    assert all(steered[(lang, 0)] == 0 for lang in ("deu_Latn", "rus_Cyrl")), "the layer before the band is unchanged"
    assert any(abs(steered[(lang, STEERED_LAYER)]) > 1e-3 for lang in ("deu_Latn", "rus_Cyrl"))
    assert all(row["difference"] is None for row in result.table("by_layer").records() if row["run"] != 2)


def test_runs_without_the_reference_or_unknown_runs_are_refused_naming_the_parameter(compare_store):
    with open_store(compare_store, read_only=True) as store:
        with pytest.raises(ParameterError, match=r"run 3 did not trace the reference language rus_Cyrl: choose ref"):
            compare_divergence(store, [1, 3], Selection(ref="rus_Cyrl"))
        with pytest.raises(ParameterError, match="there is no traced run 9 in the store: give runs"):
            compare_divergence(store, [1, 9], Selection())
        with pytest.raises(ParameterError, match="runs needs at least two runs"):
            compare_divergence(store, [1, 1], Selection())


def test_analyze_divergence_runs_on_the_command_line(compare_store, capsys):
    db = str(compare_store)
    assert main(["analyze", "divergence", "--db", db, "--runs", "1,2,3", "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["params"]["runs"] == "1,2,3"
    assert set(payload["tables"]) == {"by_layer", "mean_by_layer", "band_mean", "runs"}
    assert main(["analyze", "divergence", "--db", db, "--runs", "1,3", "--table", "band_mean", "--format", "csv"]) == 0
    assert "run,label,lang,divergence" in capsys.readouterr().out
    assert main(["analyze", "divergence", "--db", db, "--run", "1"]) == 0  # one run, as before
    capsys.readouterr()
    for argv, message in (
        (["--runs", "1,9"], "there is no traced run 9 in the store: give --runs ids of trace runs"),
        (["--runs", "1,3", "--ref", "rus_Cyrl"], "choose --ref among the languages every run of --runs traced"),
        (["--runs", "1"], "--runs needs at least two runs"),
        (["--runs", "1,x"], "--runs must be a whole number"),
        (["--runs", "1,2", "--run", "1"], "not both"),
        ([], "divergence needs --run RUN_ID"),
    ):
        assert main(["analyze", "divergence", "--db", db, *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
