"""Local corpus files: JSONL, CSV, TSV or Parquet with the columns `item_id`, `lang`, `text`."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from moe_core.corpora.base import ParallelCorpus, build_rows
from moe_core.errors import CorpusError

COLUMNS = ("item_id", "lang", "text")
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


def read_corpus(path: str | Path) -> ParallelCorpus:
    """Read and validate a parallel corpus file; the format follows the file's suffix."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise CorpusError(f"corpus file {file} does not exist: pass --corpus a .jsonl, .csv, .tsv or .parquet file")
    fmt = FORMATS.get(file.suffix.lower())
    if fmt is None:
        raise CorpusError(f"{file}: unknown corpus format {file.suffix!r}; use one of {', '.join(FORMATS)}")
    columns = _read_jsonl(file) if fmt == "jsonl" else _read_table(file, fmt)
    if not any(columns.values()):
        raise CorpusError(f"corpus {file} has no rows: add rows with item_id, lang and text")
    missing = [column for column in COLUMNS if column not in columns]
    if missing:
        raise CorpusError(
            f"{file}: missing column {', '.join(missing)} (found {', '.join(columns) or 'none'}); "
            "a corpus needs item_id, lang and text"
        )
    records = list(zip(*(columns[c] for c in COLUMNS), strict=True))
    return ParallelCorpus(name=file.stem, source=str(file), format=fmt, rows=build_rows(records, str(file)))


def _read_table(file: Path, fmt: str) -> dict[str, list[object]]:
    """The file's columns as lists."""
    try:
        if fmt == "parquet":
            return pq.read_table(file).to_pydict()
        # Every column as text: item ids such as 007 must keep their zeros.
        with file.open("rb") as handle:
            header = handle.readline().decode("utf-8", "replace").strip().split("," if fmt == "csv" else "\t")
        return pacsv.read_csv(
            file,
            parse_options=pacsv.ParseOptions(delimiter="," if fmt == "csv" else "\t", newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(header, pa.string())),
        ).to_pydict()
    except (pa.ArrowInvalid, OSError) as error:
        raise CorpusError(f"{file}: cannot read it as {fmt}: {error}") from None


def _read_jsonl(file: Path) -> dict[str, list[object]]:
    """One JSON object per line; blank lines are skipped."""
    records = []
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise CorpusError(f"{file}, line {number}: not valid JSON ({error.msg}); one object per line") from None
            if not isinstance(record, dict):
                raise CorpusError(f"{file}, line {number}: expected an object with item_id, lang and text")
            records.append(record)
    columns = list(dict.fromkeys(key for record in records for key in record))
    return {key: [record.get(key) for record in records] for key in columns}
