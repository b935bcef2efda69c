"""How commands print: rows as an aligned text table, CSV or JSON on stdout, with the loading
bars and notices of the model libraries silenced so that ours are readable."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from typing import Any


def emit_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> None:
    if fmt == "csv":
        out = csv.writer(sys.stdout)
        out.writerow(columns)
        out.writerows(rows)
    elif fmt == "json":
        print(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], default=str, ensure_ascii=False))
    else:
        print_table(columns, rows)


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Columns padded to their widest cell; None prints as an empty cell."""
    cells = [["" if value is None else str(value) for value in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    for line in [list(columns), ["-" * width for width in widths], *cells]:
        print("  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True)).rstrip())


def quiet_libraries() -> None:
    """transformers' and the Hub's loading bars and notices would bury ours."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()
