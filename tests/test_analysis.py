"""The analyses' pure functions against independent computations (scipy, brute-force loops)."""

from __future__ import annotations

import itertools
import math
import statistics
from math import comb

import numpy as np
import pytest
from scipy.spatial.distance import cosine, jensenshannon
from scipy.special import softmax
from scipy.stats import entropy as scipy_entropy
from scipy.stats import rankdata

from moe_core.analysis import correlation, divergence, experts, rise, routing, similarity, summaries

RNG = np.random.default_rng(7)


def _distributions(*shape: int, unused: int | None = None) -> np.ndarray:
    p = RNG.dirichlet(np.ones(shape[-1]) * 0.5, size=shape[:-1])
    if unused is not None:  # an expert that is never used
        p[..., unused] = 0
        p /= p.sum(axis=-1, keepdims=True)
    return p


# divergence ----------------------------------------------------------------------------------


def test_js_divergence_matches_scipy_including_an_unused_expert():
    p, q = _distributions(50, 16, unused=3), _distributions(50, 16, unused=3)
    expected = [jensenshannon(a, b) ** 2 for a, b in zip(p, q, strict=True)]  # scipy: the square root, base e
    np.testing.assert_allclose(divergence.js_divergence(p, q), expected, rtol=1e-9, atol=1e-12)


def test_identical_distributions_diverge_by_zero():
    p = _distributions(10, 8, unused=0)
    assert np.allclose(divergence.js_divergence(p, p), 0)
    assert np.allclose(divergence.normalised_js(p, p), 0)


def test_entropy_matches_scipy():
    p = _distributions(20, 12, unused=5)
    np.testing.assert_allclose(divergence.entropy(p), [scipy_entropy(row) for row in p])


def test_normalised_js_divides_by_the_entropy_gap_clamped():
    p, q = _distributions(30, 8), _distributions(30, 8)
    for a, b, got in zip(p, q, divergence.normalised_js(p, q), strict=True):
        gap = math.log(8) - (scipy_entropy(a) + scipy_entropy(b)) / 2
        assert got == pytest.approx(jensenshannon(a, b) ** 2 / max(gap, 1e-6))
    uniform = np.full(8, 1 / 8)
    nearly = uniform + np.array([1e-9, -1e-9, 0, 0, 0, 0, 0, 0])
    # The gap is ~0 here: the clamp keeps the result finite.
    assert np.isfinite(divergence.normalised_js(uniform, nearly))


