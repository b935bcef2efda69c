"""A whole run as a download on the SQL console and the Overview (`polyroute.ui.run_download`),
with Streamlit's AppTest on a copy of the tiny store: the zip the page prepares is the export
`polyroute export` writes, imports into another store equal to the original, and a run too large
for the browser is sized and sent to the command line."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

from polyroute.ui import run_download
from store import open_store
from store.exchange import MANIFEST, TABLES, import_run
from tests.apptest import open_page

SQL_PAGE = "pages/sql.py"
# A run's rows by table, without the run id (a plain import keeps the seq_ids).
ROWS = {
    table: f"SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = ? ORDER BY ALL"
    for table in ("sequences", "tokens", "routes", "router_probs", "router_logits", "eval_results", "generations")
}


@pytest.fixture
def store_copy(tiny_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the tiny store (trace run 1, evaluation run 2, adaptation run 3) that the app opens."""
    db = tmp_path / "s.duckdb"
    shutil.copyfile(tiny_store, db)
    monkeypatch.setenv("POLYROUTE_DB", str(db))
    return db


def prepare(at: AppTest, key: str, run_id: int) -> bytes:
    """Choose `run_id`, press "Prepare the download", and return the zip the download button offers."""
    at.selectbox(key=f"{key}_run").select(run_id).run()
    assert not at.exception and not zip_buttons(at)
    at.button(key=f"{key}_prepare").click().run()
    assert not at.exception, at.exception
    (button,) = zip_buttons(at)
    assert button.proto.label.startswith(f"Download run {run_id} (") and button.proto.label.endswith("MB, zip)")
    held = at.session_state[f"{key}_zip"]
    assert held.run_id == run_id
    return held.data


def zip_buttons(at: AppTest) -> list:
    return [button for button in at.get("download_button") if "zip" in button.proto.label]


def unzipped(data: bytes, into: Path) -> Path:
    with zipfile.ZipFile(io.BytesIO(data)) as zipped:
        zipped.extractall(into)
    (folder,) = into.iterdir()
    return folder


def rows(db: Path, run_id: int, query: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(query, [run_id]).fetchall()


def test_the_sql_console_downloads_a_run_that_imports_equal_to_the_original(store_copy, tiny_store, tmp_path):
    at = open_page(SQL_PAGE)
    assert not at.get("download_button")  # nothing prepared before it is asked for
    at.selectbox(key="sql_export_run").select(1).run()
    caption = " ".join(c.value for c in at.caption)
    assert "Run 1 holds 4 sequences and" in caption and "routing decisions" in caption
    folder = unzipped(prepare(at, "sql_export", 1), tmp_path / "unzipped")
    assert folder.name == "run-1"
    assert {path.name for path in folder.iterdir()} == {MANIFEST, *(f"{table}.parquet" for table in TABLES)}
    other = tmp_path / "other.duckdb"
    with open_store(other) as store:
        run_id = import_run(store, folder)  # verifies every checksum and row count first
    for table, query in ROWS.items():
        assert rows(other, run_id, query) == rows(tiny_store, 1, query), table  # the copy is the app's now
    assert rows(other, run_id, ROWS["routes"])  # the routes came along, not two empty tables


def test_the_overview_downloads_an_evaluation_run_with_its_scores(store_copy, tiny_store, tmp_path):
    at = open_page()
    folder = unzipped(prepare(at, "overview_export", 2), tmp_path / "unzipped")
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["run"]["kind"] == "evaluation" and manifest["run"]["run_id"] == 2
    scores = {file["table"]: file["rows"] for file in manifest["files"]}
    assert scores["eval_results"] == len(rows(tiny_store, 2, ROWS["eval_results"])) > 0
    at.selectbox(key="overview_export_run").select(1).run()  # another run: the prepared zip is not offered for it
    assert not zip_buttons(at)


def test_a_run_too_large_for_the_browser_is_sized_and_sent_to_the_command_line(store_copy, monkeypatch):
    monkeypatch.setattr(run_download, "MAX_DOWNLOAD_BYTES", 1000)
    at = open_page(SQL_PAGE)
    at.selectbox(key="sql_export_run").select(1).run()
    (info,) = [box.value for box in at.info if "polyroute export" in box.value]
    assert "Run 1 holds 4 sequences" in info and " MB as Parquet files: too much" in info
    assert f"`polyroute export --run 1 --out run-1 --db {store_copy}`" in info
    assert not [button for button in at.button if button.key == "sql_export_prepare"]
