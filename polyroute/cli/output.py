"""How commands print: rows as an aligned text table, CSV or JSON on stdout (the model libraries'
loading bars are silenced by `polyroute.workflows.common.quiet_libraries`).

JSON is strict (NaN and infinities print as the strings "NaN", "Infinity", "-Infinity"), and a
table shows control characters as escapes (`\x1b`) instead of sending them to the terminal.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from collections.abc import Sequence
from typing import Any

# C0 and C1 control characters and DEL, but not tab (a table cell may hold one as text).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def emit_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> None:
    if fmt == "csv":
        out = csv.writer(sys.stdout)
        out.writerow(columns)
        out.writerows(rows)
    elif fmt == "json":
        records = [{column: _json_value(value) for column, value in zip(columns, row, strict=True)} for row in rows]
        print(json.dumps(records, default=str, ensure_ascii=False, allow_nan=False))
    else:
        print_table(columns, rows)


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns padded to their widest cell; None prints as an empty cell."""
    cells = [["" if value is None else shown(str(value)) for value in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    for line in [list(columns), ["-" * width for width in widths], *cells]:
        print("  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True)).rstrip())


def shown(text: str) -> str:
    """`text` with control characters as visible escapes: a terminal never receives them raw."""
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode(), text)


def _json_value(value: Any) -> Any:
    """Non-finite floats as strings (JSON has no NaN), inside lists and maps too."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    return value
