"""SQL console: read-only SQL on the store, starting from an example for every table, with the
answer as a table and as CSV or Parquet downloads, and a whole run as a zip of Parquet files. The
examples and the sandbox that runs the queries live in `store.sandbox`; the conversions in
`polyroute.ui.sql_console`; the run's download in `polyroute.ui.run_download`."""

from __future__ import annotations

import streamlit as st

from polyroute.ui.frame import choose_store, explained, page
from polyroute.ui.run_download import run_download
from polyroute.ui.sql_console import Answer, to_csv, to_parquet, to_table
from polyroute.ui.words import error_words, page_words
from store import SqlRefused, StoreError
from store import queries as q
from store.sandbox import EXAMPLES, TABLES, run_sql

MAX_ROWS = 1000
TIMEOUT_S = 10.0

page(
    "SQL console",
    "Ask the stored traces a question in SQL: start from an example, run it, and download the answer. "
    "Queries only read, so nothing in the store can change.",
)
store = choose_store()

with st.expander("What can I query?", icon=":material/help:"):
    st.markdown("\n".join(f"- `{table}`: {page_words(about)}" for table, about in TABLES.items()))
    st.caption(
        f"One read-only statement at a time; answers stop at {MAX_ROWS:,} rows and queries at {TIMEOUT_S:g} seconds. "
        "Files, settings and extensions are out of reach. Each example is a good place to start; a copied link "
        "keeps the query."
    )


def use_example() -> None:
    st.session_state["sql_text"] = EXAMPLES[st.session_state["sql_example"]]


if "sql_text" not in st.session_state:
    st.session_state["sql_text"] = next(iter(EXAMPLES.values()))
# Both in the URL (`?sql_example=...&sql_text=...`): a copied link reopens the same query.
st.selectbox(
    "Start from an example",
    list(EXAMPLES),
    key="sql_example",
    on_change=use_example,
    bind="query-params",
    format_func=page_words,
)
sql = st.text_area("Query", key="sql_text", height=260, bind="query-params")

if st.button("Run query", type="primary", icon=":material/play_arrow:"):
    st.session_state.pop("sql_answer", None)
    try:
        result = run_sql(store, sql, max_rows=MAX_ROWS, timeout_s=TIMEOUT_S)
        st.session_state["sql_answer"] = Answer(str(store.path), sql, result)
    except SqlRefused as refused:
        st.warning(f"The query did not run: {error_words(refused)}", icon=":material/block:")
    except StoreError as error:
        st.error(error_words(error), icon=":material/error:")

answer = st.session_state.get("sql_answer")
if isinstance(answer, Answer) and (answer.store, answer.sql) == (str(store.path), sql):
    table = to_table(answer.result)
    if answer.result.truncated:
        st.info(
            f"Showing the first {MAX_ROWS:,} rows; the query has more. Narrow it down (a filter, or counts "
            "and averages per group) to see everything; the downloads hold the rows shown.",
            icon=":material/info:",
        )
    else:
        st.caption(f"{table.num_rows:,} row{'' if table.num_rows == 1 else 's'}")
    st.dataframe(table, hide_index=True, width="stretch")
    with st.container(horizontal=True):
        st.download_button(
            "Download CSV",
            to_csv(answer.result),
            "polyroute-query.csv",
            "text/csv",
            on_click="ignore",
            icon=":material/download:",
        )
        st.download_button(
            "Download Parquet",
            to_parquet(table),
            "polyroute-query.parquet",
            "application/vnd.apache.parquet",
            on_click="ignore",
            icon=":material/download:",
        )

with st.expander("Download a whole run", icon=":material/folder_zip:"):
    st.caption(
        "Every row of one run (its model, corpus, sequences, tokens, routes, router probabilities, scores, answers "
        "and plan) as Parquet files, to query elsewhere or to add to another store."
    )
    with explained(), store.reading() as reader:
        runs = q.list_runs(reader)
    run_download(store, runs, "sql_export")
