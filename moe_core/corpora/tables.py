"""Records from a local copy of a dataset, in the formats people have, or from the Hugging Face Hub.

A local copy is a file or a folder. Inside a folder every *unit* is one table of records:
- a `datasets.save_to_disk` folder (`state.json`; a DatasetDict adds `dataset_dict.json` and one
  folder per split);
- a data file: `.parquet`, `.jsonl`, `.json`, `.csv`, `.tsv`, or a format the dataset declares
  (the MGSM TSVs, XQuAD's SQuAD JSON, FLORES-200's one-sentence-per-line files).
A unit's language comes from its records when they carry one, else from its path (`eng_Latn.parquet`,
`mgsm_de.tsv`, `xquad.de.json`, `de/top.parquet`); its split from a path part named like a split
(`dev/eng_Latn.jsonl`, `eng_Latn.devtest`, `en/top.parquet`).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from moe_core.errors import CorpusError
from moe_core.languages import find_lang

Record = dict[str, Any]
FileParser = Callable[[Path], list[Record]]
_TOKEN = re.compile(r"[._\-\s]+")
SAVE_TO_DISK_MARKERS = ("state.json", "dataset_dict.json")


@dataclass(frozen=True)
class Unit:
    """One table of a local copy, before it is read."""

    path: Path
    lang: str | None  # from the path, when it names one
    split: str | None  # from the path, when a part is named like a split


def find_units(root: Path, splits: Sequence[str], parsers: Mapping[str, FileParser]) -> list[Unit]:
    """Every readable table under `root` (or `root` itself), in path order."""
    if not root.exists():
        raise CorpusError(f"{root} does not exist: give the path of a local copy (a folder or a file)")
    if root.is_file() or _is_saved_dataset(root):
        return [_unit(root, root.parent, splits)]
    units = []
    for path in sorted(root.rglob("*")):
        if any(_is_saved_dataset(root / parent) for parent in path.relative_to(root).parents if parent != Path()):
            continue  # inside a saved dataset, which is read as a whole
        if _is_saved_dataset(path) or (path.is_file() and _suffix(path) in parsers):
            units.append(_unit(path, root, splits))
    return units


def read_unit(unit: Unit, parsers: Mapping[str, FileParser]) -> list[Record]:
    """The records of one unit; a DatasetDict gives the records of every split, each tagged `__split__`."""
    if _is_saved_dataset(unit.path):
        return _read_saved(unit.path)
    return read_records(unit.path, parsers[_suffix(unit.path)])


def read_records(path: Path, parser: FileParser) -> list[Record]:
    """The records of one data file; every way a file can be unreadable ends in one CorpusError."""
    try:
        return parser(path)
    except UnicodeDecodeError as error:
        raise CorpusError(
            f"{path}: not UTF-8 text (byte {error.object[error.start : error.start + 1]!r} cannot be decoded): "
            "save the file as UTF-8"
        ) from None
    except RecursionError:
        raise CorpusError(
            f"{path}: its JSON is nested too deeply to be records: a record is a flat object such as "
            '{"item_id": "1", "lang": "eng_Latn", "text": "..."}'
        ) from None
    except json.JSONDecodeError as error:
        raise CorpusError(f"{path}, line {error.lineno} column {error.colno}: not valid JSON ({error.msg})") from None
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CorpusError(
            f"{path}: cannot read it as {_suffix(path).lstrip('.') or 'a data file'} ({reason}); "
            "is it a complete, unmodified copy?"
        ) from None


def lang_from_path(relative: Path) -> str | None:
    """The FLORES-200 code a path names (`dev/eng_Latn.jsonl`, `mgsm_de.tsv`, `de/top.parquet`), if any."""
    for part in reversed(relative.parts):
        tokens = _TOKEN.split(part)
        # Pairs first (eng_Latn, zh_Hans, pt_BR), then short single tokens: longer words (test, mgsm) are no codes.
        pairs = [f"{a}_{b}" for a, b in itertools.pairwise(tokens)]
        for candidate in pairs + [token for token in tokens if 2 <= len(token) <= 3]:
            found = find_lang(candidate)
            if found is not None:
                return found
    return None


def from_hub(hub_id: str, config: str, split: str, local_name: str) -> list[Record]:
    """Records of one config and split from the Hugging Face Hub, through `datasets`."""
    try:
        import datasets

        table = datasets.load_dataset(hub_id, config, split=split)
    except Exception as error:  # every way the Hub can fail ends in the same advice
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CorpusError(
            f"cannot load {hub_id} ({config}, {split}) from the Hugging Face Hub: {reason}. Without a network, "
            f"copy it where one exists (`datasets.load_dataset({hub_id!r}, {config!r}, split={split!r})"
            f".save_to_disk(DIR)`, or download its files) and pass {{corpus}} {local_name}:DIR"
        ) from None
    return [dict(record) for record in table]


def read_parquet(path: Path) -> list[Record]:
    return pq.read_table(path).to_pylist()


def read_jsonl(path: Path) -> list[Record]:
    """One JSON object per line; blank lines are skipped."""
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise CorpusError(f"{path}, line {number}: not valid JSON ({error.msg}); one object per line") from None
            if not isinstance(record, dict):
                raise CorpusError(f"{path}, line {number}: expected a JSON object, found {type(record).__name__}")
            records.append(record)
    return records


def read_json(path: Path) -> list[Record]:
    """A JSON list of records, or an object holding one under `data` or `rows`."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = data.get("data", data.get("rows"))
    if not isinstance(data, list):
        raise CorpusError(f"{path}: expected a list of records (or {{'data': [...]}})")
    return data


