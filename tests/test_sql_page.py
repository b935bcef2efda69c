"""The SQL console page with Streamlit's AppTest on a store the tests build, and the conversions
behind its table and downloads (`polyroute.ui.sql_console`)."""

from __future__ import annotations

import io
import shutil
import uuid
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

from polyroute.ui.sql_console import to_csv, to_parquet, to_table, unique_names
from store.sandbox import EXAMPLES, SqlResult

ROOT = Path(__file__).resolve().parents[1]
PAGE = "pages/sql.py"
PER_LANGUAGE = "SELECT lang, count(*) AS n FROM sequences GROUP BY lang ORDER BY lang"


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, tiny_store: Path) -> Path:
    """A copy of the tiny store: the page's app opens it for writing, in this process."""
    db = tmp_path_factory.mktemp("sql_page") / "s.duckdb"
    shutil.copyfile(tiny_store, db)
    return db


@pytest.fixture
def console(traced: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    """The SQL page on the traced store, reached as a user does: the app first, then the page."""
    monkeypatch.setenv("POLYROUTE_DB", str(traced))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page(PAGE).run()
    assert not at.exception
    return at


def run_query(at: AppTest, sql: str) -> AppTest:
    at.text_area(key="sql_text").input(sql).run()
    return at.button[0].click().run()


def test_the_page_opens_on_the_first_example_and_lists_the_tables(console):
    first = next(iter(EXAMPLES))
    assert console.title[0].value == "SQL console"
    assert console.selectbox(key="sql_example").value == first
    assert console.text_area(key="sql_text").value == EXAMPLES[first]
    assert "router_logits" in console.expander[0].markdown[0].value
    assert not console.dataframe and not console.get("download_button")


def test_picking_an_example_puts_its_query_in_the_box(console):
    title = list(EXAMPLES)[3]
    console.selectbox(key="sql_example").select(title).run()
    assert not console.exception
    assert console.text_area(key="sql_text").value == EXAMPLES[title]


def test_running_a_query_shows_its_rows_and_the_downloads(console):
    run_query(console, PER_LANGUAGE)
    assert not console.exception and not console.warning
    assert console.dataframe[0].value.to_dict("list") == {"lang": ["deu_Latn", "eng_Latn"], "n": [2, 2]}
    assert "2 rows" in [caption.value for caption in console.caption]
    assert [button.proto.label for button in console.get("download_button")] == ["Download CSV", "Download Parquet"]
    console.run()  # any other rerun keeps the answer while the query is unchanged
    assert len(console.dataframe) == 1
    console.text_area(key="sql_text").input(PER_LANGUAGE + " DESC").run()
    assert not console.dataframe  # an edited query has not been answered yet


def test_running_an_example_shows_a_table(console):
    title = "Sequences and tokens per language, with family and script"
    console.selectbox(key="sql_example").select(title).run()
    console.button[0].click().run()
    assert not console.exception
    assert sorted(console.dataframe[0].value["lang"]) == ["deu_Latn", "eng_Latn"]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("DROP TABLE runs", "not DROP"),
        ("SELECT * FROM read_csv('/etc/passwd')", "reading files is not allowed"),
        ("SELECT count(*) FROM nowhere", "Table with name nowhere does not exist"),
    ],
)
def test_a_refused_or_failed_query_says_why_and_shows_no_table(console, sql, message):
    run_query(console, PER_LANGUAGE)
    run_query(console, sql)
    assert not console.exception
    assert "did not run" in console.warning[0].value and message in console.warning[0].value
    assert not console.dataframe and not console.get("download_button")


def test_a_long_answer_is_cut_at_the_cap_with_a_note(console):
    run_query(console, "SELECT * FROM range(1500)")
    assert len(console.dataframe[0].value) == 1000
    assert "first 1,000 rows" in console.info[0].value


def test_the_query_survives_a_visit_to_another_page(console):
    run_query(console, PER_LANGUAGE)
    console.switch_page("app.py").run()
    console.switch_page(PAGE).run()
    assert console.text_area(key="sql_text").value == PER_LANGUAGE


def test_without_a_store_the_page_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYROUTE_DB", str(tmp_path / "missing.duckdb"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page(PAGE).run()
    assert not at.exception
    assert "no store at" in at.info[0].value


def test_any_duckdb_type_becomes_a_table_a_csv_and_a_parquet_file():
    # A 128-bit integer, a map keyed by a number and a UUID are written as text, decimals (which the
    # browser's table shows unscaled inside a list) as floats; the rest keep their type.
    big, key = 2**100, uuid.UUID(int=7)
    result = SqlResult(
        columns=["n", "n", "big", "m", "u", "probs", "halves"],
        rows=[(1, 2, big, {1: 2}, key, [0.25, 0.75], [Decimal("0.5")]), (3, 4, None, None, None, None, None)],
        truncated=False,
    )
    table = to_table(result)
    assert table.column_names == ["n", "n_2", "big", "m", "u", "probs", "halves"]
    assert table.column("big").to_pylist() == [str(big), None] and table.column("m").to_pylist() == ["{1: 2}", None]
    assert table.column("u").to_pylist()[0] == str(key) and table.column("halves").to_pylist() == [[0.5], None]
    assert pq.read_table(io.BytesIO(to_parquet(table))).to_pylist()[0]["probs"] == [0.25, 0.75]
    assert to_csv(result).decode().splitlines()[0] == "n,n_2,big,m,u,probs,halves"
    assert unique_names(["a", "a", "a_2"]) == ["a", "a_2", "a_2_2"]
