"""Every registered analysis returns a typed result: its arrays have the shapes its docstring gives
(L languages, Y layers, E experts, ...), and its display tables say what the arrays hold, row by
row, on the planted run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moe_core.analysis import rise
from polyroute import analyses as a
from polyroute.analyses.registry import ANALYSES, run_analysis
from polyroute.run_data import AnalysisResult, RunData, Selection
from store import open_store

# Each case: (the registered analysis, its parameters' values) on the planted run 1.
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "divergence": ("divergence", {}),
    "entropy": ("entropy", {}),
    "consistency": ("consistency", {"max_pairs": 50, "seed": 3}),
    "experts": ("experts", {"tau": 0.25}),
    "experts-task": ("experts", {"tau": 0.0, "ref_run": 1}),
    "shared": ("shared", {"k": 4, "thr": 0.4, "group": ["tam_Taml", "tel_Telu"]}),
    "rise": ("rise", {"target": "tam_Taml", "budget": 12, "ratios": (0.5, 0.25, 0.25)}),
    "similarity": ("similarity", {"measure": "cosine"}),
    "isolation": ("isolation", {"high": 3}),
    "expert": ("expert", {"layer": 2, "expert": 5, "sequences": 4, "top_tokens": 3}),
    "correlation": ("correlation", {"scores": {"deu_Latn": 0.8, "tam_Taml": 0.4, "tur_Latn": 0.7, "kaz_Cyrl": 0.5}}),
}


@pytest.fixture(scope="module")
def results(planted_store: Path) -> Iterator[dict[str, AnalysisResult]]:
    with open_store(planted_store, read_only=True) as store:
        data = RunData(store, 1, Selection())
        yield {case: run_analysis(name, data, values) for case, (name, values) in CASES.items()}


def test_every_registered_analysis_has_a_case():
    assert {name for name, _ in CASES.values()} == set(ANALYSES)


def test_a_parameter_left_out_takes_the_functions_default_not_the_command_lines_text(planted_store: Path):
    with open_store(planted_store, read_only=True) as store:
        data = RunData(store, 1, Selection())
        result = run_analysis("rise", data, {"target": "tam_Taml"})  # ratios: a tuple, not "0.35,0.25,0.4"
        assert result.params["ratios"] == ",".join(map(str, rise.DEFAULT_RATIOS))


def same(shown: Any, value: Any) -> bool:
    """A table's cell says the array's value: None for NaN, else equal to 6 decimals."""
    if isinstance(value, (float, np.floating)) and np.isnan(value):
        return shown is None
    return shown is not None and shown == pytest.approx(float(value), abs=5e-7)


def shapes(result: AnalysisResult, letters: dict[str, int], **expected: str) -> None:
    """Each named array has the shape its letters give (`LY` is [L, Y]; digits stand for themselves)."""
    for name, shape in expected.items():
        want = tuple(int(c) if c.isdigit() else letters[c] for c in shape)
        assert np.shape(getattr(result, name)) == want, (name, np.shape(getattr(result, name)), want)


def check_divergence(result: a.DivergenceResult, n: dict[str, int]) -> None:
    shapes(result, n, normalised="LY", js="LY", pairs="L", band="Y", band_mean="L")
    rows = result.table("by_layer").records()
    assert len(rows) == n["L"] * n["Y"]
    for row in rows:
        i, y = result.langs.index(row["lang"]), result.layers.index(row["layer"])
        assert same(row["divergence"], result.normalised[i, y]) and same(row["js"], result.js[i, y])
        assert row["pairs"] == result.pairs[i]
    assert result.band.any()  # the planted model's middle zone holds MoE layers
    for row in result.table("band_mean").records():
        i = result.langs.index(row["lang"])
        assert same(row["divergence"], result.band_mean[i])
        assert same(row["divergence"], np.mean(result.normalised[i, result.band]))


def check_entropy(result: a.EntropyResult, n: dict[str, int]) -> None:
    shapes(result, n, entropy="LY", normalised="LY")
    assert result.token_entropy is None  # the planted run stored no logits
    np.testing.assert_allclose(result.normalised, result.entropy / np.log(n["E"]))
    rows = result.table("by_layer").records()
    assert len(rows) == n["L"] * n["Y"]
    for row in rows:
        i, y = result.langs.index(row["lang"]), result.layers.index(row["layer"])
        assert same(row["entropy"], result.entropy[i, y]) and same(row["normalised"], result.normalised[i, y])


def check_consistency(result: a.ConsistencyResult, n: dict[str, int]) -> None:
    shapes(result, n, consistency="LY", sequences="L")
    rows = result.table("by_layer").records()
    assert len(rows) == n["L"] * n["Y"]
    for row in rows:
        i, y = result.langs.index(row["lang"]), result.layers.index(row["layer"])
        assert same(row["consistency"], result.consistency[i, y]) and row["sequences"] == result.sequences[i]


def check_experts(result: a.LanguageExpertsResult, n: dict[str, int]) -> None:
    shapes(result, n, frequency="LYE", delta="LYE", specialised="LYE", multilingual="YE")
    others = np.arange(n["L"]) != result.ref
    assert (result.specialised[others] == (result.delta[others] > 0.25)).all()
    assert not result.specialised[result.ref].any()
    rows = result.table("specialised").records()
    found = {(result.langs.index(r["lang"]), result.layers.index(r["layer"]), r["expert"]) for r in rows}
    assert rows and found == {tuple(map(int, at)) for at in np.argwhere(result.specialised)}
    for row in rows:
        i, y, e = result.langs.index(row["lang"]), result.layers.index(row["layer"]), row["expert"]
        assert same(row["delta"], result.delta[i, y, e]) and same(row["target_freq"], result.frequency[i, y, e])
        assert same(row["ref_freq"], result.frequency[result.ref, y, e])
    counts = {r["layer"]: r["experts"] for r in result.table("multilingual_per_layer").records()}
    assert counts == {layer: int(result.multilingual[y].sum()) for y, layer in enumerate(result.layers)}


def check_task_experts(result: a.TaskExpertsResult, n: dict[str, int]) -> None:
    shapes(result, n, task_frequency="YE", generic_frequency="YE", delta="YE", specialised="YE")
    # The run against itself: no expert is used more than by itself.
    assert not result.delta.any() and not result.specialised.any() and not result.table("specialised").rows


def check_shared(result: a.SharedResult, n: dict[str, int]) -> None:
    shapes(result, n, shares="LYE", shared="YE", exclusive="LYE", on_shared="LY", on_exclusive="LY", in_group="L")
    shapes(result, n, group_exclusive="YE")
    shared = result.table("shared").records()
    assert {(result.layers.index(r["layer"]), r["expert"]) for r in shared} == {
        tuple(map(int, at)) for at in np.argwhere(result.shared)
    }
    for row in shared:
        y, e = result.layers.index(row["layer"]), row["expert"]
        assert same(row["max_share"], result.shares[:, y, e].max())
    exclusive = result.table("exclusive").records()
    assert exclusive and len(exclusive) == int(result.exclusive.sum())
    for row in exclusive:
        i, y, e = result.langs.index(row["lang"]), result.layers.index(row["layer"]), row["expert"]
        assert result.exclusive[i, y, e] and same(row["share"], result.shares[i, y, e])
    for row in result.table("reliance").records():
        i, y = result.langs.index(row["lang"]), result.layers.index(row["layer"])
        assert same(row["on_shared"], result.on_shared[i, y]) and same(row["on_exclusive"], result.on_exclusive[i, y])
    assert result.in_group is not None and result.group_exclusive is not None
    assert [result.langs[i] for i in np.flatnonzero(result.in_group)] == ["tam_Taml", "tel_Telu"]
    group = result.table("group_exclusive").records()
    assert len(group) == int(result.group_exclusive.sum())
    for row in group:
        y, e = result.layers.index(row["layer"]), row["expert"]
        assert same(row["group_share"], result.shares[result.in_group, y, e].sum())


def check_rise(result: a.RiseResult, n: dict[str, int]) -> None:
    shapes(result, n, layer_zones="Y", selected="K2", score="YE", specificity="YE", overlap="YE")
    shapes(result, n, target_frequency="YE", mean_frequency="YE")
    rows = result.table("selected").records()
    assert [[result.layers.index(r["layer"]), r["expert"]] for r in rows] == result.selected.tolist()
    for rank, row in enumerate(rows):
        y, e = result.layers.index(row["layer"]), row["expert"]
        assert row["rank"] == rank + 1 and row["zone"] == ("shallow", "middle", "deep")[result.layer_zones[y]]
        assert same(row["score"], result.score[y, e]) and same(row["specificity"], result.specificity[y, e])
        assert same(row["overlap"], result.overlap[y, e]) and same(row["target_freq"], result.target_frequency[y, e])
        assert same(row["mean_freq"], result.mean_frequency[y, e])
    zones = result.table("zones").records()
    assert [r["selected"] for r in zones] == [int((result.selected[:, 0] == y).sum()) for y in range(n["Y"])]


def check_similarity(result: a.SimilarityResult, n: dict[str, int]) -> None:
    n = {**n, "G": len(result.table("graph").rows)}
    shapes(result, n, similarity="LL", clusters="L", communities="L", edges="G2", shared="G")
    assert len(result.families) == n["L"]
    for row in result.table("similarity").records():
        i, j = result.langs.index(row["lang_a"]), result.langs.index(row["lang_b"])
        assert same(row["similarity"], result.similarity[i, j])
    for i, row in enumerate(result.table("clusters").records()):
        assert (row["lang"], row["family"]) == (result.langs[i], result.families[i])
        assert (row["cluster"], row["community"]) == (result.clusters[i], result.communities[i])
    graph = [(r["lang_a"], r["lang_b"], r["shared_experts"]) for r in result.table("graph").records()]
    assert graph and graph == [
        (result.langs[i], result.langs[j], int(k)) for (i, j), k in zip(result.edges, result.shared, strict=True)
    ]


def check_isolation(result: a.IsolationResult, n: dict[str, int]) -> None:
    n = {**n, "M": int(result.low.sum())}
    shapes(result, n, high="L", low="L", depth="Y", overlap="Y", low_overlap="MY")
    assert len(result.resource_classes) == n["L"] and result.high.any() and result.low.any()
    for y, row in enumerate(result.table("by_layer").records()):
        assert row["layer"] == result.layers[y] and same(row["overlap"], result.overlap[y])
        assert row["depth"] == pytest.approx(result.depth[y], abs=5e-4)
    rows = result.table("by_language").records()
    assert len(rows) == n["M"] * n["Y"]
    low = [result.langs[i] for i in np.flatnonzero(result.low)]
    for row in rows:
        m, y = low.index(row["lang"]), result.layers.index(row["layer"])
        assert same(row["overlap"], result.low_overlap[m, y])


def check_expert(result: a.ExpertResult, n: dict[str, int]) -> None:
    n = {**n, "W": len(result.neighbourhood)}
    shapes(result, n, frequency="LY", rank="LY", hits="L", tokens="L", neighbourhood="W", coselected="E")
    shapes(result, n, layer_frequency="E", sampled="L", candidates="L")
    y = result.layers.index(2)
    for i, row in enumerate(result.table("by_language").records()):
        assert row["lang"] == result.langs[i] and same(row["frequency"], result.frequency[i, y])
        assert (row["hits"], row["tokens"], row["rank"]) == (result.hits[i], result.tokens[i], result.rank[i, y])
        assert same(row["frequency"], result.hits[i] / result.tokens[i])  # the frequency is hits per token
    around = result.table("neighbourhood").records()
    assert {r["layer"] for r in around} == {result.layers[w] for w in result.neighbourhood} == {0, 1, 2, 3, 4}
    for row in around:
        i, w = result.langs.index(row["lang"]), result.layers.index(row["layer"])
        assert same(row["frequency"], result.frequency[i, w]) and row["rank"] == result.rank[i, w]
    partners = result.table("coselected").records()
    assert partners and [r["tokens"] for r in partners] == sorted(
        (int(c) for e, c in enumerate(result.coselected) if e != 5 and c), reverse=True
    )
    for row in partners:
        assert same(row["frequency"], result.layer_frequency[row["expert"]])
    assert [r["sequences"] for r in result.table("sample").records()] == result.sampled.tolist()
    assert [r["label"] for r in result.table("labels").records()] == [found.label for found in result.labels]
    assert [r["token"] for r in result.table("top_tokens").records()] == [t.token for t in result.top_tokens]


def check_correlation(result: a.CorrelationResult, n: dict[str, int]) -> None:
    n = {**n, "N": len(result.langs)}
    shapes(result, n, divergence="N", scores="N")
    assert result.langs == ["deu_Latn", "kaz_Cyrl", "tam_Taml", "tur_Latn"] and result.score_name == "score"
    for i, row in enumerate(result.table("by_language").records()):
        assert row["lang"] == result.langs[i]
        assert same(row["divergence"], result.divergence[i]) and same(row["score"], result.scores[i])


CHECKS: dict[str, tuple[type[AnalysisResult], Callable[[Any, dict[str, int]], None]]] = {
    "divergence": (a.DivergenceResult, check_divergence),
    "entropy": (a.EntropyResult, check_entropy),
    "consistency": (a.ConsistencyResult, check_consistency),
    "experts": (a.LanguageExpertsResult, check_experts),
    "experts-task": (a.TaskExpertsResult, check_task_experts),
    "shared": (a.SharedResult, check_shared),
    "rise": (a.RiseResult, check_rise),
    "similarity": (a.SimilarityResult, check_similarity),
    "isolation": (a.IsolationResult, check_isolation),
    "expert": (a.ExpertResult, check_expert),
    "correlation": (a.CorrelationResult, check_correlation),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_typed_arrays_have_their_shapes_and_the_tables_show_them(results, case):
    result = results[case]
    kind, check = CHECKS[case]
    assert type(result) is kind
    letters = {"L": 9, "Y": 8, "E": 16, "K": CASES[case][1].get("budget", 0)}  # the planted run; rise's budget
    if hasattr(result, "langs") and case != "correlation":
        assert len(result.langs) == letters["L"]
    if hasattr(result, "layers"):
        assert result.layers == list(range(8))
    check(result, letters)


def test_the_apis_result_reaches_the_typed_arrays(planted_store: Path):
    import polyroute as pr

    result = pr.open(planted_store).run(1).divergence(langs="eng_Latn,tam_Taml,kaz_Cyrl", layers=(2, 5))
    typed = result.typed
    assert isinstance(typed, a.DivergenceResult) and typed.langs == ["eng_Latn", "tam_Taml", "kaz_Cyrl"]  # as asked
    assert typed.layers == [2, 3, 4, 5]
    shown = result.frame["divergence"].to_numpy(dtype=float).reshape(3, 4)
    np.testing.assert_allclose(shown, typed.normalised, atol=5e-7)
    assert not typed.normalised[0].any() and typed.normalised[1:].all()  # the reference's own is 0


def test_the_comparisons_arrays_have_their_shapes_and_the_tables_show_them(compare_store: Path):
    with open_store(compare_store, read_only=True) as store:
        result = a.compare_divergence(store, [1, 2, 3], Selection())
    assert ANALYSES["divergence"].compare is a.compare_divergence  # the one comparison registered
    assert isinstance(result, a.ComparisonResult) and result.runs == [1, 2, 3]
    assert result.compared_with == [None, 1, None] and result.steered == [False, True, False]
    compared, n_langs = result.comparison, len(result.langs)
    assert np.shape(compared.band_means) == (3, n_langs)
    for r, layers in enumerate(result.layers):
        assert len(layers) == result.n_layers[r] == (3, 3, 8)[r]
        for arrays in (result.curves, compared.differences):
            assert np.shape(arrays[r]) == (n_langs, len(layers))
        assert np.shape(compared.depth[r]) == np.shape(compared.mean_curves[r]) == (len(layers),)
    np.testing.assert_allclose(compared.differences[1], result.curves[1] - result.curves[0])
    rows = result.table("by_layer").records()
    assert len(rows) == n_langs * sum(map(len, result.layers))
    for row in rows:
        r = result.runs.index(row["run"])
        i, y = result.langs.index(row["lang"]), result.layers[r].index(row["layer"])
        assert same(row["depth"], compared.depth[r][y]) and same(row["divergence"], result.curves[r][i, y])
        assert same(row["difference"], compared.differences[r][i, y])
    for row in result.table("mean_by_layer").records():
        r = result.runs.index(row["run"])
        y = result.layers[r].index(row["layer"])
        assert same(row["divergence"], compared.mean_curves[r][y])
        assert same(row["difference"], compared.mean_differences[r][y])
    for row in result.table("band_mean").records():
        assert same(
            row["divergence"], compared.band_means[result.runs.index(row["run"]), result.langs.index(row["lang"])]
        )
    described = result.table("runs").records()
    assert [(d["compared_with"], d["n_layers"], d["band"]) for d in described] == list(
        zip(result.compared_with, result.n_layers, result.bands, strict=True)
    )