def read_delimited(path: Path) -> list[Record]:
    """CSV or TSV with a header row, every column kept as text (item ids such as 007 keep their zeros)."""
    delimiter = "\t" if _suffix(path) == ".tsv" else ","
    with path.open(encoding="utf-8") as handle:
        header = handle.readline().strip().split(delimiter)
    try:
        table = pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(header, pa.string())),
        )
    except pa.ArrowInvalid as error:
        raise CorpusError(f"{path}: cannot read it as {'TSV' if delimiter == chr(9) else 'CSV'}: {error}") from None
    records = table.to_pylist()
    _refuse_open_quote(path, records)
    return records


def _refuse_open_quote(path: Path, records: Sequence[Record]) -> None:
    """A quote that never closes makes the rest of the file one text (a later check would blame a
    language for having no text): refuse it by name. Such a text is the last row's last value, runs
    to the end of the file, and holds a line break, while a file whose last text is properly quoted
    ends with its closing quote."""
    last = list(records[-1].values())[-1] if records else None
    if isinstance(last, str) and "\n" in last and not path.read_bytes().rstrip(b"\r\n").endswith(b'"'):
        raise CorpusError(
            f"{path}: the quote that opens the text {last.splitlines()[0][:40]!r}... never closes, so the rest of "
            'the file became that one text: close the quote, or write a quote inside a quoted text as ""'
        )


COMMON_PARSERS: dict[str, FileParser] = {
    ".parquet": read_parquet,
    ".jsonl": read_jsonl,
    ".json": read_json,
    ".csv": read_delimited,
    ".tsv": read_delimited,
}


def _read_saved(folder: Path) -> list[Record]:
    import datasets

    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.DatasetDict):
        return [{**dict(record), "__split__": split} for split, table in loaded.items() for record in table]
    return [dict(record) for record in loaded]


def _unit(path: Path, root: Path, splits: Sequence[str]) -> Unit:
    relative = path.relative_to(root)
    parts = [token for part in relative.parts for token in _TOKEN.split(part)]
    split = next((token for token in reversed(parts) if token in splits), None)
    named = relative.with_suffix("") if path.is_file() and _suffix(path) in COMMON_PARSERS else relative
    return Unit(path=path, lang=lang_from_path(named), split=split)


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_file() for marker in SAVE_TO_DISK_MARKERS)


def _suffix(path: Path) -> str:
    return path.suffix.lower()
