"""Token paths: the expert flow against a brute-force loop, the page's reads against the stored rows
of a real traced store, and the page itself in Streamlit's AppTest."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from moe_core.analysis.flow import expert_flow, routing_shares
from polyroute.cli import main
from store import StoreError, open_store
from store.token_paths import item_token_paths, traced_items
from tests.conftest import PARALLEL, write_jsonl
from tests.helpers import trace_argv

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(11)
LANGS = "eng_Latn,deu_Latn,rus_Cyrl"


# expert_flow ---------------------------------------------------------------------------------


def _random_routes(n_tokens: int, n_layers: int, top_k: int, n_experts: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct top-k experts per token and layer, and positive weights."""
    ids = np.argsort(RNG.random((n_tokens, n_layers, n_experts)), axis=-1)[..., :top_k]
    return ids, RNG.random((n_tokens, n_layers, top_k)).astype(np.float32) + 0.01


def _brute_force_flow(ids: np.ndarray, weights: np.ndarray | None, n_experts: int) -> np.ndarray:
    n_tokens, n_layers, top_k = ids.shape
    flow = np.zeros((max(n_layers - 1, 0), n_experts, n_experts))
    for t in range(n_tokens):
        for y in range(n_layers - 1):
            here = [1 / top_k] * top_k if weights is None else list(weights[t, y] / weights[t, y].sum())
            there = [1 / top_k] * top_k if weights is None else list(weights[t, y + 1] / weights[t, y + 1].sum())
            for i in range(top_k):
                for j in range(top_k):
                    flow[y, ids[t, y, i], ids[t, y + 1, j]] += here[i] * there[j]
    return flow


@pytest.mark.parametrize("with_weights", [True, False])
def test_expert_flow_matches_a_brute_force_loop(with_weights):
    ids, weights = _random_routes(30, 5, 3, 9)
    used = weights if with_weights else None
    flow = expert_flow(ids, used, 9)
    assert flow.shape == (4, 9, 9)
    np.testing.assert_allclose(flow, _brute_force_flow(ids, used, 9), rtol=1e-6)
    np.testing.assert_allclose(flow.sum(axis=(1, 2)), 30)  # each token carries a mass of 1 per step


def test_expert_flow_of_one_token_is_the_product_of_its_shares():
    ids, weights = _random_routes(1, 3, 2, 6)
    flow = expert_flow(ids, weights, 6)
    shares = weights / weights.sum(axis=-1, keepdims=True)
    for y in range(2):
        expected = np.zeros((6, 6))
        expected[np.ix_(ids[0, y], ids[0, y + 1])] = np.outer(shares[0, y], shares[0, y + 1])
        np.testing.assert_allclose(flow[y], expected, rtol=1e-6)


def test_one_layer_has_no_flow_and_no_tokens_flow_nothing():
    ids, weights = _random_routes(4, 1, 2, 5)
    assert expert_flow(ids, weights, 5).shape == (0, 5, 5)
    empty = expert_flow(np.zeros((0, 3, 2), dtype=np.int64), None, 5)
    assert empty.shape == (2, 5, 5) and not empty.any()


def test_weights_that_sum_to_zero_count_as_uniform_and_bad_ids_are_refused():
    ids = np.array([[[0, 1], [2, 3]]])
    shares = routing_shares(ids, np.zeros((1, 2, 2)))
    np.testing.assert_allclose(shares, 0.5)
    np.testing.assert_allclose(expert_flow(ids, np.zeros((1, 2, 2)), 4), expert_flow(ids, None, 4))
    with pytest.raises(ValueError, match="expert ids"):
        expert_flow(ids, None, 3)


# the store reads -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def traced(tmp_path_factory, tiny_model) -> Path:
    """A store traced by a real tiny DeepSeek-V2 (its first layer is dense: MoE layers start at 1),
    with item5 left untraced in Russian."""
    root = tmp_path_factory.mktemp("token_paths")
    rows = [
        {"item_id": f"item{i}", "lang": lang, "text": text}
        for lang, texts in PARALLEL.items()
        for i, text in enumerate(texts)
        if (i, lang) != (5, "rus_Cyrl")
    ]
    corpus = write_jsonl(root / "parallel.jsonl", rows)
    db = root / "traced.duckdb"
    assert main(trace_argv(db, tiny_model("deepseek_v2"), corpus, LANGS)) == 0
    return db


