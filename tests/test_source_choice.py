"""The routing-distribution choice (soft, weight, hard) of the Divergence and Expert sharing pages:
it changes what the charts show, the weight distribution's numbers equal a brute-force computation
from the stored route weights, it is kept in the link, and an id-only run offers only hard."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from moe_core.analysis.divergence import normalised_js
from tests.apptest import chart, open_page
from tests.helpers import make_id_only, sequence_distributions


def _pairs_of_items(db: Path, lang_a: str, lang_b: str) -> list[tuple[dict, dict]]:
    """(a's sequence, b's) of every item both have, from the rows of `db` (the file the app's store copies:
    the app holds its own copy open)."""
    sequences = sequence_distributions(db)
    by_item = {seq["item"]: seq for seq in sequences.values() if seq["lang"] == lang_b}
    return [(seq, by_item[seq["item"]]) for seq in sequences.values() if seq["lang"] == lang_a]


def _link(at) -> dict[str, str]:
    return {name: value[0] if isinstance(value, list) else value for name, value in dict(at.query_params).items()}


def test_the_divergence_page_draws_the_chosen_distribution(app_db, planted_store):
    at = open_page("pages/divergence.py")
    radio = at.radio(key="divergence_source")
    assert list(radio.options) == ["soft", "weight", "hard"] and radio.value == "soft"
    soft = chart(at, "Routing divergence from").rows()
    soft_entropy = chart(at, "Routing entropy per layer").rows()
    at.radio(key="divergence_source").set_value("weight").run()
    assert not at.exception and _link(at)["source"] == "weight"
    weight = chart(at, "Routing divergence from").rows()
    assert not np.allclose(weight["divergence"], soft["divergence"])
    assert not np.allclose(chart(at, "Routing entropy per layer").rows()["normalised"], soft_entropy["normalised"])
    # Per language and layer: the mean over aligned items of D(w_eng, w_lang) from the routes' weights.
    shown = {(row.lang, row.layer): row.divergence for row in weight.itertuples()}
    for lang in ("deu_Latn", "tam_Taml"):
        pairs = _pairs_of_items(planted_store, "eng_Latn", lang)
        for layer in range(8):
            expected = np.mean([normalised_js(p["weight"][layer], q["weight"][layer]) for p, q in pairs])
            assert shown[(lang, layer)] == pytest.approx(expected, abs=1e-5)
    at.radio(key="divergence_source").set_value("hard").run()
    assert not np.allclose(chart(at, "Routing divergence from").rows()["divergence"], weight["divergence"])
    # The choice travels with the page's link.
    at.switch_page("pages/expert_sharing.py").run()
    at.switch_page("pages/divergence.py").run()
    assert at.radio(key="divergence_source").value == "hard"


def test_the_expert_sharing_page_compares_languages_on_the_chosen_distribution(app_db, planted_store):
    at = open_page("pages/expert_sharing.py")
    radio = at.radio(key="sharing_source")
    assert list(radio.options) == ["soft", "weight", "hard"] and radio.value == "soft" and not radio.disabled
    title = "How alike languages route in layers 3-4"
    soft = chart(at, title).rows()
    at.radio(key="sharing_source").set_value("weight").run()
    assert not at.exception and _link(at)["source"] == "weight"
    weight = chart(at, title).rows()
    assert not np.allclose(weight["similarity"], soft["similarity"])
    # 1 - the mean of D(w_a, w_b) over the pair's aligned items and the band's layers.
    shown = {(row.lang_a, row.lang_b): row.similarity for row in weight.itertuples()}
    for lang_a, lang_b in itertools.combinations(("eng_Latn", "deu_Latn", "kaz_Cyrl"), 2):
        pairs = _pairs_of_items(planted_store, lang_a, lang_b)
        mean = np.mean([normalised_js(p["weight"][y], q["weight"][y]) for p, q in pairs for y in (3, 4)])
        assert shown[(lang_a, lang_b)] == pytest.approx(1 - mean, abs=1e-5)
    # Cosine similarity reads activation frequencies: the choice is kept but disabled, with the reason.
    at.radio(key="sharing_measure").set_value("cosine").run()
    assert at.radio(key="sharing_source").disabled
    assert any("whatever the distribution" in caption.value for caption in at.caption)


def test_an_id_only_run_offers_only_the_hard_distribution(app_db):
    make_id_only(app_db)
    for page, key in (("pages/divergence.py", "divergence_source"), ("pages/expert_sharing.py", "sharing_source")):
        at = open_page(page)
        radio = at.radio(key=key)
        assert list(radio.options) == ["hard"] and radio.value == "hard"
        assert any(
            "Not offered: soft and weight, because this run kept no router probabilities or routing weights"
            in caption.value
            for caption in at.caption
        )
    # A link that asks for a distribution the run cannot give falls back to one it can.
    at = open_page()
    at.query_params["source"] = "weight"
    at.switch_page("pages/divergence.py").run()
    assert not at.exception and at.radio(key="divergence_source").value == "hard"
