"""What a first-time user meets, with Streamlit's AppTest on the planted store (9 languages in 3
families): fixed colours, links that reopen a view, the sidebar's default run, plain words (no
command-line flag on any page), the glossary, readable sharing graphs and token grids."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from streamlit.testing.v1 import AppTest

from polyroute.ui.charts import sharing_graph, strongest_links
from polyroute.ui.colours import colour_of, fixed_scale
from polyroute.ui.frame import NAVIGATION, best_run, layers_text
from polyroute.ui.token_charts import PALETTE, grid_frame, path_grid
from polyroute.ui.words import page_words
from store import queries as q
from store.token_paths import TokenPath
from tests.apptest import APP, chart, open_page

FLAG = re.compile(r"--[A-Za-z]")


def colours_of(spec: dict[str, Any]) -> dict[str, str]:
    """value -> colour of a chart's grouping colour scale (the layer that encodes one)."""
    for layer in spec.get("layer", [spec]):
        scale = layer.get("encoding", {}).get("color", {}).get("scale")
        if scale and "domain" in scale and "range" in scale:
            return dict(zip(scale["domain"], scale["range"], strict=True))
    raise AssertionError("no colour scale with a domain")


def test_a_family_keeps_its_colour_across_charts_and_references(app_db):
    at = open_page("pages/divergence.py")
    top = colours_of(chart(at, "Routing divergence from").spec)
    entropy = colours_of(chart(at, "Routing entropy per layer").spec)
    assert top["Dravidian"] == entropy["Dravidian"] == colour_of("family", "Dravidian")
    assert top == entropy  # one legend for the page: the same families, in the same order

    at.selectbox(key="widget_ref").set_value("tam_Taml").run()  # a Dravidian language as the reference
    assert not at.exception
    after = colours_of(chart(at, "Routing divergence from tam_Taml").spec)
    assert after == top  # no colour moved and the legend did not shift
    at.radio(key="divergence_colour").set_value("script").run()
    scripts = colours_of(chart(at, "Routing entropy per layer").spec)
    assert scripts["Latn"] == colour_of("script", "Latn") and len(set(scripts.values())) == len(scripts)


def test_fixed_colours_do_not_depend_on_what_is_shown():
    alone = fixed_scale("family", ["Japonic"]).to_dict()
    many = fixed_scale("family", ["Indo-European", "Japonic", "Sino-Tibetan"]).to_dict()
    assert dict(zip(alone["domain"], alone["range"], strict=True))["Japonic"] == many["range"][1]
    # The families of the demo store: nine, no two alike.
    demo = ["Afro-Asiatic", "Austronesian", "Indo-European", "Japonic", "Koreanic", "Mongolic", "Sino-Tibetan"]
    assert len({colour_of("family", family) for family in [*demo, "Turkic", "Uralic"]}) == 9
    assert colour_of("resource_class", "5") != colour_of("resource_class", "0")


def test_a_link_reopens_the_same_view(app_db):
    at = open_page("pages/divergence.py")
    at.selectbox(key="widget_ref").set_value("fra_Latn").run()
    at.multiselect(key="divergence_langs_1").set_value(["tam_Taml", "deu_Latn"]).run()
    at.select_slider(key="divergence_band_1").set_value((2, 2)).run()
    at.radio(key="divergence_colour").set_value("script").run()
    link = dict(at.query_params)
    assert link["ref"] == ["fra_Latn"] or link["ref"] == "fra_Latn", link
    titles = sorted(c.title for c in _charts(at))
    assert any("in layer 2" in title for title in titles)  # one layer, said as one

    fresh = AppTest.from_file(APP, default_timeout=90)
    fresh.run()
    for name, value in link.items():
        fresh.query_params[name] = value
    fresh.switch_page("pages/divergence.py").run()
    assert not fresh.exception
    assert sorted(c.title for c in _charts(fresh)) == titles
    assert fresh.multiselect(key="divergence_langs_1").value == ["tam_Taml", "deu_Latn"]
    assert fresh.radio(key="divergence_colour").value == "script"
    assert fresh.selectbox(key="widget_ref").value == "fra_Latn"


