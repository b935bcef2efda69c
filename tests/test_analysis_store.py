"""The analyses from store to result: the SQL aggregates against brute force over the stored rows,
and every analysis finding the structure planted in a synthetic trace."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest

from moe_core.analysis import divergence
from moe_core.errors import ParameterError, PolyrouteError
from polyroute import analyses
from polyroute.run_data import RunData, Selection
from store import open_store, upgrades
from store import queries as q
from tests.conftest import PLANTED_EXCLUSIVE, PLANTED_FAMILIES
from tests.helpers import sequence_distributions as _per_sequence
from tests.helpers import stored_rows as _rows


def _data(db: Path, **selection) -> RunData:
    store = open_store(db, read_only=True)
    return RunData(store, 1, Selection(**selection))


# the inputs: the routing summaries against brute force over the stored rows --------------------


def test_language_sums_equal_counting_every_stored_routing_decision(planted_store):
    sequences = _per_sequence(planted_store)
    data = _data(planted_store)
    sums = data.sums
    assert data.sums.sources == ("soft", "weight", "hard")
    for i, lang in enumerate(data.layout.langs):
        mine = [seq for seq in sequences.values() if seq["lang"] == lang]
        assert sums.n_sequences[i, 0] == len(mine)
        assert sums.n_tokens[i, 0] == sum(seq["n"] for seq in mine)
        for y in range(8):
            np.testing.assert_array_equal(sums.hits[i, y], sum(seq["hits"][y] for seq in mine))
            np.testing.assert_allclose(sums.frequency_sum[i, y], sum(seq["hits"][y] / seq["n"] for seq in mine))
            np.testing.assert_allclose(sums.weight_sum[i, y], sum(seq["weight"][y] for seq in mine), rtol=1e-5)
            np.testing.assert_allclose(sums.soft_sum[i, y], sum(seq["soft"][y] for seq in mine), rtol=1e-5)
            for source in ("soft", "weight", "hard"):
                expected = sum(divergence.entropy(seq[source][y]) for seq in mine)
                assert sums.entropy[source][i, y] == pytest.approx(expected, rel=1e-5)
    frequencies = data.frequencies
    assert frequencies.shape == (9, 8, 16)
    np.testing.assert_allclose(frequencies.sum(axis=-1), 2)


def test_pair_divergence_equals_comparing_every_aligned_pair_of_sequences(planted_store):
    sequences = _per_sequence(planted_store)
    for source in ("soft", "weight", "hard"):
        data = _data(planted_store, langs=["eng_Latn", "tam_Taml", "kaz_Cyrl"], layers=(2, 5), source=source)
        sums = data.pair_divergence
        for a, b in itertools.combinations(range(3), 2):
            pairs = [
                (p, q)
                for p in sequences.values()
                for q in sequences.values()
                if (p["lang"], q["lang"]) == (data.langs[a], data.langs[b]) and p["item"] == q["item"]
            ]
            assert sums.n[a, b] == sums.n[b, a] == len(pairs) == 12
            for y, layer in enumerate(range(2, 6)):
                values = [divergence.normalised_js(p[source][layer], q[source][layer]) for p, q in pairs]
                js = [divergence.js_divergence(p[source][layer], q[source][layer]) for p, q in pairs]
                assert sums.normalised[a, b, y] == pytest.approx(sum(values), rel=1e-5)
                assert sums.js[b, a, y] == pytest.approx(sum(js), rel=1e-5)


def test_sequence_router_probs_come_in_the_order_asked(planted_store):
    with open_store(planted_store, read_only=True) as store:
        layout = q.run_layout(store, 1)
        probs = q.sequence_router_probs(store, layout, np.array([7, 2, 5]))
    stored = {
        (seq, layer): values
        for seq, layer, values in _rows(planted_store, "SELECT seq_id, layer, probs FROM router_probs")
    }
    for i, seq in enumerate((7, 2, 5)):
        for y in range(8):
            np.testing.assert_array_equal(probs[i, y], np.asarray(stored[(seq, y)], dtype=np.float32))


def _sorted_experts(db: Path, layout) -> np.ndarray:
    rows = _rows(db, "SELECT expert FROM routes WHERE run_id = 1 ORDER BY seq_id, pos, layer, rank")
    return np.array([row[0] for row in rows]).reshape(-1, len(layout.layers), layout.top_k)


def _streamed(db: Path, layout, layers=None, rows_per_batch=1 << 14, **options) -> np.ndarray:
    """Every token's experts from `token_expert_batches`, put back in seq_id order."""
    by_sequence = {}
    with open_store(db, read_only=True) as store:
        for index, experts, _ in q.token_expert_batches(store, layout, layers, rows_per_batch, **options):
            offsets = np.concatenate([[0], np.cumsum(layout.seq_tokens[index])])
            for i, s in enumerate(index):
                by_sequence[int(s)] = experts[offsets[i] : offsets[i + 1]]
    assert sorted(by_sequence) == list(range(len(layout.seq_ids)))
    return np.concatenate([by_sequence[s] for s in range(len(layout.seq_ids))])


