"""A parallel corpus in memory: rows of aligned texts, with the checks every reader shares.

Rows with the same `item_id` mean the same thing in different languages. Validation happens once,
here, so every reader gives the same errors: empty text, repeated (item, language) pairs and
unknown language codes are refused with the row that caused them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from moe_core.errors import CorpusError, LanguageError
from moe_core.languages import normalise_lang


@dataclass(frozen=True)
class TextRow:
    item_id: str
    lang: str
    text: str


@dataclass(frozen=True, kw_only=True)
class ParallelCorpus:
    """Validated rows in corpus order; `items` lists item ids in order of first appearance."""

    name: str
    source: str
    format: str
    rows: tuple[TextRow, ...]
    items: tuple[str, ...] = field(init=False)
    content_hash: str = field(init=False)

    def __post_init__(self) -> None:
        if not self.rows:
            raise CorpusError(f"corpus {self.source} has no rows: add lines with item_id, lang and text")
        object.__setattr__(self, "items", tuple(dict.fromkeys(row.item_id for row in self.rows)))
        digest = hashlib.sha256()
        for row in sorted(self.rows, key=lambda r: (r.item_id, r.lang)):
            digest.update(f"{row.item_id}\x1f{row.lang}\x1f{row.text}\x1e".encode())
        object.__setattr__(self, "content_hash", digest.hexdigest())

    @property
    def corpus_id(self) -> str:
        """Name plus content hash: the same file content is the same corpus, wherever it lies."""
        return f"{self.name}-{self.content_hash[:8]}"

    @property
    def langs(self) -> list[str]:
        return sorted({row.lang for row in self.rows})

    def select(self, langs: Sequence[str], limit: int | None = None) -> list[TextRow]:
        """Rows of the first `limit` items that have any of `langs`, item by item, in `langs` order."""
        by_key = {(row.item_id, row.lang): row for row in self.rows}
        wanted = [item for item in self.items if any((item, lang) in by_key for lang in langs)]
        if not wanted:
            raise CorpusError(f"corpus {self.source} has no text in {', '.join(langs)}; it has {', '.join(self.langs)}")
        return [by_key[item, lang] for item in wanted[:limit] for lang in langs if (item, lang) in by_key]

    def missing(self, langs: Sequence[str], limit: int | None = None) -> list[tuple[str, str]]:
        """(item_id, lang) pairs absent among the selected items: the corpus is not aligned there."""
        present = {(row.item_id, row.lang) for row in self.select(langs, limit)}
        items = dict.fromkeys(item for item, _ in present)
        return [(item, lang) for item in items for lang in langs if (item, lang) not in present]


def build_rows(records: Sequence[tuple[object, object, object]], source: str) -> tuple[TextRow, ...]:
    """Validate raw (item_id, lang, text) records (numbered from 1 in errors) into rows."""
    rows: list[TextRow] = []
    seen: set[tuple[str, str]] = set()
    codes: dict[str, str] = {}
    for number, (item_id, lang, text) in enumerate(records, start=1):
        item, raw_lang = str(item_id).strip(), str(lang).strip()
        if not item:
            raise CorpusError(f"{source}, row {number}: item_id is empty; give every row the id of its item")
        if raw_lang not in codes:
            try:
                codes[raw_lang] = normalise_lang(raw_lang)
            except LanguageError as error:
                raise CorpusError(f"{source}, row {number}: {error}") from None
        code = codes[raw_lang]
        if not isinstance(text, str) or not text.strip():
            raise CorpusError(
                f"{source}, row {number} (item {item}, {code}): the text is empty; fill it or drop the row"
            )
        if (item, code) in seen:
            raise CorpusError(
                f"{source}, row {number}: item {item} appears twice in {code}; keep one text per language"
            )
        seen.add((item, code))
        rows.append(TextRow(item_id=item, lang=code, text=text.strip()))
    return tuple(rows)
