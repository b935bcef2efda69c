"""The app with a GPU server: the sidebar's 'Run models on' choice sends Collect, Steering and
Evaluate to a real `polyroute serve` (the demo model, on 127.0.0.1), and the results equal running here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from moe_core.demo import DEMO_MODEL_DIR
from polyroute.ui.data import shared_store
from polyroute.ui.model_place import HERE, SERVER
from store import queries as q
from tests.apptest import open_page, wait_for_job
from tests.helpers import (
    Served,
    cli_scores,
    fill_in,
    finish,
    free_port,
    generate,
    mgsm_copy,
    serving,
    steering_controls,
    stored_scores,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_server() -> Iterator[Served]:
    with serving(DEMO_MODEL_DIR) as served:
        yield served


def on_server(at: AppTest, url: str) -> AppTest:
    at.radio(key="widget_model_place").set_value(SERVER).run()
    at.text_input(key="widget_server_urls").set_value(url).run()
    assert not at.exception, at.exception
    return at


def test_collect_runs_on_the_server_and_stores_here(demo_server, app_db: Path):
    at = on_server(open_page("pages/collect.py"), demo_server.url)
    assert "collect_model" not in [box.key for box in at.text_input]  # the server has its model
    assert any(f"{demo_server.url} runs **polyroute-demo**" in m.value for m in at.markdown)
    at.multiselect(key="collect_langs_builtin_all").set_value(["eng_Latn", "rus_Cyrl"]).run()
    at.number_input(key="collect_limit").set_value(4).run()
    at.button[0].click().run()
    assert "complete: 8 sentences" in wait_for_job(at).success[0].value
    with shared_store(str(app_db)).reading() as store:  # the app's own instance holds the file
        run = max(q.list_runs(store), key=lambda run: run.run_id)
    assert run.backend == "remote" and run.params["servers"] == [demo_server.url] and run.n_stored == 8


def test_steering_on_the_server_writes_what_it_writes_here(demo_server, demo_app_db):
    there = steering_controls(on_server(open_page("pages/steering.py"), demo_server.url), strength=4.0, experts=[5])
    assert any("The GPU server runs" in m.value for m in there.markdown)
    here = open_page("pages/steering.py")
    here.radio(key="widget_model_place").set_value(HERE).run()
    here = steering_controls(here, strength=4.0, experts=[5])
    assert generate(there) == generate(here)


def test_evaluate_runs_on_the_server_and_stores_what_polyroute_eval_stores_here(demo_server, app_db, tmp_path):
    corpus = f"mgsm:{mgsm_copy(tmp_path / 'mgsm')}"
    at = on_server(open_page("pages/evaluate.py"), demo_server.url)
    assert "widget_evaluate_model" not in [box.key for box in at.text_input]  # the server has its model
    assert any(f"{demo_server.url} runs **polyroute-demo**" in m.value for m in at.markdown)
    assert "is complete: 2 languages, 2 items, 3 variants" in finish(fill_in(at, corpus))
    with shared_store(str(app_db)).reading() as store:
        run = max(q.list_runs(store), key=lambda run: run.run_id)
        assert run.kind == "evaluation" and run.backend == "remote" and run.status == "complete"
        scores = stored_scores(store, run.run_id)
    assert scores == cli_scores(tmp_path, corpus)  # `polyroute eval` with the model here


def test_an_unreachable_server_is_a_message(app_db):
    at = on_server(open_page("pages/steering.py"), f"http://127.0.0.1:{free_port()}")
    assert "cannot reach the Polyroute server" in at.warning[0].value
    assert not at.exception
    at = on_server(open_page("pages/collect.py"), "")
    assert "Enter the URL of a GPU server" in at.info[-1].value and at.button[0].disabled