def test_sharing_and_token_paths_keep_their_choices_in_the_link(app_db):
    at = open_page("pages/expert_sharing.py")
    at.slider(key="sharing_thr").set_value(0.5).run()
    at.select_slider(key="sharing_band_1").set_value((1, 6)).run()
    assert dict(at.query_params)["thr"] in ("0.5", ["0.5"]) and dict(at.query_params)["band"] in ("1,6", ["1,6"])
    at.switch_page("pages/token_paths.py").run()
    at.selectbox(key="token_paths_item").select_index(1).run()
    item = at.selectbox(key="token_paths_item").value
    link = dict(at.query_params)
    fresh = AppTest.from_file(APP, default_timeout=90)
    fresh.run()
    for name, value in link.items():
        fresh.query_params[name] = value
    fresh.switch_page("pages/token_paths.py").run()
    assert fresh.selectbox(key="token_paths_item").value == item


def _charts(at: AppTest):
    from tests.apptest import charts

    return charts(at)


def _texts(node: Any) -> list[str]:
    """Every text a page shows (labels, help, messages, markdown), charts and tables left out."""
    found = []
    proto = getattr(node, "proto", None)
    if proto is not None and type(proto).__name__ not in ("VegaLiteChart", "ArrowDataFrame", "Arrow"):
        found.append(str(proto))
    for child in getattr(node, "children", {}).values():
        found += _texts(child)
    return found


def test_no_page_shows_a_command_line_flag(app_db):
    at = open_page()
    for _, links in NAVIGATION:
        for link in links:
            at.switch_page(link.path).run()
            assert not at.exception, (link.path, at.exception)
            shown = [text for text in _texts(at._tree) if FLAG.search(text)]
            assert not shown, (link.path, [FLAG.findall(text) for text in shown], shown[:2])


def test_engine_messages_are_said_in_page_words():
    said = page_words("no exclusive expert at k 15, thr 0.4 ... lower --thr or widen --window")
    assert not FLAG.search(said) and "share threshold" in said and "layer window" in said
    said = page_words("task mgsm has no copy: pass a mgsm copy, --corpus mgsm:DIR; --save-logits; --made-up-flag")
    assert not FLAG.search(said) and "MGSM" in said and "“made up flag”" in said
    assert page_words("run `polyroute demo --db x`") == "run `polyroute demo --db x`"  # a command stays whole


def test_every_page_links_the_glossary_and_it_explains_the_terms(app_db):
    at = open_page("pages/glossary.py")
    text = " ".join(m.value for m in at.markdown)
    for term in ("ARI", "thr", "tau", "Alpha", "Specificity", "Overlap", "Jaccard", "Normalised entropy", "␣", "…"):
        assert term in text, term
    assert "Hang Korean" in text  # script codes
    at.text_input(key="glossary_find").set_value("jaccard").run()
    assert "Jaccard" in " ".join(m.value for m in at.markdown) and "Alpha" not in " ".join(m.value for m in at.markdown)
    for page in ("pages/divergence.py", "pages/expert_sharing.py", "pages/token_paths.py"):
        at.switch_page(page).run()
        assert any("Glossary" in str(link.proto) for link in at.get("page_link")), page
        assert any("What am I looking at?" in str(block.proto) for block in at._tree.get("popover")), page


def _run(run_id: int, langs: int, status: str = "complete", minute: int = 0) -> q.RunRow:
    return q.RunRow(
        run_id=run_id, kind="trace", model_id=f"m{run_id}", corpus_id="c", backend="hf",
        params={"langs": [f"l{i}" for i in range(langs)]}, status=status, n_planned=1, n_stored=1, n_tokens=1,
        created_at=datetime(2026, 1, 1, 0, minute),
    )  # fmt: skip


def test_a_new_session_opens_on_the_latest_complete_run_with_the_most_languages():
    runs = [_run(1, 34, minute=1), _run(2, 4, minute=2), _run(3, 40, status="failed", minute=3), _run(4, 34, minute=4)]
    assert best_run(runs).run_id == 4
    assert best_run(runs[:2]).run_id == 1  # a newer 4-language run does not win over the 34-language demo


