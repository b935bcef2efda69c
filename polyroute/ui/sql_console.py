"""The SQL console's answers as a table and as downloads: a query's result becomes an Arrow table
for the page and the Parquet download, and CSV bytes for the other download.

A result can hold any DuckDB type. Arrow takes most as they are; a column that Arrow cannot hold
(a 128-bit integer, a map keyed by numbers) or that the browser's table cannot show (a UUID) is
turned into text rather than failing the page, and decimals become floats. Column names are made
unique, since a join can return two columns of one name.
"""

from __future__ import annotations

import io
from typing import Any, NamedTuple

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from store.sandbox import SqlResult


class Answer(NamedTuple):
    """A query's result, kept with the store and the text it answers (shown while both are current)."""

    store: str
    sql: str
    result: SqlResult


def unique_names(columns: list[str]) -> list[str]:
    """`columns` with repeats numbered: run_id, run_id_2."""
    taken: set[str] = set()
    names = []
    for column in columns:
        name, n = column, 1
        while name in taken:
            n += 1
            name = f"{column}_{n}"
        taken.add(name)
        names.append(name)
    return names


def to_table(result: SqlResult) -> pa.Table:
    names = unique_names(result.columns)
    return pa.table({name: _arrow_column([row[i] for row in result.rows]) for i, name in enumerate(names)})


def to_csv(result: SqlResult) -> bytes:
    return pd.DataFrame(result.rows, columns=unique_names(result.columns)).to_csv(index=False).encode("utf-8")


def to_parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _arrow_column(values: list[Any]) -> pa.Array:
    try:
        column = pa.array(values)
    except (pa.ArrowException, OverflowError):
        column = None
    if column is None or isinstance(column.type, pa.BaseExtensionType):
        return pa.array([None if value is None else str(value) for value in values], pa.string())
    return column.cast(_floats_for_decimals(column.type))


def _floats_for_decimals(kind: pa.DataType) -> pa.DataType:
    """`kind` with its decimals as floats: the browser's table shows a decimal in a list or struct unscaled."""
    if pa.types.is_decimal(kind):
        return pa.float64()
    if pa.types.is_list(kind):
        return pa.list_(_floats_for_decimals(kind.value_type))
    if pa.types.is_struct(kind):
        return pa.struct([field.with_type(_floats_for_decimals(field.type)) for field in kind])
    return kind
