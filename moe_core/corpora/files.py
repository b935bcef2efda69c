"""Local corpus files: JSONL, JSON, CSV, TSV or Parquet with the columns `item_id`, `lang`, `text`."""

from __future__ import annotations

from pathlib import Path

from moe_core.corpora.base import ParallelCorpus, build_rows
from moe_core.corpora.tables import COMMON_PARSERS, read_jsonl, read_records
from moe_core.errors import CorpusError

COLUMNS = ("item_id", "lang", "text")
PARSERS = {**COMMON_PARSERS, ".ndjson": read_jsonl}


def read_corpus(path: str | Path) -> ParallelCorpus:
    """Read and validate a parallel corpus file; the format follows the file's suffix."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise CorpusError(
            f"corpus {file} is a folder: pass a corpus file (.jsonl, .csv, .tsv, .parquet), or a benchmark's "
            f"local copy as NAME:{file}, e.g. flores_plus:{file} (`polyroute corpus list`)"
        )
    if not file.is_file():
        raise CorpusError(
            f"corpus {file} does not exist: pass {{corpus}} builtin, a benchmark such as flores_plus:DIR "
            "(`polyroute corpus list`), or a .jsonl, .csv, .tsv or .parquet file with item_id, lang and text"
        )
    parser = PARSERS.get(file.suffix.lower())
    if parser is None:
        raise CorpusError(f"{file}: unknown corpus format {file.suffix!r}; use one of {', '.join(PARSERS)}")
    records = read_records(file, parser)
    if not records:
        raise CorpusError(f"corpus {file} has no rows: add rows with item_id, lang and text")
    found = list(dict.fromkeys(key for record in records for key in record))
    missing = [column for column in COLUMNS if column not in found]
    if missing:
        raise CorpusError(
            f"{file}: missing column {', '.join(missing)} (found {', '.join(found) or 'none'}); "
            "a corpus needs item_id, lang and text"
        )
    rows = build_rows([tuple(record.get(column) for column in COLUMNS) for record in records], str(file))
    return ParallelCorpus(name=file.stem, source=str(file), format=file.suffix.lower().lstrip("."), rows=rows)