def test_token_experts_stream_whole_sequences_in_order_even_when_rows_are_shuffled(planted_store, tmp_path):
    with open_store(planted_store, read_only=True) as store:
        layout = q.run_layout(store, 1)
    expected = _sorted_experts(planted_store, layout)
    np.testing.assert_array_equal(_streamed(planted_store, layout), expected)
    # Batches that cut sequences in two, and a layer range.
    np.testing.assert_array_equal(_streamed(planted_store, layout, rows_per_batch=13), expected)
    np.testing.assert_array_equal(_streamed(planted_store, layout, (2, 5), rows_per_batch=7), expected[:, 2:6])
    shuffled = tmp_path / "shuffled.duckdb"
    shutil.copy(planted_store, shuffled)
    con = duckdb.connect(str(shuffled))
    con.execute("CREATE TEMP TABLE rows AS SELECT * FROM route_lists ORDER BY hash(seq_id, layer)")
    con.execute("DELETE FROM route_lists")
    con.execute("INSERT INTO route_lists SELECT * FROM rows")
    con.close()
    np.testing.assert_array_equal(_streamed(shuffled, layout, rows_per_batch=13), expected)
    np.testing.assert_array_equal(_streamed(shuffled, layout, rows_per_batch=13, ordered=True), expected)


def test_an_id_only_run_is_analysed_from_activation_frequencies(planted_store, tmp_path):
    id_only = tmp_path / "id-only.duckdb"
    shutil.copy(planted_store, id_only)
    con = duckdb.connect(str(id_only))
    con.execute("DELETE FROM router_probs")
    con.execute("UPDATE route_lists SET weight_codes = NULL")
    con.close()
    with open_store(id_only) as store:
        upgrades.rebuild_summaries(store, 1)  # the rows were edited by hand
    result = analyses.analyze_divergence(_data(id_only))
    assert result.params["source"] == "activation_frequencies"
    assert "activation frequencies" in result.notes[0]
    assert _data(id_only).sums.sources == ("hard",)
    sequences = _per_sequence(planted_store)
    eng = [seq for seq in sequences.values() if seq["lang"] == "eng_Latn"]
    deu = {seq["item"]: seq for seq in sequences.values() if seq["lang"] == "deu_Latn"}
    expected = np.mean([divergence.normalised_js(seq["hard"][3], deu[seq["item"]]["hard"][3]) for seq in eng])
    curve = {(lang, layer): value for lang, layer, value, *_ in result.table("by_layer").rows}
    assert curve[("deu_Latn", 3)] == pytest.approx(expected, abs=1e-6)
    narrow = analyses.analyze_divergence(_data(id_only, layers=(3, 4)))
    assert {(lang, layer): value for lang, layer, value, *_ in narrow.table("by_layer").rows}[("deu_Latn", 3)] == curve[
        ("deu_Latn", 3)
    ]
    for source in ("soft", "weight"):
        with pytest.raises(PolyrouteError, match="choose source hard"):
            _ = _data(id_only, source=source).source


# the planted structure -----------------------------------------------------------------------


def test_divergence_is_u_shaped_and_equals_the_pairwise_formula(planted_store):
    result = analyses.analyze_divergence(_data(planted_store))
    rows = result.table("by_layer").rows
    curve = {}
    for lang, layer, value, _, pairs in rows:
        curve.setdefault(lang, {})[layer] = value
        assert pairs == 12
    assert all(value == 0 for value in curve["eng_Latn"].values())
    others = [lang for lang in curve if lang != "eng_Latn"]
    mean = {layer: np.mean([curve[lang][layer] for lang in others]) for layer in range(8)}
    assert mean[0] > 2 * mean[4] and mean[7] > 2 * mean[3]
    sequences = _per_sequence(planted_store)
    eng = {seq["item"]: seq for seq in sequences.values() if seq["lang"] == "eng_Latn"}
    deu = [seq for seq in sequences.values() if seq["lang"] == "deu_Latn"]
    expected = np.mean([divergence.normalised_js(eng[seq["item"]]["soft"][2], seq["soft"][2]) for seq in deu])
    assert curve["deu_Latn"][2] == pytest.approx(expected, abs=1e-6)


def test_a_planted_exclusive_expert_is_found_as_exclusive_and_specialised(planted_store):
    shared = analyses.analyze_shared(_data(planted_store), k=4, thr=0.4)
    exclusive = {(lang, layer, expert) for lang, layer, expert, _ in shared.table("exclusive").rows}
    for lang, planted in PLANTED_EXCLUSIVE.items():
        for layer, expert in planted:
            assert (lang, layer, expert) in exclusive
            assert (layer, expert) not in {(row[0], row[1]) for row in shared.table("shared").rows}
    experts = analyses.analyze_experts(_data(planted_store), tau=0.3)
    specialised = {(lang, layer, expert) for lang, layer, expert, *_ in experts.table("specialised").rows}
    assert ("tam_Taml", 0, 5) in specialised and ("kaz_Cyrl", 7, 11) in specialised


