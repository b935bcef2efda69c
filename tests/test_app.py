"""The home page with Streamlit's AppTest: it lists a store's runs, and explains what to do without one."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from polyroute.cli import main
from tests.helpers import trace_argv

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def test_home_lists_the_runs_of_a_store(tmp_path, tiny_model, corpus_file, monkeypatch):
    db = tmp_path / "s.duckdb"
    assert main(trace_argv(db, tiny_model("qwen3_moe"), corpus_file, "eng_Latn,deu_Latn", "--limit", "2")) == 0
    monkeypatch.setenv("POLYROUTE_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Polyroute"
    table = at.dataframe[0].value
    assert table["status"].tolist() == ["complete"] and table["sequences"].tolist() == ["4 / 4"]
    models, languages, corpora = (frame.value for frame in at.dataframe[1:])
    assert models["model"].tolist() == ["qwen3_moe"] and models["runs"].tolist() == [1]
    assert languages.set_index("language")["sequences"].to_dict() == {"eng_Latn": 2, "deu_Latn": 2}
    assert corpora["items"].tolist() == [6] and corpora["languages"].tolist() == [3]
    assert [metric.value for metric in at.metric][:3] == ["1", "1", "2"]


def test_home_without_a_store_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYROUTE_DB", str(tmp_path / "missing.duckdb"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert "no store at" in at.info[0].value
    assert any("polyroute demo" in block.value for block in at.markdown)


def test_a_run_whose_process_died_shows_as_interrupted(tmp_path, tiny_model, corpus_file, monkeypatch):
    import duckdb

    db = tmp_path / "s.duckdb"
    assert main(trace_argv(db, tiny_model("qwen3_moe"), corpus_file, "eng_Latn", "--limit", "2")) == 0
    with duckdb.connect(str(db)) as con:  # as a writer killed mid-run leaves it: another process, gone
        con.execute(
            "UPDATE runs SET status = 'running', finished_at = NULL, "
            """params = json_merge_patch(params, '{"writer": {"pid": 1, "process": "gone"}}')"""
        )
    monkeypatch.setenv("POLYROUTE_DB", str(db))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.dataframe[0].value["status"].tolist() == ["interrupted"]


def test_runs_are_renamed_annotated_and_deleted_on_the_overview(tiny_store, tmp_path, monkeypatch):
    import shutil

    from tests.apptest import open_page

    db = tmp_path / "s.duckdb"
    shutil.copyfile(tiny_store, db)
    monkeypatch.setenv("POLYROUTE_DB", str(db))
    at = open_page()
    assert at.dataframe[0].value["run"].tolist() == [1, 2, 3]
    at.selectbox(key="manage_run").set_value(1).run()
    at.text_input(key="run_1_name").set_value("German baseline")
    at.text_area(key="run_1_note").set_value("two sentences per language")
    at.button(key="FormSubmitter:run_1_form-Save name and note").click().run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value.set_index("run")
    assert (table.loc[1, "name"], table.loc[1, "note"]) == ("German baseline", "two sentences per language")
    assert at.selectbox(key="manage_run").format_func(1) == "run 1 · German baseline"

    # The sidebar's run picker names the run too.
    at.switch_page("pages/divergence.py").run()
    picker = next(box for box in at.sidebar.selectbox if box.label == "Run")
    assert picker.format_func(1).startswith("run 1 · German baseline · 2 languages")

    # Deleting asks first; "Keep it" keeps the run, "Yes, delete it" deletes it.
    at.switch_page("app.py").run()
    at.selectbox(key="manage_run").set_value(2).run()
    at.button(key="run_delete").click().run()
    assert "Delete run 2 and everything it stored" in at.warning[0].value
    at.button(key="run_delete_no").click().run()
    assert at.dataframe[0].value["run"].tolist() == [1, 2, 3] and not at.warning
    at.button(key="run_delete").click().run()
    at.button(key="run_delete_yes").click().run()
    assert not at.exception, at.exception
    assert at.dataframe[0].value["run"].tolist() == [1, 3]


def _until_cancelled(at: AppTest, what: str) -> list[str]:
    """Rerun the page (as its poll would) until it says the job was cancelled; those messages."""
    deadline = time.monotonic() + 180
    while not (cancelled := [box.value for box in at.info if box.value.startswith(f"{what} was cancelled")]):
        assert time.monotonic() < deadline and not at.exception and not at.success, at.exception or at.success
        time.sleep(0.5)
        at.run()
    return cancelled


def test_a_collection_is_cancelled_from_the_collect_page(app_db):
    from moe_core.demo import DEMO_MODEL_DIR
    from polyroute.ui.data import shared_store
    from store import queries as q
    from tests.apptest import open_page

    at = open_page("pages/collect.py")
    at.text_input(key="collect_model").set_value(str(DEMO_MODEL_DIR)).run()
    at.multiselect(key="collect_langs_builtin_all").set_value(["eng_Latn", "rus_Cyrl"]).run()
    at.number_input(key="collect_limit").set_value(100).run()
    at.number_input(key="collect_batch").set_value(1).run()
    at.button[0].click().run()
    at.button(key="collect_cancel").click().run()  # beside the progress bar while the job runs
    cancelled = _until_cancelled(at, "A collection")
    assert "run 2 keeps what it stored" in cancelled[0] and "polyroute trace --resume 2" in cancelled[0]
    with shared_store(str(app_db)).reading() as store:  # the app's own instance holds the file
        run = q.get_run(store, 2)
    assert run is not None and run.status == "cancelled" and run.n_stored < run.n_planned == 200


def test_an_evaluation_is_cancelled_from_the_evaluate_page(app_db, tmp_path):
    from polyroute.ui.data import shared_store
    from store import queries as q
    from tests.apptest import open_page
    from tests.helpers import fill_in, mgsm_copy

    at = fill_in(open_page("pages/evaluate.py"), f"mgsm:{mgsm_copy(tmp_path / 'mgsm')}")
    at.button(key="evaluate_start").click().run()
    at.button(key="evaluate_cancel").click().run()
    (cancelled,) = _until_cancelled(at, "An evaluation")
    with shared_store(str(app_db)).reading() as store:
        run = max((r for r in q.list_runs(store) if r.kind == "evaluation"), key=lambda r: r.run_id)
        assert run.status == "cancelled" and f"run {run.run_id} keeps what it stored" in cancelled
        assert store.con.execute("SELECT count(*) FROM eval_results WHERE run_id = ?", [run.run_id]).fetchone() == (0,)
    assert "resume" not in cancelled  # only a collection resumes


WARMING = """
import sys, threading
from streamlit.testing.v1 import AppTest
assert "torch" not in sys.modules
at = AppTest.from_file(sys.argv[1], default_timeout=60).run()
assert not at.exception, at.exception
assert "torch" not in sys.modules, "the home page itself never waits for torch"
warming = [thread for thread in threading.enumerate() if thread.name == "polyroute-warm-imports"]
assert len(warming) == 1, warming
warming[0].join(timeout=120)
assert "moe_core.backends.hf" in sys.modules and "torch" in sys.modules
"""


def test_the_model_libraries_are_imported_in_the_background_after_the_first_page(tmp_path, monkeypatch):
    """A fresh server process: the home page draws without torch, and torch and transformers are
    imported in the background after it (so a later first visit to Steering need not wait for them)."""
    monkeypatch.setenv("POLYROUTE_DB", str(tmp_path / "missing.duckdb"))
    done = subprocess.run([sys.executable, "-c", WARMING, APP], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


WAITING = """
import sys, threading, time
from polyroute.ui.frame import WARM_AFTER_S, warm_model_libraries
assert "torch" not in sys.modules
gate = threading.Event()
first_page = threading.Thread(target=gate.wait, daemon=True)  # a first page whose script still runs
first_page.start()
warming = warm_model_libraries(first_page)
time.sleep(WARM_AFTER_S + 1)
assert "torch" not in sys.modules, "the import began while the first page still ran"
gate.set()
warming.join(timeout=120)
assert "moe_core.backends.hf" in sys.modules and "torch" in sys.modules
"""


def test_the_background_import_waits_for_the_first_page_to_end():
    """In a fresh process: no import while the first page's script runs, the import once it ends."""
    done = subprocess.run([sys.executable, "-c", WAITING], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_model_libraries_are_imported_by_one_thread_at_a_time(monkeypatch):
    """The background import, the jobs and the Steering page import them through
    `import_model_libraries`, so no two of its imports overlap (transformers' import cycles)."""
    import moe_core.backends as backends

    inside, most = [0], [0]
    guard = threading.Lock()

    def slow_import(name: str) -> None:
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.1)
        with guard:
            inside[0] -= 1

    monkeypatch.setattr(backends, "import_module", slow_import)  # this module's name only
    threads = [threading.Thread(target=backends.import_model_libraries) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert most[0] == 1
