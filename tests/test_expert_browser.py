"""The expert browser's computations and reads: the numpy parts against brute-force loops, the
frequencies against a SQL count over `routes`, the bounded sample and its co-selection against the
stored rows, the labels against the analyses they come from, and `polyroute analyze expert`."""

from __future__ import annotations

import inspect
import json
import shutil
from collections import Counter

import duckdb
import numpy as np
import pytest

from moe_core.analysis import expert_usage as usage
from polyroute.analyses import analyze_experts, analyze_rise, analyze_shared
from polyroute.analyses.expert import analyze_expert
from polyroute.analyses.registry import ANALYSES
from polyroute.cli import main
from polyroute.run_data import RunData, Selection
from polyroute.ui.expert_links import most_visited
from store import open_store
from store.expert_tokens import expert_sample
from tests.conftest import PLANTED_EXCLUSIVE

RNG = np.random.default_rng(5)


def _top_k(n: int, k: int, n_experts: int) -> np.ndarray:
    """[n, k] distinct expert ids per row."""
    return np.argsort(RNG.random((n, n_experts)), axis=-1)[:, :k]


# the numpy parts ---------------------------------------------------------------------------------


def test_coselection_matches_a_loop_over_tokens():
    experts = _top_k(300, 3, 9)
    expected = np.zeros(9, dtype=np.int64)
    for row in experts.tolist():
        if 4 in row:
            for other in row:
                expected[other] += 1
    np.testing.assert_array_equal(usage.coselection(experts, 4, 9), expected)
    assert usage.coselection(np.zeros((0, 3), np.int64), 4, 9).tolist() == [0] * 9


def test_token_tally_matches_a_counter_and_orders_most_routed_first():
    ids = RNG.integers(0, 12, 400)
    routed = RNG.random(400) < 0.3
    found_ids, hits, seen = usage.token_tally(ids, routed)
    routed_counts, seen_counts = Counter(ids[routed].tolist()), Counter(ids.tolist())
    assert set(found_ids.tolist()) == set(routed_counts)
    for token, n_hits, n_seen in zip(found_ids.tolist(), hits.tolist(), seen.tolist(), strict=True):
        assert (n_hits, n_seen) == (routed_counts[token], seen_counts[token])
    keys = [(-h, -h / s, t) for t, h, s in zip(found_ids, hits, seen, strict=True)]
    assert keys == sorted(keys)


def test_usage_rank_layer_window_and_weight_on_match_loops():
    freq = RNG.random((4, 5, 7))
    freq[0, 0, 3] = freq[0, 0, 1]  # a tie shares the better rank
    rank = usage.usage_rank(freq, 3)
    for index in np.ndindex(4, 5):
        assert rank[index] == 1 + sum(value > freq[index][3] for value in freq[index])
    layers = np.array([1, 3, 4, 5, 8, 9])
    assert usage.layer_window(layers, 4).tolist() == [1, 2, 3]  # layers 3, 4, 5: 2 and 6 are not MoE layers
    assert usage.layer_window(layers, 9).tolist() == [4, 5]
    experts, weights = _top_k(50, 2, 6), RNG.random((50, 2))
    expected = [
        sum(w for e, w in zip(row, ws, strict=True) if e == 2) for row, ws in zip(experts, weights, strict=True)
    ]
    np.testing.assert_allclose(usage.weight_on(experts, weights, 2), expected)


def test_most_visited_counts_each_layers_tokens():
    experts = np.stack([_top_k(40, 2, 5) for _ in range(3)], axis=1)  # [T, Y, k]
    found = most_visited(experts, [2, 4, 6])
    expected = Counter((layer, int(e)) for t in range(40) for y, layer in enumerate([2, 4, 6]) for e in experts[t, y])
    assert {(layer, e): int(note.split()[0]) for layer, e, note in found} == expected
    counts = [int(note.split()[0]) for _, _, note in found]
    assert counts == sorted(counts, reverse=True)


# the store reads ---------------------------------------------------------------------------------