def test_rise_selects_the_planted_expert_of_its_target_first_in_its_zone(planted_store):
    result = analyses.analyze_rise(_data(planted_store), target="kaz_Cyrl", budget=10)
    deep = [(layer, expert) for _, zone, layer, expert, *_ in result.table("selected").rows if zone == "deep"]
    assert deep[0] == (7, 11)
    assert len(result.table("selected").rows) == 10
    assert result.summary["zone_budgets"] == "3,2,5"


def test_similarity_recovers_the_planted_families(planted_store):
    for measure in ("divergence", "cosine"):
        result = analyses.analyze_similarity(_data(planted_store, layers=(0, 7)), measure=measure)
        assert result.summary["ari_clusters_vs_families"] > 0.8, measure
    families = {lang: family for family, langs in PLANTED_FAMILIES.items() for lang in langs}
    clusters = result.table("clusters").rows
    assert all(family == families[lang] for lang, family, _, _ in clusters)


def test_isolation_consistency_and_entropy_run_on_the_planted_store(planted_store):
    isolation = analyses.analyze_isolation(_data(planted_store))
    assert set(isolation.summary["low_resource"].split(",")) == {"kan_Knda", "tel_Telu"}
    assert all(0 <= row[2] <= 1 for row in isolation.table("by_layer").rows)
    consistency = analyses.analyze_consistency(_data(planted_store))
    assert all(0 < row[2] <= 1 for row in consistency.table("by_layer").rows)
    entropy = analyses.analyze_entropy(_data(planted_store), token_level=True)
    assert all(0 < row[2] < np.log(16) for row in entropy.table("by_layer").rows)
    assert "--save-logits" in entropy.notes[0]


def test_selection_errors_name_the_fix(planted_store):
    with pytest.raises(PolyrouteError, match="its languages are"):
        _data(planted_store, langs=["ben_Beng"])
    with pytest.raises(PolyrouteError, match="routes in layers 0-7"):
        _data(planted_store, layers=(20, 30))
    with pytest.raises(ParameterError, match="choose ref from"):  # the CLI says --ref, the API ref
        analyses.analyze_divergence(_data(planted_store, langs=["deu_Latn", "fra_Latn"]))
    with pytest.raises(PolyrouteError, match="no traced sequences for run 9"):
        RunData(open_store(planted_store, read_only=True), 9, Selection())


def test_token_level_entropy_comes_from_the_stored_logits(tmp_path):
    from scipy.special import softmax
    from scipy.stats import entropy

    from moe_core.synthetic import SyntheticBackend, synthetic_corpus
    from polyroute.workflows.trace import TraceRequest, start_trace
    from tests.conftest import planted_routing, write_jsonl

    plan = planted_routing(n_items=3)
    rows = [{"item_id": i, "lang": lang, "text": text} for i, lang, text in synthetic_corpus(plan)]
    corpus = write_jsonl(tmp_path / "c.jsonl", rows)
    db = tmp_path / "logits.duckdb"
    request = TraceRequest(
        db=db, model=SyntheticBackend(plan), corpus=corpus, langs=["eng_Latn", "tam_Taml"], save_logits=True
    )
    start_trace(request)
    result = analyses.analyze_entropy(_data(db), token_level=True)
    stored = _rows(db, "SELECT s.lang, l.layer, l.logits FROM router_logits l JOIN sequences s USING (run_id, seq_id)")
    for lang, layer, _, _, token_entropy in result.table("by_layer").rows:
        values = [
            entropy(softmax(np.asarray(z, dtype=np.float64))) for code, y, z in stored if (code, y) == (lang, layer)
        ]
        assert token_entropy == pytest.approx(np.mean(values), abs=1e-5)
    assert not result.notes


def test_task_experts_are_found_against_a_generic_reference_run(tmp_path):
    from moe_core.synthetic import SyntheticBackend, synthetic_corpus
    from polyroute.workflows.trace import TraceRequest, start_trace
    from tests.conftest import planted_routing, write_jsonl

    plan = planted_routing(n_items=16, task_items=8, task_experts=((3, 6), (4, 13)))
    backend = SyntheticBackend(plan)  # one model traces both corpora
    rows = synthetic_corpus(plan)
    db = tmp_path / "task.duckdb"
    for name, task in (("generic", False), ("math", True)):
        chosen = [{"item_id": i, "lang": lang, "text": text} for i, lang, text in rows if (int(i[4:]) >= 8) == task]
        corpus = write_jsonl(tmp_path / f"{name}.jsonl", chosen)
        start_trace(TraceRequest(db=db, model=backend, corpus=corpus, langs=["eng_Latn", "deu_Latn"]))
    with open_store(db, read_only=True) as store:
        generic, task = RunData(store, 1, Selection()), RunData(store, 2, Selection())
        found = analyses.analyze_experts(task, tau=0.3, reference=generic)
        assert {(layer, expert) for layer, expert, *_ in found.table("specialised").rows} == {(3, 6), (4, 13)}
        assert found.params["kind"] == "task experts" and found.params["ref_run"] == 1
        none_found = analyses.analyze_experts(generic, tau=0.3, reference=task)
        assert none_found.table("specialised").rows == []