def _rows(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def test_traced_items_list_each_item_with_its_languages_and_a_text(traced):
    with open_store(traced, read_only=True) as store:
        items = traced_items(store, 1, "deu_Latn")
    assert [item.item_id for item in items] == [f"item{i}" for i in range(6)]  # corpus order
    langs = defaultdict(set)
    for item_id, lang in _rows(traced, "SELECT item_id, lang FROM sequences WHERE run_id = 1"):
        langs[item_id].add(lang)
    for item in items:
        assert item.langs == tuple(sorted(langs[item.item_id]))
        assert (item.text, item.text_lang) == (PARALLEL["deu_Latn"][int(item.item_id[4:])], "deu_Latn")
    assert items[5].langs == ("deu_Latn", "eng_Latn")
    assert items[0].traced_in_all(["eng_Latn", "rus_Cyrl"]) and not items[5].traced_in_all(["eng_Latn", "rus_Cyrl"])
    with open_store(traced, read_only=True) as store:
        in_russian = traced_items(store, 1, "rus_Cyrl")
    # Without a Russian text an item is named in its first traced language.
    assert (in_russian[5].text, in_russian[5].text_lang) == (PARALLEL["deu_Latn"][5], "deu_Latn")


def _brute_force_paths(db: Path, item_id: str) -> dict[str, dict]:
    """Every stored row of the item's sequences, read one by one."""
    found: dict[str, dict] = {}
    sequences = _rows(db, "SELECT seq_id, lang FROM sequences WHERE run_id = 1 AND item_id = ?", [item_id])
    for seq_id, lang in sequences:
        tokens = _rows(db, "SELECT pos, piece, token_id FROM tokens WHERE run_id = 1 AND seq_id = ?", [seq_id])
        routes: dict[tuple[int, int, int], tuple[int, float | None]] = {}
        for pos, layer, rank, expert, weight in _rows(
            db, "SELECT pos, layer, rank, expert, weight FROM routes WHERE run_id = 1 AND seq_id = ?", [seq_id]
        ):
            routes[(pos, layer, rank)] = (expert, weight)
        found[lang] = {
            "seq_id": seq_id,
            "pieces": [piece for _, piece, _ in sorted(tokens)],
            "token_ids": [token_id for _, _, token_id in sorted(tokens)],
            "routes": routes,
        }
    return found


def test_item_token_paths_hold_every_stored_route(traced):
    moe_layers = _rows(traced, "SELECT moe_layers FROM models")[0][0]
    assert moe_layers[0] == 1  # the dense first layer is not a row of the arrays
    with open_store(traced, read_only=True) as store:
        paths = item_token_paths(store, 1, "item1", ["rus_Cyrl", "eng_Latn", "deu_Latn"])
    expected = _brute_force_paths(traced, "item1")
    assert [path.lang for path in paths] == ["rus_Cyrl", "eng_Latn", "deu_Latn"]  # in the order asked
    for path in paths:
        rows = expected[path.lang]
        assert path.seq_id == rows["seq_id"] and path.text == PARALLEL[path.lang][1]
        assert path.pieces == rows["pieces"] and path.token_ids.tolist() == rows["token_ids"]
        assert path.layers.tolist() == moe_layers
        assert path.weights is not None and path.experts.shape == path.weights.shape
        assert path.experts.size == len(rows["routes"])
        for (pos, layer, rank), (expert, weight) in rows["routes"].items():
            y = moe_layers.index(layer)
            assert path.experts[pos, y, rank] == expert
            assert path.weights[pos, y, rank] == pytest.approx(weight)


def test_languages_an_item_lacks_are_left_out_and_an_unknown_item_is_empty(traced):
    with open_store(traced, read_only=True) as store:
        assert [p.lang for p in item_token_paths(store, 1, "item5", ["rus_Cyrl", "eng_Latn"])] == ["eng_Latn"]
        assert item_token_paths(store, 1, "nothing", ["eng_Latn"]) == []
        assert item_token_paths(store, 99, "item1", ["eng_Latn"]) == []


def test_an_id_only_run_has_no_weights_and_a_damaged_one_is_refused(traced, tmp_path):
    id_only = tmp_path / "id-only.duckdb"
    shutil.copy(traced, id_only)
    con = duckdb.connect(str(id_only))
    con.execute("UPDATE route_lists SET weight_codes = NULL")
    con.close()
    with open_store(traced, read_only=True) as store:
        weighted = item_token_paths(store, 1, "item2", ["eng_Latn"])[0]
    with open_store(id_only, read_only=True) as store:
        ids_only = item_token_paths(store, 1, "item2", ["eng_Latn"])[0]
    assert ids_only.weights is None
    np.testing.assert_array_equal(ids_only.experts, weighted.experts)
    con = duckdb.connect(str(id_only))
    # One decision too few: the first layer loses its first token's top-1 expert.
    con.execute(
        "UPDATE route_lists SET experts = experts[2:] "
        "WHERE seq_id = ? AND layer = (SELECT min(layer) FROM route_lists)",
        [weighted.seq_id],
    )
    con.close()
    with open_store(id_only, read_only=True) as store, pytest.raises(StoreError, match="incomplete routing rows"):
        item_token_paths(store, 1, "item2", ["eng_Latn"])


# the page ------------------------------------------------------------------------------------


def _page(db: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("POLYROUTE_DB", str(db))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    # Started from the home page, as the app is: the sidebar's links resolve against it.
    at.switch_page("pages/token_paths.py").run()
    assert not at.exception, at.exception
    return at


def _charts(at: AppTest) -> list[tuple[dict, list[pd.DataFrame]]]:
    """Every Altair chart on the page: its spec and its datasets."""
    return [
        (json.loads(c.proto.spec), [pa.ipc.open_stream(d.data.data).read_pandas() for d in c.proto.datasets])
        for c in at.get("vega_lite_chart")
    ]


def _grid_tokens(at: AppTest) -> dict[str, list[str]]:
    """Each grid's language and its tokens in position order."""
    grids = {}
    for spec, frames in _charts(at)[:-1]:
        cells = frames[0].sort_values(["position", "layer"])
        grids[spec["title"]["text"]] = cells.drop_duplicates("position")["token"].tolist()
    return grids


def test_the_page_shows_the_chosen_item_in_the_chosen_languages(traced, tmp_path, monkeypatch):
    db = tmp_path / "page.duckdb"
    shutil.copy(traced, db)
    at = _page(db, monkeypatch)
    assert at.title[0].value == "Token paths"
    # The reference language, the first in another script, and another in the reference's script.
    assert at.multiselect(key="token_paths_langs").value == ["eng_Latn", "rus_Cyrl", "deu_Latn"]
    assert at.selectbox(key="token_paths_item").value == "item0"
    grids = _grid_tokens(at)
    assert list(grids) == ["eng_Latn · English", "rus_Cyrl · Russian", "deu_Latn · German"]
    assert "weather" in "".join(grids["eng_Latn · English"])
    first_spec, first_frames = _charts(at)[0]
    assert first_spec["title"]["subtitle"] == f"{len(grids['eng_Latn · English'])} tokens"
    assert first_frames[0]["experts"].str.match(r"^\d+ \(\d\.\d\d\)").all()  # weights on hover

    at.selectbox(key="token_paths_item").select("item1").run()
    assert not at.exception
    assert "children" in "".join(_grid_tokens(at)["eng_Latn · English"])

    at.multiselect(key="token_paths_langs").set_value(["deu_Latn", "rus_Cyrl"]).run()
    assert not at.exception
    assert list(_grid_tokens(at)) == ["deu_Latn · German", "rus_Cyrl · Russian"]
    assert at.selectbox(key="token_paths_item").value == "item1"  # the item stays chosen

    at.selectbox(key="token_paths_item").select("item5").run()
    assert "not traced in rus_Cyrl" in at.info[0].value
    assert list(_grid_tokens(at)) == ["deu_Latn · German"]


def _special_flags(db: Path, item_id: str, lang: str) -> list[bool]:
    """Which of the sequence's tokens are special, read from `db` (not the page's copy: that one is
    open in this process, and DuckDB allows no second kind of connection to it)."""
    sql = "SELECT special FROM tokens JOIN sequences USING (run_id, seq_id) WHERE item_id = ? AND lang = ? ORDER BY pos"
    return [flag for (flag,) in _rows(db, sql, [item_id, lang])]


def test_the_flow_follows_the_whole_sentence_or_one_token(traced, tmp_path, monkeypatch):
    db = tmp_path / "flow.duckdb"
    shutil.copy(traced, db)
    at = _page(db, monkeypatch)
    special = _special_flags(traced, "item0", "eng_Latn")
    assert any(special)  # the tokenizer adds a start-of-text token, which the whole-sentence flow leaves out
    own = special.count(False)
    spec, (links, nodes) = _charts(at)[-1]
    assert spec["title"]["text"] == f"eng_Latn · English: the whole sentence ({own} tokens of its own)"
    moved = links.groupby("from_layer")["moved"].sum()
    np.testing.assert_allclose(moved, own, rtol=1e-5)  # every token moves on at every step (no link hidden)
    assert set(links["from_layer"]) | set(links["to_layer"]) == set(nodes["layer"])

    at.radio(key="token_paths_flow_scope").set_value("one token").run()
    assert not at.exception
    token = at.selectbox(key="token_paths_flow_token")
    assert token.value == special.index(False)  # the first token of the text itself
    spec, (links, _) = _charts(at)[-1]
    assert spec["title"]["text"].startswith("eng_Latn · English: token ")
    np.testing.assert_allclose(links.groupby("from_layer")["moved"].sum(), 1, rtol=1e-5)

    token.select(2).run()
    spec, (other, _) = _charts(at)[-1]
    assert spec["title"]["text"].startswith("eng_Latn · English: token 2 · ")
    assert not links.equals(other)

    at.selectbox(key="token_paths_flow_lang").select("rus_Cyrl").run()
    assert _charts(at)[-1][0]["title"]["text"].startswith("rus_Cyrl · Russian: token ")


def test_an_id_only_run_says_its_weights_are_missing(traced, tmp_path, monkeypatch):
    db = tmp_path / "id-only.duckdb"
    shutil.copy(traced, db)
    con = duckdb.connect(str(db))
    con.execute("UPDATE route_lists SET weight_codes = NULL")
    con.close()
    at = _page(db, monkeypatch)
    assert any("expert ids only" in caption.value for caption in at.caption)
    assert _charts(at)[0][1][0]["experts"].str.endswith("(weights not stored)").all()
    own = _special_flags(traced, "item0", "eng_Latn").count(False)
    np.testing.assert_allclose(_charts(at)[-1][1][0].groupby("from_layer")["moved"].sum(), own, rtol=1e-5)


def test_mass_on_experts_agrees_with_a_loop():
    from moe_core.analysis.flow import mass_on_experts

    rng = np.random.default_rng(3)
    n_tokens, n_layers, top_k, n_experts = 9, 4, 3, 7
    ids = np.stack([[rng.choice(n_experts, top_k, replace=False) for _ in range(n_layers)] for _ in range(n_tokens)])
    weights = rng.random((n_tokens, n_layers, top_k))
    chosen = rng.random((n_layers, n_experts)) < 0.3
    for given in (weights, None):
        expected = np.zeros(n_layers)
        for t in range(n_tokens):
            for y in range(n_layers):
                w = given[t, y] / given[t, y].sum() if given is not None else np.full(top_k, 1 / top_k)
                expected[y] += sum(w[r] for r in range(top_k) if chosen[y, ids[t, y, r]]) / n_tokens
        np.testing.assert_allclose(mass_on_experts(ids, given, chosen), expected)
    assert np.isnan(mass_on_experts(np.zeros((0, 2, 1), int), None, np.ones((2, 3), bool))).all()


@pytest.mark.parametrize("n_experts", [8, 20, 21, 128])
def test_a_grid_has_a_legend_only_while_each_colour_is_one_expert(n_experts):
    from polyroute.ui.token_charts import PALETTE, colours_repeat, path_grid
    from store.token_paths import TokenPath

    ids, weights = _random_routes(n_tokens=5, n_layers=4, top_k=2, n_experts=n_experts)
    path = TokenPath(
        lang="eng_Latn", seq_id=0, text="a b c d e", pieces=list("abcde"), token_ids=np.arange(5),
        special=np.zeros(5, dtype=bool), layers=np.arange(4), experts=ids, weights=weights,
    )  # fmt: skip
    spec = path_grid(path, n_experts).to_dict()
    colour = next(layer["encoding"]["color"] for layer in spec["layer"] if layer["mark"]["type"] == "rect")
    assert colours_repeat(n_experts) == (n_experts > len(PALETTE))
    if colours_repeat(n_experts):
        assert colour["legend"] is None
    else:
        assert colour["title"] == "strongest expert" and colour["legend"]["orient"] == "top"