def _routes(db, layer: int, seq_ids: list[int] | None = None) -> list[tuple]:
    """(lang, seq_id, pos, expert) of every routing decision of run 1 in `layer`, from the `routes` view."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT s.lang, r.seq_id, r.pos, r.expert FROM routes AS r JOIN sequences AS s USING (run_id, seq_id) "
            "WHERE r.run_id = 1 AND r.layer = ? ORDER BY r.seq_id, r.pos, r.rank",
            [layer],
        ).fetchall()
    finally:
        con.close()
    return [row for row in rows if seq_ids is None or row[1] in seq_ids]


def test_frequencies_match_a_sql_count(planted_store):
    layer, expert = 0, 5
    rows = _routes(planted_store, layer)
    hits = Counter(lang for lang, _, _, e in rows if e == expert)
    tokens = Counter(lang for lang, *_ in {(lang, seq, pos) for lang, seq, pos, _ in rows})
    with open_store(planted_store, read_only=True) as store:
        result = analyze_expert(RunData(store, 1, Selection()), layer=layer, expert=expert)
    for record in result.table("by_language").records():
        assert record["hits"] == hits[record["lang"]] and record["tokens"] == tokens[record["lang"]]
        assert record["frequency"] == pytest.approx(hits[record["lang"]] / tokens[record["lang"]], abs=1e-6)
    top = max(result.table("by_language").records(), key=lambda r: r["frequency"])
    assert top["lang"] == "tam_Taml" and top["rank"] == 1  # the planted exclusive expert


def test_the_sample_takes_the_sequences_with_most_hits_and_their_coselection(planted_store):
    layer, expert, per_lang = 7, 11, 3
    rows = _routes(planted_store, layer)
    per_seq = Counter((lang, seq) for lang, seq, _, e in rows if e == expert)
    with open_store(planted_store, read_only=True) as store:
        data = RunData(store, 1, Selection())
        sample = expert_sample(store, 1, layer, expert, per_lang=per_lang, langs=data.langs, top_k=data.layout.top_k)
        result = analyze_expert(data, layer=layer, expert=expert, sequences=per_lang)
    for lang in data.langs:
        ranked = sorted((-n, seq) for (code, seq), n in per_seq.items() if code == lang)[:per_lang]
        chosen = [seq for seq, code in zip(sample.seq_ids.tolist(), sample.seq_langs, strict=True) if code == lang]
        assert chosen == sorted(seq for _, seq in ranked), lang
        with_hits = [seq for (code, seq), n in per_seq.items() if code == lang and n > 0]
        assert sample.candidates.get(lang, 0) == len(with_hits), lang  # its sequences with any hit
    assert sample.seq_ids.tolist() == sorted(sample.seq_ids.tolist())
    pairs = zip(sample.seq_langs, sample.seq_ids.tolist(), strict=True)
    assert sample.seq_hits.tolist() == [per_seq[code, seq] for code, seq in pairs]
    # co-selection: a loop over the sampled sequences' rows in `routes`
    kept = set(sample.seq_ids.tolist())
    by_token: dict[tuple[int, int], list[int]] = {}
    for _, seq, pos, e in _routes(planted_store, layer, kept):
        by_token.setdefault((seq, pos), []).append(e)
    expected = Counter(e for chosen in by_token.values() if expert in chosen for e in chosen if e != expert)
    assert expected and {r["expert"]: r["tokens"] for r in result.table("coselected").records()} == expected
    assert result.summary["sampled_tokens"] == len(by_token)
    # each listed token was sent to the expert as often as it says, within the sample
    first = result.table("top_tokens").records()[0]
    assert first["routed"] >= 1 and "⟦" in first["context"] and first["seq_id"] in kept


def test_labels_are_those_of_the_analyses_at_their_defaults(planted_store):
    (layer, expert), lang = PLANTED_EXCLUSIVE["kaz_Cyrl"][0], "kaz_Cyrl"
    with open_store(planted_store, read_only=True) as store:
        data = RunData(store, 1, Selection())
        labels = analyze_expert(data, layer=layer, expert=expert).table("labels").records()
        shared, specific = analyze_shared(data), analyze_experts(data)
        rise = analyze_rise(data, target=lang)
    found = {(r["label"], r["lang"]) for r in labels}
    assert ("exclusive", lang) in found
    said = next(r for r in labels if r["label"] == "exclusive")
    assert said["analysis"] == "shared" and said["params"] == "k=15, thr=0.4"
    exclusive = {(r["lang"], r["layer"], r["expert"]) for r in shared.table("exclusive").records()}
    assert {(code, layer, expert) for label, code in found if label == "exclusive"} == {
        key for key in exclusive if key[1:] == (layer, expert)
    }
    specialised = {
        r["lang"] for r in specific.table("specialised").records() if (r["layer"], r["expert"]) == (layer, expert)
    }
    assert {code for label, code in found if label == "language-specific"} == specialised
    in_rise = any((r["layer"], r["expert"]) == (layer, expert) for r in rise.table("selected").records())
    assert (("RISE subnetwork", lang) in found) == in_rise


def test_an_id_only_run_lists_its_tokens_without_weights(planted_store, tmp_path):
    db = tmp_path / "id_only.duckdb"
    shutil.copyfile(planted_store, db)
    con = duckdb.connect(str(db))
    con.execute("UPDATE route_lists SET weight_codes = NULL")
    con.close()
    with open_store(db, read_only=True) as store:
        result = analyze_expert(RunData(store, 1, Selection()), layer=0, expert=5)
    tokens = result.table("top_tokens").records()
    assert tokens and all(r["mean_weight"] is None and r["routed"] >= 1 for r in tokens)


def test_the_labels_use_the_registrys_defaults():
    """The labels say "default parameters": the functions' defaults are the CLI's."""
    for name in ("shared", "experts", "rise"):
        signature = inspect.signature(ANALYSES[name].function).parameters
        for param in ANALYSES[name].params:
            if param.default is not None and not param.input and param.kind != "ratios":
                assert signature[param.name].default == param.default, (name, param.name)


# the command line --------------------------------------------------------------------------------


def test_analyze_expert_prints_every_table(planted_store, capsys):
    code = main(
        ["analyze", "expert", "--run", "1", "--db", str(planted_store), "--layer", "0", "--expert", "5",
         "--format", "json", "--sequences", "4", "--top-tokens", "3"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    payload = json.loads(out)
    assert payload["params"]["layer"] == 0 and payload["params"]["expert"] == 5
    assert payload["params"]["neighbourhood"] == "0-2"
    assert set(payload["tables"]) == {"by_language", "neighbourhood", "labels", "top_tokens", "coselected", "sample"}
    assert {r["layer"] for r in payload["tables"]["neighbourhood"]} == {0, 1, 2}
    assert max(Counter(r["lang"] for r in payload["tables"]["top_tokens"]).values()) <= 3
    assert all(r["sequences"] <= 4 for r in payload["tables"]["sample"])
    assert ("exclusive", "tam_Taml") in {(r["label"], r["lang"]) for r in payload["tables"]["labels"]}


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--layer", "99", "--expert", "1"], "--layer"),
        (["--layer", "2", "--expert", "16"], "--expert"),
        (["--layer", "2", "--expert", "-1"], "--expert"),
        (["--layer", "2", "--expert", "1", "--sequences", "0"], "--sequences"),
    ],
)
def test_bad_layer_or_expert_is_one_line_naming_the_flag(planted_store, capsys, argv, named):
    code = main(["analyze", "expert", "--run", "1", "--db", str(planted_store), *argv])
    out, err = capsys.readouterr()
    assert code == 2 and not out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("polyroute: error:") and named in lines[0], err


def test_a_store_draws_no_progress_bar_into_the_output(planted_store):
    """DuckDB prints a progress bar on stdout for a query over 2 s (the sample of a big store):
    it would break `--format json` and `csv`."""
    with open_store(planted_store, read_only=True) as store:
        assert store.con.execute("SELECT current_setting('enable_progress_bar')").fetchone() == (False,)
