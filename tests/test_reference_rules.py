"""The engine against its papers' reference code, with the reference rules written out here:
RISE's selection (init-neok/rise, `rise/expert_selector.py`), the published presets of 2601.14050
(conctsai/Multilingualism-in-Mixture-of-Experts-LLMs, `scripts/`), and the `weight` distribution
against the "total actual weight" of 2510.04694's code (lucasbandarkar/xl_moe_alignment,
`routing_analysis/get_routing_weights.py`). Nothing here imports the helpers under test to build
the expected values.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from moe_core.analysis import rise, summaries
from moe_core.steering import scoring
from moe_core.steering.plan import ABLATE, ADAPTIVE, PlanError
from moe_core.steering.presets import PRESETS, preset_for, preset_names, scale_position

RNG = np.random.default_rng(21)


# RISE, as the reference selects --------------------------------------------------------------


def _reference_rise(freq, target, n_layers, budget, ratios=(0.35, 0.25, 0.40), alpha=10.0):
    """RISESelector.select, restated: freq [langs, n_layers, E] over every decoder layer (the
    reference's stats hold all of them). Returns (sorted (layer, expert) list, per-zone counts)."""
    n_langs, _, n_experts = freq.shape
    l1 = round(n_layers * 0.375)
    l2 = round(n_layers * (0.375 + 0.25))
    zone_layers = {"shallow": list(range(0, l1)), "middle": list(range(l1, l2)), "deep": list(range(l2, n_layers))}

    def mean(layer):
        return np.mean([freq[lang, layer] for lang in range(n_langs)], axis=0)

    def spec(layer):
        m = mean(layer)
        s = freq[target, layer] / np.where(m > 0, m, 1e-8)
        return s * (1.0 + alpha * freq[target, layer])

    def ovlp(layer):
        rows = np.stack([freq[lang, layer] for lang in range(n_langs)])
        mu, sd = np.mean(rows, axis=0), np.std(rows, axis=0)
        o = 1.0 / (1.0 + sd / np.where(mu > 0, mu, 1e-8))
        return o * (1.0 + alpha * mean(layer))

    budgets = {"shallow": int(budget * ratios[0]), "middle": int(budget * ratios[1])}
    budgets["deep"] = budget - budgets["shallow"] - budgets["middle"]
    capacity = {zone: len(layers) * n_experts for zone, layers in zone_layers.items()}
    overflow = 0
    for zone in budgets:
        if budgets[zone] > capacity[zone]:
            overflow += budgets[zone] - capacity[zone]
            budgets[zone] = capacity[zone]
    while overflow > 0:
        room = {zone: capacity[zone] - budgets[zone] for zone in budgets}
        open_zones = [zone for zone, r in room.items() if r > 0]
        assert open_zones, "the reference refuses a budget above every expert"
        zone = max(open_zones, key=lambda z: room[z])
        take = min(room[zone], overflow)
        budgets[zone] += take
        overflow -= take

    chosen = []
    for zone, score in (("shallow", spec), ("middle", ovlp), ("deep", spec)):
        candidates = [(s, layer, e) for layer in zone_layers[zone] for e, s in enumerate(score(layer).tolist())]
        candidates.sort(key=lambda c: c[0], reverse=True)
        chosen += [(layer, e) for _, layer, e in candidates[: budgets[zone]]]
    return sorted(chosen), (budgets["shallow"], budgets["middle"], budgets["deep"])


def _routing_frequencies(n_langs, n_layers, n_experts, top_k=2):
    """Frequencies like a trace's: each layer's sum to k; some experts no language uses."""
    freq = RNG.dirichlet(np.full(n_experts, 0.7), size=(n_langs, n_layers)) * top_k
    unused = RNG.random((n_layers, n_experts)) < 0.2
    freq[:, unused] = 0
    return freq


@pytest.mark.parametrize("n_layers", [4, 16, 24, 48, 94])
@pytest.mark.parametrize("ratios", [(0.35, 0.25, 0.40), (0.1, 0.8, 0.1), (0.6, 0.0, 0.4)])
def test_rise_selection_equals_the_reference_code(n_layers, ratios):
    n_langs, n_experts = 4, 6
    capacity = n_layers * n_experts
    for budget in sorted({1, 5, 13, capacity // 3, capacity // 2, capacity - 3, capacity}):
        freq = _routing_frequencies(n_langs, n_layers, n_experts)
        target = int(RNG.integers(n_langs))
        expected, quotas = _reference_rise(freq, target, n_layers, budget, ratios)
        got = rise.select_rise(
            freq, target, layers=list(range(n_layers)), n_layers=n_layers, budget=budget, ratios=ratios
        )
        assert got.zones == "reference"
        assert sorted(got.experts) == expected, (n_layers, budget)
        assert got.quotas == quotas
        assert len(got.experts) == len(set(got.experts)) == budget


def test_the_reference_middle_zone_can_be_empty_and_its_share_goes_to_the_most_room():
    # 4 layers: L1 = round(1.5) = 2, L2 = round(2.5) = 2 (halves to even): no middle zone.
    assert rise.zone_bounds(4, "reference") == (2, 2)
    assert rise.depth_zones(np.arange(4), 4, "reference").tolist() == [0, 0, 2, 2]
    assert rise.depth_zones(np.arange(4), 4, "fraction").tolist() == [0, 0, 1, 2]
    # 94 layers: shallow 0-34 (round(35.25)), middle 35-58, deep 59-93; the fractions give 0-35.
    assert rise.zone_bounds(94, "reference") == (35, 59)
    assert rise.zone_bounds(94, "fraction") == (36, 59)
    # K = 20 -> 7, 5, 8: the middle's 5 go to the zone with the most room (shallow and deep tie at
    # 16 - 7 = 9 vs 16 - 8 = 8: shallow), where the fraction rule gives them to deep (ratio 0.40) first.
    assert rise.zone_quotas(20, rise.DEFAULT_RATIOS, [16, 0, 16], zones="reference") == (12, 0, 8)
    assert rise.zone_quotas(20, rise.DEFAULT_RATIOS, [16, 0, 16], zones="fraction") == (7, 0, 13)


def test_reference_zone_bounds_round_halves_to_even_for_every_depth():
    for n_layers in range(1, 130):
        l1, l2 = rise.zone_bounds(n_layers, "reference")
        assert (l1, l2) == (round(n_layers * 3 / 8), round(n_layers * 5 / 8))
        zones = rise.depth_zones(np.arange(n_layers), n_layers, "reference")
        assert zones.tolist() == [0 if layer < l1 else 1 if layer < l2 else 2 for layer in range(n_layers)]


def test_zones_follow_decoder_indices_when_a_layer_is_dense():
    # Layer 0 dense, MoE layers 1-15 of 16: the zones are those of their decoder index, as the
    # reference indexes its stats by decoder layer (`model.model.layers`).
    layers = np.arange(1, 16)
    for rule in rise.ZONE_RULES:
        np.testing.assert_array_equal(rise.depth_zones(layers, 16, rule), rise.depth_zones(np.arange(16), 16, rule)[1:])
    freq = _routing_frequencies(3, 15, 4)
    got = rise.select_rise(freq, 0, layers=layers, n_layers=16, budget=12)
    expected, _ = _reference_rise(np.concatenate([np.zeros((3, 1, 4)), freq], axis=1), 0, 16, 12)
    # Layer 0 holds only zero-scored (Spec) candidates in the shallow zone; with a budget well
    # inside the other layers' experts the reference picks none of them.
    assert all(layer > 0 for layer, _ in expected)
    assert sorted((int(layers[y]), e) for y, e in got.experts) == expected


def _earlier_rise(freq, target, layers, n_layers, budget, ratios):
    """Polyroute's earlier rules (zones="fraction"): depth fractions, overflow by ratio, unused O = 0."""
    n_experts = freq.shape[-1]
    zone = [0 if layer / n_layers < 0.375 else 1 if layer / n_layers < 0.625 else 2 for layer in layers]
    mean = freq.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(mean > 0, freq[target] / mean, 0.0)
        o = np.where(mean > 0, 1 / (1 + freq.std(axis=0) / mean), 0.0)
    score = {0: s * (1 + 10 * freq[target]), 1: o * (1 + 10 * mean), 2: s * (1 + 10 * freq[target])}
    pools = [
        [
            (y, e)
            for _, y, e in sorted(
                (-score[z][y, e], y, e) for y in range(len(layers)) if zone[y] == z for e in range(n_experts)
            )
        ]
        for z in range(3)
    ]
    want = [math.floor(budget * ratios[0]), math.floor(budget * ratios[1])]
    want.append(budget - sum(want))
    take = [min(w, len(p)) for w, p in zip(want, pools, strict=True)]
    spill = budget - sum(take)
    for z in sorted(range(3), key=lambda z: -ratios[z]):
        extra = min(spill, len(pools[z]) - take[z])
        take[z] += extra
        spill -= extra
    return [pair for z in range(3) for pair in pools[z][: take[z]]]


@pytest.mark.parametrize("n_layers", [4, 16, 94])
def test_fraction_rules_select_as_polyroute_did(n_layers):
    layers = list(range(n_layers))
    for budget, ratios in ((7, (0.35, 0.25, 0.40)), (n_layers * 5 - 2, (0.1, 0.8, 0.1))):
        freq = _routing_frequencies(3, n_layers, 5)
        got = rise.select_rise(
            freq, 1, layers=layers, n_layers=n_layers, budget=budget, ratios=ratios, zones="fraction"
        )
        assert list(got.experts) == _earlier_rise(freq, 1, layers, n_layers, budget, ratios)


def test_an_unknown_zone_rule_is_refused():
    with pytest.raises(ValueError, match="zones must be one of"):
        rise.depth_zones(np.arange(4), 4, "rounded")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="zones must be one of"):
        rise.select_rise(np.ones((2, 4, 3)), 0, layers=[0, 1, 2, 3], n_layers=4, budget=2, zones="x")  # type: ignore[arg-type]


# Presets of 2601.14050 -----------------------------------------------------------------------


def test_the_presets_hold_the_published_settings():
    shared = PRESETS["2601.14050"]
    assert (shared.kind, shared.method, shared.k, shared.thr) == ("shared", ADAPTIVE, 20, 0.7)
    assert shared.windows == ((10, 39),) and dict(shared.strengths) == {"eng_Latn": 0.022, "zho_Hans": 0.034}
    for name in ("2601.14050-mgsm", "2601.14050-flores"):
        preset = PRESETS[name]
        assert (preset.kind, preset.method, preset.k, preset.thr) == ("exclusive", ABLATE, 15, 0.4)
        assert preset.windows == ((0, 4), (22, 26), (43, 47))
    xquad = PRESETS["2601.14050-xquad"]
    assert (xquad.k, xquad.thr, xquad.windows) == (32, 0.5, ((0, 9), (19, 28), (38, 47)))
    assert preset_names("shared") == ("2601.14050",)
    assert preset_names("exclusive") == ("2601.14050-mgsm", "2601.14050-flores", "2601.14050-xquad")


def test_a_48_layer_model_gets_exactly_the_published_windows():
    for name, published in PRESETS.items():
        preset = preset_for(name, moe_layers=range(48))
        assert [w.band for w in preset.windows] == list(published.windows)
        assert [w.layers for w in preset.windows] == [tuple(range(a, b + 1)) for a, b in published.windows]
        assert (preset.k, preset.thr, preset.method) == (published.k, published.thr, published.method)


def _scaled(layer, n_moe):
    # round(layer (Y - 1) / 47), halves up, in exact fractions
    return math.floor(Fraction(layer * (n_moe - 1), 47) + Fraction(1, 2))


@pytest.mark.parametrize("first_moe", [0, 1, 3])  # leading dense layers, as DeepSeek's first_k_dense
def test_other_depths_scale_each_window_by_the_stated_rule(first_moe):
    for n_moe in range(1, 101):
        moe_layers = list(range(first_moe, first_moe + n_moe))
        for name, published in PRESETS.items():
            preset = preset_for(name, moe_layers=moe_layers)
            assert preset.n_moe_layers == n_moe
            for window, (a, b) in zip(preset.windows, published.windows, strict=True):
                start, end = _scaled(a, n_moe), _scaled(b, n_moe)
                assert window.positions == (start, end)
                assert 0 <= start <= end <= n_moe - 1  # non-empty and inside the model
                assert window.layers == tuple(moe_layers[start : end + 1])


def test_scaled_windows_on_sparse_moe_layers_and_small_models():
    # MoE every other layer (decoder_sparse_step 2): windows hold decoder indices of MoE layers.
    preset = preset_for("2601.14050", moe_layers=range(1, 48, 2))  # 24 MoE layers
    (band,) = preset.windows
    assert band.positions == (_scaled(10, 24), _scaled(39, 24)) == (5, 19)
    assert band.layers == tuple(range(11, 40, 2)) and band.band == (11, 39)
    # The demo's 4 layers: 10-39 -> 1-2; 0-4 / 22-26 / 43-47 -> 0-0 / 1-2 / 3-3.
    assert preset_for("2601.14050", moe_layers=range(4)).windows[0].layers == (1, 2)
    assert [w.layers for w in preset_for("2601.14050-mgsm", moe_layers=range(4)).windows] == [(0,), (1, 2), (3,)]
    assert scale_position(47, 1) == 0


def test_preset_lookups_explain_what_is_missing():
    preset = preset_for("2601.14050", moe_layers=range(16))
    assert preset.strength_for("eng_Latn") == 0.022 and preset.strength_for("zho_Hans") == 0.034
    with pytest.raises(PlanError, match="only for source languages"):
        preset.strength_for("deu_Latn")
    exclusive = preset_for("2601.14050-xquad", moe_layers=range(16))
    assert exclusive.window("late").band == (_scaled(38, 16), 15)
    with pytest.raises(PlanError, match="no window"):
        exclusive.window("deep")
    with pytest.raises(PlanError, match="no lambda"):
        exclusive.strength_for("eng_Latn")
    with pytest.raises(PlanError, match="unknown preset"):
        preset_for("2601.14050-belebele", moe_layers=range(16))


# The `weight` distribution against xl_moe_alignment's "total actual weight" --------------------


def _total_actual_weight(logits, top_k, scoring_func):
    """calculate_total_actual_weight_per_sequence for one sequence: logits [Y, T, E] -> [Y, E].
    Softmax (or sigmoid), keep values >= the k-th largest, renormalise (+ 1e-20), mean over tokens."""
    post = (
        1 / (1 + np.exp(-logits))
        if scoring_func == "sigmoid"
        else np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    )
    threshold = np.sort(post, axis=-1)[..., -top_k][..., None]
    kept = post * (post >= threshold)
    return (kept / (kept.sum(axis=-1, keepdims=True) + 1e-20)).mean(axis=1)


@pytest.mark.parametrize(
    "rule",
    [
        scoring.RoutingRule(name=scoring.SOFTMAX_TOPK, top_k=2),  # OLMoE: not renormalised
        scoring.RoutingRule(name=scoring.SOFTMAX_TOPK, top_k=3, renorm=True),  # Qwen3-MoE
        scoring.RoutingRule(name=scoring.SOFTMAX_TOPK, top_k=2, scale=2.5),  # scaled (DeepSeek-V2 greedy)
        scoring.RoutingRule(name=scoring.TOPK_SOFTMAX, top_k=2),  # Mixtral, GPT-OSS, Granite
        scoring.RoutingRule(name=scoring.SIGMOID_BIAS_GROUP_TOPK, top_k=2, renorm=True, scale=2.5),
    ],
    ids=lambda rule: f"{rule.name}-k{rule.top_k}-renorm{rule.renorm}-scale{rule.scale}",
)
def test_weight_distribution_equals_total_actual_weight(rule):
    n_layers, n_experts, lengths = 3, 8, [5, 1, 9, 4]
    logits = RNG.normal(size=(sum(lengths), n_layers, n_experts)).astype(np.float32)
    ids, weights = [], []
    for y in range(n_layers):  # the applied weights, as the router computes them
        w, i = scoring.score(rule, torch.from_numpy(logits[:, y]), bias=torch.zeros(n_experts))
        weights.append(w.numpy())
        ids.append(i.numpy())
    got = summaries.summarise_sequences(
        np.stack(ids, axis=1), np.stack(weights, axis=1), np.array(lengths), n_experts, np.arange(len(lengths))
    )
    assert got.weight is not None
    func = "sigmoid" if rule.name == scoring.SIGMOID_BIAS_GROUP_TOPK else "softmax"
    start = 0
    for s, length in enumerate(lengths):
        sequence = logits[start : start + length].astype(np.float64).transpose(1, 0, 2)  # [Y, T, E], as theirs
        np.testing.assert_allclose(
            got.weight[s], _total_actual_weight(sequence, rule.top_k, func), rtol=1e-5, atol=1e-6
        )
        start += length