def _pair_sums(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[L, I, Y, E] distributions (NaN: a language lacks the item) -> the summaries' per-pair sums
    as [L, L] item counts and [L, L, Y] sums of JS and of D, every aligned pair compared once."""
    n_langs, n_items = probs.shape[:2]
    present = [
        (lang, item) for lang in range(n_langs) for item in range(n_items) if not np.isnan(probs[lang, item, 0, 0])
    ]
    dist = np.stack([probs[lang, item] for lang, item in present])
    lang = np.array([lang for lang, _ in present])
    pairs = [(a, b) for a, b in itertools.combinations(range(len(present)), 2) if present[a][1] == present[b][1]]
    first = np.array([a for a, _ in pairs], dtype=np.int64)
    second = np.array([b for _, b in pairs], dtype=np.int64)
    found = summaries.pair_sums(dist, lang, first, second)
    n = np.zeros((n_langs, n_langs))
    js, d = np.zeros((n_langs, n_langs, probs.shape[2])), np.zeros((n_langs, n_langs, probs.shape[2]))
    for (a, b), count, js_sum, d_sum in zip(found.pairs, found.n, found.js, found.normalised, strict=True):
        n[a, b] = n[b, a] = count
        js[a, b] = js[b, a] = js_sum
        d[a, b] = d[b, a] = d_sum
    return n, js, d


def _curves(probs: np.ndarray, ref: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, js, d = _pair_sums(probs)
    return divergence.divergence_curves(n, js, d, ref, int((~np.isnan(probs[ref, :, 0, 0])).sum()))


def test_divergence_curves_average_pairs_not_distributions():
    probs = _distributions(3, 5, 4, 8)  # 3 languages, 5 items, 4 layers
    probs[2, 1] = np.nan  # language 2 lacks item 1
    got, raw, pairs = _curves(probs, 0)
    assert pairs.tolist() == [5, 5, 4]
    for lang in range(3):
        for layer in range(4):
            items = [i for i in range(5) if not np.isnan(probs[lang, i, 0, 0])]
            pairs = [(probs[0, i, layer], probs[lang, i, layer]) for i in items]
            js = [jensenshannon(a, b) ** 2 for a, b in pairs]
            norm = [
                value / max(math.log(8) - (scipy_entropy(a) + scipy_entropy(b)) / 2, 1e-6)
                for value, (a, b) in zip(js, pairs, strict=True)
            ]
            assert raw[lang, layer] == pytest.approx(np.mean(js))
            assert got[lang, layer] == pytest.approx(np.mean(norm))
    assert np.allclose(got[0], 0)


def test_a_single_language_diverges_from_itself_by_zero_and_no_shared_item_gives_nan():
    probs = _distributions(1, 4, 2, 6)
    assert np.allclose(_curves(probs, 0)[0], 0)
    two = _distributions(2, 2, 2, 6)
    two[0, 0] = np.nan
    two[1, 1] = np.nan
    assert np.isnan(_curves(two, 0)[0][1]).all()


def test_pair_sums_of_rows_given_one_by_one_equal_those_of_one_array():
    dist = _distributions(2 * summaries.PAIR_CHUNK + 3, 4, 8).astype(np.float32)  # a partial last chunk
    lang = np.arange(len(dist)) % 3
    pairs = np.array([(a, b) for a in range(len(dist)) for b in range(a) if lang[a] != lang[b]])
    first, second = pairs.T
    whole = summaries.pair_sums(dist, lang, first, second)
    rows = summaries.pair_sums([row.copy() for row in dist], lang, first, second)
    assert len(pairs) > summaries.PAIR_CHUNK
    for name in ("pairs", "n", "js", "normalised"):
        np.testing.assert_array_equal(getattr(rows, name), getattr(whole, name))


def test_identical_routing_in_two_languages_diverges_by_exactly_zero():
    probs = _distributions(1, 3, 2, 8).repeat(2, axis=0)
    normalised, raw, _ = _curves(probs, 0)
    assert (normalised == 0).all() and (raw == 0).all()


# routing -------------------------------------------------------------------------------------


def _routes(lengths: list[int], layers: int, experts_: int, k: int) -> np.ndarray:
    n = sum(lengths)
    return np.stack(
        [np.stack([RNG.choice(experts_, size=k, replace=False) for _ in range(layers)]) for _ in range(n)]
    ).astype(np.int16)


def test_sequence_summaries_count_top_k_hits_and_average_normalised_weights_per_token():
    lengths = [3, 5, 1]
    routes = _routes(lengths, 2, 6, 2).astype(np.int64)
    weights = RNG.random(routes.shape).astype(np.float32)
    got = summaries.summarise_sequences(routes, weights, np.array(lengths), 6, np.arange(3))
    start = 0
    for s, length in enumerate(lengths):
        for layer in range(2):
            counts, shares = np.zeros(6), np.zeros(6)
            for t in range(start, start + length):
                for e, w in zip(routes[t, layer], weights[t, layer], strict=True):
                    counts[e] += 1
                    shares[e] += w / weights[t, layer].sum()
            np.testing.assert_array_equal(got.hits[s, layer], counts)
            np.testing.assert_allclose(got.weight[s, layer], shares / length, rtol=1e-6)
        start += length
    hard = summaries.hard_distribution(got.hits, np.array(lengths), 2)
    np.testing.assert_allclose(hard.sum(axis=-1), 1, rtol=1e-6)
    np.testing.assert_allclose(got.weight.sum(axis=-1), 1, rtol=1e-6)
    assert np.isnan(got.consistency[2]).all()  # one token: no pair
    expected = routing.within_sequence_consistency(routes, np.array(lengths), 6, keys=np.arange(3))
    np.testing.assert_array_equal(got.consistency, expected)
    assert summaries.summarise_sequences(routes, None, np.array(lengths), 6, np.arange(3)).weight is None


def test_sequence_entropy_matches_scipy_across_its_row_blocks():
    rows = summaries.ROW_BLOCK + 37  # a partial last block
    dist = _distributions(rows, 3, 16, unused=6).astype(np.float32)  # the unused expert: 0 log 0
    got = summaries.sequence_entropy(dist)
    assert got.shape == dist.shape[:2]
    np.testing.assert_allclose(got.reshape(-1), [scipy_entropy(row) for row in dist.reshape(-1, 16)], rtol=1e-6)


def test_hard_distribution_is_the_float64_quotient_rounded_to_float32():
    hits = RNG.integers(0, 5000, (40, 3, 16))
    lengths = RNG.integers(0, 3000, 40)  # 0: an empty sequence divides by 1
    got = summaries.hard_distribution(hits, lengths, 8)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, (hits / (np.maximum(lengths, 1)[:, None, None] * 8)).astype(np.float32))


@pytest.mark.parametrize("divided", [False, True])
def test_group_sums_add_each_groups_rows_in_float64(divided):
    rows = 3 * summaries.GROUP_ROWS + 5
    # Runs of one group, then a stretch where groups alternate (a block of mixed groups); group 3 has no row.
    group = np.r_[
        np.zeros(summaries.GROUP_ROWS + 3),
        np.ones(summaries.GROUP_ROWS),
        np.arange(rows - 2 * summaries.GROUP_ROWS - 3) % 3,
    ]
    group = group.astype(np.int64)
    values = RNG.integers(0, 1000, (rows, 2, 5))
    divisor = RNG.integers(1, 50, rows).astype(np.float64) if divided else None
    got = summaries.group_sums(values, group, 4, divisor)
    assert got.shape == (4, 2, 5) and got.dtype == np.float64
    for g in range(4):
        expected = np.zeros((2, 5))
        for row in np.flatnonzero(group == g):
            expected += values[row] / (divisor[row] if divided else 1)
        np.testing.assert_allclose(got[g], expected, rtol=1e-12)
    assert (got[3] == 0).all()


def test_activation_frequencies_sum_to_k_and_an_empty_group_gives_zeros():
    counts = np.array([[[3, 1, 0, 2]], [[0, 0, 0, 0]]])
    got = routing.activation_frequencies(counts, np.array([3, 0]))
    np.testing.assert_allclose(got[0, 0], [1, 1 / 3, 0, 2 / 3])
    assert (got[1] == 0).all()


def test_token_entropy_of_softmax_and_of_normalised_sigmoid():
    logits = RNG.normal(size=(10, 16)) * 3
    np.testing.assert_allclose(routing.token_entropy(logits), [scipy_entropy(softmax(row)) for row in logits])
    sig = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(
        routing.token_entropy(logits, sigmoid=True), [scipy_entropy(row / row.sum()) for row in sig]
    )


@pytest.mark.parametrize("n_experts", [8, 64, 130])
def test_bitmasks_hold_exactly_the_top_k_sets(n_experts):
    routes = _routes([7], 3, n_experts, 4)
    masks = routing.topk_bitmasks(routes, n_experts)
    for t in range(7):
        for layer in range(3):
            bits = {w * 64 + b for w in range(masks.shape[0]) for b in range(64) if int(masks[w, t, layer]) >> b & 1}
            assert bits == set(routes[t, layer].tolist())


def _brute_consistency(routes: np.ndarray, lengths: list[int]) -> np.ndarray:
    out = np.full((len(lengths), routes.shape[1]), np.nan)
    start = 0
    for s, length in enumerate(lengths):
        for layer in range(routes.shape[1]):
            sets = [set(routes[t, layer].tolist()) for t in range(start, start + length)]
            pairs = list(itertools.combinations(sets, 2))
            if pairs:
                out[s, layer] = np.mean([len(a & b) / len(a | b) for a, b in pairs])
        start += length
    return out


def test_consistency_over_all_pairs_matches_brute_force():
    lengths = [4, 1, 6, 2]
    routes = _routes(lengths, 3, 130, 3)  # more than 64 experts: two bit words
    got = routing.within_sequence_consistency(routes, np.array(lengths), 130, max_pairs=100)
    np.testing.assert_allclose(got, _brute_consistency(routes, lengths))


def test_sampled_pairs_do_not_depend_on_how_sequences_are_batched():
    lengths = np.array([40, 3, 25, 60, 2])
    routes = _routes(lengths.tolist(), 2, 16, 2)
    keys = np.array([10, 11, 12, 13, 14])
    whole = routing.within_sequence_consistency(routes, lengths, 16, max_pairs=30, seed=3, keys=keys)
    parts = np.concatenate(
        [
            routing.within_sequence_consistency(routes[:43], lengths[:2], 16, max_pairs=30, seed=3, keys=keys[:2]),
            routing.within_sequence_consistency(routes[43:], lengths[2:], 16, max_pairs=30, seed=3, keys=keys[2:]),
        ]
    )
    assert np.array_equal(whole, parts, equal_nan=True)
    other_seed = routing.within_sequence_consistency(routes, lengths, 16, max_pairs=30, seed=4, keys=keys)
    assert not np.array_equal(whole, other_seed, equal_nan=True)


def test_identical_routing_is_fully_consistent():
    routes = np.tile(np.array([[[1, 5], [2, 3]]], dtype=np.int16), (5, 1, 1))
    assert np.allclose(routing.within_sequence_consistency(routes, np.array([5]), 8), 1)


def test_long_sequences_use_a_seeded_sample_of_distinct_token_pairs():
    lengths = np.array([3, 40])
    owner, first, second = routing.token_pairs(lengths, max_pairs=20, seed=1)
    assert (owner == 0).sum() == 3  # all pairs of the short one
    assert (owner == 1).sum() == 20
    long = owner == 1
    assert ((first[long] >= 3) & (first[long] < 43) & (second[long] >= 3) & (second[long] < 43)).all()
    assert (first != second).all()
    again = routing.token_pairs(lengths, max_pairs=20, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip((owner, first, second), again, strict=True))
    # The sample estimates the all-pairs mean.
    routes = _routes([60], 2, 8, 2)
    sampled = routing.within_sequence_consistency(routes, np.array([60]), 8, max_pairs=1500)
    np.testing.assert_allclose(sampled, _brute_consistency(routes, [60]), atol=0.03)


# experts -------------------------------------------------------------------------------------


def test_delta_tau_selects_experts_above_tau():
    target, reference = RNG.random((3, 6)), RNG.random((3, 6))
    chosen = experts.specialised(target, reference, 0.3)
    for y, e in itertools.product(range(3), range(6)):
        assert chosen[y, e] == (target[y, e] - reference[y, e] > 0.3)


def _brute_shares(freq: np.ndarray, k: int) -> np.ndarray:
    n_langs, n_layers, n_experts = freq.shape
    kept = np.zeros_like(freq)
    for lang, layer in itertools.product(range(n_langs), range(n_layers)):
        best = sorted(range(n_experts), key=lambda e: (-freq[lang, layer, e], e))[:k]
        for e in best:
            kept[lang, layer, e] = freq[lang, layer, e]
    shares = np.zeros_like(freq)
    for lang, layer, e in itertools.product(range(n_langs), range(n_layers), range(n_experts)):
        shares[lang, layer, e] = kept[lang, layer, e] / (sum(kept[:, layer, e]) + 1e-10)
    return shares


def test_shares_exclusive_and_shared_experts_match_loops():
    freq = RNG.random((4, 3, 10))
    freq[:, :, 9] = 0  # an expert nobody uses
    shares = experts.expert_shares(freq, 4)
    np.testing.assert_allclose(shares, _brute_shares(freq, 4))
    for layer, e in itertools.product(range(3), range(10)):
        column = shares[:, layer, e]
        assert experts.shared(shares, 0.4)[layer, e] == (any(column > 0) and all(column < 0.4))
        assert experts.exclusive_to(shares, np.array([1, 1, 0, 0], bool), 0.4)[layer, e] == (column[:2].sum() > 0.4)
    assert not experts.shared(shares, 0.4)[:, 9].any()
    assert not experts.exclusive_per_language(shares, 0.4)[:, :, 9].any()


def test_two_languages_share_nothing_unless_thr_exceeds_one_half():
    freq = RNG.random((2, 2, 6)) + 0.1
    shares = experts.expert_shares(freq, 6)
    assert not experts.shared(shares, 0.5).any()
    assert experts.shared(shares, 0.7).any()


def test_reliance_is_the_share_of_hits_on_the_given_experts():
    freq = RNG.random((2, 3, 5))
    mask = RNG.random((3, 5)) > 0.5
    got = experts.reliance(freq, mask)
    for lang, layer in itertools.product(range(2), range(3)):
        assert got[lang, layer] == pytest.approx(freq[lang, layer, mask[layer]].sum() / freq[lang, layer].sum())


# RISE ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("unused", ["zero", "reference"])
def test_rise_scores_match_their_definitions(unused):
    freq = RNG.random((5, 4, 6))
    freq[:, 1, 2] = 0  # never used: S = 0; O = 0 ("zero") or 1 (the reference's CV = 0 / 1e-8)
    got = rise.rise_scores(freq, 2, alpha=10, unused=unused)
    for layer, e in itertools.product(range(4), range(6)):
        column = [freq[lang, layer, e] for lang in range(5)]
        mean = statistics.fmean(column)
        if mean == 0:
            overlap = 0 if unused == "zero" else 1
            assert got.specificity[layer, e] == 0 and got.overlap[layer, e] == overlap
            assert got.spec[layer, e] == 0 and got.ovlp[layer, e] == overlap
            continue
        s = column[2] / mean
        o = 1 / (1 + statistics.pstdev(column) / mean)
        assert got.specificity[layer, e] == pytest.approx(s)
        assert got.overlap[layer, e] == pytest.approx(o)
        assert got.spec[layer, e] == pytest.approx(s * (1 + 10 * column[2]))
        assert got.ovlp[layer, e] == pytest.approx(o * (1 + 10 * mean))


def test_depth_zones_split_at_three_eighths_and_five_eighths():
    zones = rise.depth_zones(np.arange(16), 16, "fraction")
    np.testing.assert_array_equal(zones, rise.depth_zones(np.arange(16), 16))  # fraction is depth_zones' default
    expected = [0 if layer / 16 < 0.375 else 1 if layer / 16 < 0.625 else 2 for layer in range(16)]
    assert zones.tolist() == expected
    assert rise.zone_budgets(10, (0.35, 0.25, 0.40)) == (3, 2, 5)


def _brute_selection(scores, zones, budget, ratios):
    pools = []
    for zone in range(3):
        score = scores.ovlp if zone == 1 else scores.spec
        cands = [(-score[y, e], y, e) for y in range(score.shape[0]) if zones[y] == zone for e in range(score.shape[1])]
        pools.append([(y, e) for _, y, e in sorted(cands)])
    want = [math.floor(budget * ratios[0]), math.floor(budget * ratios[1])]
    want.append(budget - sum(want))
    take = [min(w, len(p)) for w, p in zip(want, pools, strict=True)]
    spill = budget - sum(take)
    for zone in sorted(range(3), key=lambda z: -ratios[z]):
        extra = min(spill, len(pools[zone]) - take[zone])
        take[zone] += extra
        spill -= extra
    return [pair for zone in range(3) for pair in pools[zone][: take[zone]]]


@pytest.mark.parametrize("budget", [1, 7, 20, 40])
def test_budgeted_selection_matches_a_brute_force_ranking(budget):
    freq = RNG.random((4, 8, 5))
    scores = rise.rise_scores(freq, 0)
    zones = rise.depth_zones(np.arange(8), 8, "fraction")  # 3 shallow, 2 middle, 3 deep layers (15, 10, 15 experts)
    got = rise.select_subnetwork(scores, zones, budget, zones="fraction")
    assert got == _brute_selection(scores, zones, budget, rise.DEFAULT_RATIOS)
    assert len(got) == len(set(got)) == min(budget, 40)


def test_a_zone_too_small_spills_its_budget_to_the_others():
    freq = RNG.random((3, 8, 4))
    zones = rise.depth_zones(np.arange(8), 8, "fraction")
    chosen = rise.select_subnetwork(rise.rise_scores(freq, 1), zones, 30, (0.1, 0.8, 0.1), zones="fraction")
    middle = [pair for pair in chosen if zones[pair[0]] == 1]
    assert len(middle) == 8 and len(chosen) == 30  # the middle zone has only 2 layers x 4 experts


def test_routing_isolation_is_the_jaccard_of_group_top_n_sets():
    freq = RNG.random((5, 3, 12))
    high, low = np.array([1, 1, 0, 0, 0], bool), np.array([0, 0, 1, 1, 0], bool)
    got = rise.routing_isolation(freq, high, low, 4)
    for layer in range(3):
        top = [set(np.argsort(-freq[group, layer].mean(axis=0), kind="stable")[:4].tolist()) for group in (high, low)]
        assert got[layer] == pytest.approx(len(top[0] & top[1]) / len(top[0] | top[1]))


# similarity ----------------------------------------------------------------------------------


def test_divergence_similarity_and_cosine_match_loops():
    probs = _distributions(3, 4, 5, 6)
    probs[2, 0] = np.nan
    band = np.array([0, 1, 1, 0, 0], bool)
    n, _, d = _pair_sums(probs)
    got = similarity.divergence_similarity(n, d, band)
    for a, b in itertools.combinations(range(3), 2):
        values = [
            divergence.normalised_js(probs[a, i, y], probs[b, i, y])
            for i in range(4)
            if not (np.isnan(probs[a, i, 0, 0]) or np.isnan(probs[b, i, 0, 0]))
            for y in (1, 2)
        ]
        assert got[a, b] == got[b, a] == pytest.approx(1 - np.mean(values))
    freq = RNG.random((3, 5, 6))
    cos = similarity.cosine_similarity(freq, band)
    for a, b in itertools.combinations(range(3), 2):
        assert cos[a, b] == pytest.approx(1 - cosine(freq[a, 1:3].ravel(), freq[b, 1:3].ravel()))


def _ari_by_permutations(a: list[int], b: list[int]) -> float:
    """ARI with its expectation taken over every permutation of b (the definition, not the formula)."""

    def index(x, y):
        return sum(
            comb(sum(1 for i, j in zip(x, y, strict=True) if (i, j) == cell), 2) for cell in set(zip(x, y, strict=True))
        )

    expected = statistics.fmean(index(a, list(p)) for p in itertools.permutations(b))
    maximum = (sum(comb(a.count(v), 2) for v in set(a)) + sum(comb(b.count(v), 2) for v in set(b))) / 2
    return (index(a, b) - expected) / (maximum - expected)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([0, 0, 1, 1, 2, 2], [0, 0, 1, 2, 2, 2]),
        ([0, 1, 0, 1, 0, 1], [0, 0, 0, 1, 1, 1]),
        ([0, 0, 0, 1, 1, 2], [1, 1, 0, 0, 2, 2]),
    ],
)
def test_adjusted_rand_index_matches_its_definition(a, b):
    assert similarity.adjusted_rand_index(a, b) == pytest.approx(_ari_by_permutations(a, b))


def test_adjusted_rand_index_of_relabelled_partitions_is_one():
    assert similarity.adjusted_rand_index(["x", "x", "y", "y"], [3, 3, 1, 1]) == 1.0
    assert similarity.adjusted_rand_index([0, 0, 1, 2], [0, 0, 1, 1]) == pytest.approx(
        0.5714, abs=1e-4
    )  # sklearn's doc


def test_clustering_recovers_planted_blocks():
    blocks = [0, 0, 0, 1, 1, 2, 2, 2]
    sim = np.array([[0.9 if a == b else 0.2 for b in blocks] for a in blocks]) + RNG.normal(0, 0.02, (8, 8))
    sim = (sim + sim.T) / 2
    labels = similarity.cluster(sim, 3)
    assert similarity.adjusted_rand_index(labels, blocks) == 1.0


def test_sharing_graph_counts_shared_top_experts_and_finds_communities():
    freq = np.zeros((4, 2, 8))
    freq[0:2, :, 0:3] = 1  # languages 0 and 1 favour experts 0-2
    freq[2:4, :, 5:8] = 1  # languages 2 and 3 favour experts 5-7
    freq += RNG.random(freq.shape) * 0.01
    langs = ["a", "b", "c", "d"]
    graph = similarity.sharing_graph(freq, langs, np.array([True, True]), 3)
    assert graph["a"]["b"]["shared"] == 6 and graph["c"]["d"]["shared"] == 6
    assert not graph.has_edge("a", "c")
    jaccard = similarity.sharing_graph(freq, langs, np.array([True, False]), 3, weight="jaccard")
    assert jaccard["a"]["b"]["weight"] == 1.0
    assert similarity.communities(graph) == [{"a", "b"}, {"c", "d"}]


# correlation ---------------------------------------------------------------------------------


def test_correlation_matches_numpy_and_ranks():
    x, y = RNG.random(12), RNG.random(12)
    x[3] = np.nan
    got = correlation.divergence_score_correlation(x, y)
    keep = ~np.isnan(x)
    assert got.n == 11
    assert got.pearson_r == pytest.approx(np.corrcoef(x[keep], y[keep])[0, 1])
    assert got.spearman_rho == pytest.approx(np.corrcoef(rankdata(x[keep]), rankdata(y[keep]))[0, 1])


def test_correlation_needs_three_varying_languages():
    with pytest.raises(ValueError, match="at least 3"):
        correlation.divergence_score_correlation(np.array([0.1, 0.2]), np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="vary"):
        correlation.divergence_score_correlation(np.array([0.1, 0.2, 0.3]), np.array([1.0, 1.0, 1.0]))


def test_depth_zones_have_one_rule_and_one_fallback():
    from moe_core.analysis.zones import zone_band, zone_index, zone_layers

    layers = np.arange(1, 24)  # layer 0 dense
    # Today's edges, the same as RISE's own zones (shallow/middle/deep there).
    assert np.array_equal(zone_index(layers, 24), rise.depth_zones(layers, 24))
    assert zone_layers(layers, 24, "middle") == list(range(9, 15)) and zone_band(layers, 24, "late") == (15, 23)
    # A zone without an MoE layer: its band is the MoE layer nearest the zone's centre, never empty.
    assert zone_layers([0, 3], 4, "middle") == [] and zone_band([0, 3], 4, "middle") == (3, 3)
    assert zone_band([0], 1, "middle") == (0, 0)
    with pytest.raises(ValueError, match="'deep' is not a depth zone"):  # one vocabulary
        zone_layers(layers, 24, "deep")