def test_layer_ranges_are_said_in_words():
    assert layers_text((2, 2)) == "layer 2" and layers_text((2, 5)) == "layers 2-5"


def _edges(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    langs = [f"l{i:03d}_Latn" for i in range(n)]
    rows = [(a, b, int(rng.integers(1, 9))) for i, a in enumerate(langs) for b in langs[i + 1 :]]
    return pd.DataFrame(rows, columns=["lang_a", "lang_b", "shared_experts"])


def test_the_sharing_graph_stays_legible_from_5_to_100_languages():
    for n in (5, 34, 100):
        edges = _edges(n)
        langs = sorted(set(edges["lang_a"]) | set(edges["lang_b"]))
        shown = strongest_links(edges, 3)
        # Every language keeps its strongest links; about 3 per language, not n(n-1)/2.
        assert set(shown["lang_a"]) | set(shown["lang_b"]) == set(langs)
        assert len(shown) <= 3 * n
        nodes = pd.DataFrame(
            {"lang": langs, "name": [f"Language {i}" for i in range(n)], "family": "", "script": "Latn",
             "resource_class": "1", "community": [i % 4 + 1 for i in range(n)]}
        )  # fmt: skip
        spec = sharing_graph(nodes, shown, title="t").to_dict()
        width = spec["layer"][0]["encoding"]["strokeWidth"]
        assert width["legend"]["format"] == "d" and all(float(v).is_integer() for v in width["legend"]["values"])
        assert spec["layer"][1]["encoding"]["color"]["field"] == "community"
        # Names do not cover each other: the boxes of the names drawn do not overlap (in the layout's pixels).
        placed = next(d for d in spec["datasets"].values() if d and "label" in d[0])
        drawn = [row for row in placed if row["label"]]
        assert len(drawn) >= min(n, 20)
        xs = [row["x"] for row in placed]
        ys = [row["y"] for row in placed]
        sx, sy = 900 * 0.9 / (max(xs) - min(xs)), 620 * 0.85 / (max(ys) - min(ys))
        half = [3.3 * len(r["label"]) for r in drawn]
        boxes = [
            (r["label_x"] * sx - w, r["label_y"] * sy - 6, r["label_x"] * sx + w, r["label_y"] * sy + 6)
            for r, w in zip(drawn, half, strict=True)
        ]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (n, a, b)


def _path(n_tokens: int, n_layers: int = 4) -> TokenPath:
    rng = np.random.default_rng(1)
    return TokenPath(
        lang="arb_Arab", seq_id=1, text="", token_ids=np.arange(n_tokens),
        pieces=["ال" if i % 3 else "" for i in range(n_tokens)],
        special=np.zeros(n_tokens, dtype=bool),
        layers=np.arange(n_layers), experts=rng.integers(0, 8, (n_tokens, n_layers, 2)),
        weights=np.full((n_tokens, n_layers, 2), 0.5),
    )  # fmt: skip


def test_a_long_right_to_left_sentence_wraps_into_readable_blocks():
    path = _path(87)
    frame = grid_frame(path, 24)
    assert frame["column"].max() == 23 and frame["line"].nunique() == 4 * 4  # 4 blocks of 4 layers
    assert set(frame["token"]) == {"ال", "…"}
    spec = path_grid(path, 8, 24).to_dict()
    assert spec["title"]["subtitle"] == "87 tokens"
    assert spec["height"] == 20 * 4 * 5  # four blocks, each a line of text and four layers, 20 px a line


def test_expert_colours_are_twenty_distinct_colours():
    def rgb(colour: str) -> np.ndarray:
        return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)

    assert len(set(PALETTE)) == len(PALETTE) == 20
    closest = min(np.linalg.norm(rgb(a) - rgb(b)) for i, a in enumerate(PALETTE) for b in PALETTE[i + 1 :])
    assert closest > 70, closest  # tableau20's pairs of one hue were about 50 apart


def test_glossary_page_file_exists():
    assert (Path(APP).parent / "pages" / "glossary.py").is_file()
