"""A parallel corpus in memory: rows of aligned texts, with the checks every reader shares.

Rows with the same `item_id` mean the same thing in different languages. Validation happens once,
here, so every reader gives the same errors: empty text, repeated (item, language) pairs and
unknown language codes are refused with the row that caused them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from moe_core.errors import CorpusError, LanguageError
from moe_core.languages import normalise_lang


@dataclass(frozen=True)
class TextRow:
    """One item in one language. `text` is what the model reads (the corpus template filled in);
    `fields` keeps the source columns a task needs (options, answers), `split` the source split."""

    item_id: str
    lang: str
    text: str
    split: str | None = None
    fields: Mapping[str, Any] | None = None

    def key(self) -> str:
        """The row as one string, for the corpus hash; plain rows hash as they always did."""
        parts = [self.item_id, self.lang, self.text]
        if self.split is not None:
            parts.append(self.split)
        if self.fields is not None:
            parts.append(json.dumps(self.fields, sort_keys=True, ensure_ascii=False))
        return "\x1f".join(parts)


@dataclass(frozen=True, kw_only=True)
class ParallelCorpus:
    """Validated rows in corpus order; `items` lists item ids in order of first appearance.

    `template` is how each row's text was made from its source fields (recorded with every run);
    `meta` says where the rows came from (package versions, splits) for whoever reproduces them.
    """

    name: str
    source: str
    format: str
    rows: tuple[TextRow, ...]
    template: str = "{text}"
    meta: Mapping[str, Any] = field(default_factory=dict)
    items: tuple[str, ...] = field(init=False)
    content_hash: str = field(init=False)

    def __post_init__(self) -> None:
        if not self.rows:
            raise CorpusError(f"corpus {self.source} has no rows: add lines with item_id, lang and text")
        object.__setattr__(self, "items", tuple(dict.fromkeys(row.item_id for row in self.rows)))
        digest = hashlib.sha256()
        for row in sorted(self.rows, key=lambda r: (r.item_id, r.lang)):
            digest.update(f"{row.key()}\x1e".encode())
        object.__setattr__(self, "content_hash", digest.hexdigest())

    @property
    def corpus_id(self) -> str:
        """Name plus content hash: the same file content is the same corpus, wherever it lies."""
        return f"{self.name}-{self.content_hash[:8]}"

    @property
    def langs(self) -> list[str]:
        return sorted({row.lang for row in self.rows})

    def select(self, langs: Sequence[str], limit: int | None = None, *, aligned: bool = False) -> list[TextRow]:
        """Rows of the first `limit` items that have any of `langs` (all of them if `aligned`),
        item by item, in `langs` order."""
        have = self.langs
        absent = [lang for lang in langs if lang not in have]
        if absent:
            raise CorpusError(
                f"corpus {self.source} has no text in {', '.join(absent)}; choose {{langs}} among {', '.join(have)}"
            )
        by_key = {(row.item_id, row.lang): row for row in self.rows}
        has = all if aligned else any
        wanted = [item for item in self.items if has((item, lang) in by_key for lang in langs)]
        if not wanted:
            raise CorpusError(
                f"corpus {self.source} has no item in all of {', '.join(langs)}; drop {{require_aligned}} "
                "or choose fewer languages"
            )
        return [by_key[item, lang] for item in wanted[:limit] for lang in langs if (item, lang) in by_key]

    def missing(self, langs: Sequence[str], limit: int | None = None) -> list[tuple[str, str]]:
        """(item_id, lang) pairs absent among the selected items: the corpus is not aligned there."""
        rows = self.select(langs, limit)
        present = {(row.item_id, row.lang) for row in rows}
        items = dict.fromkeys(row.item_id for row in rows)
        return [(item, lang) for item in items for lang in langs if (item, lang) not in present]

    def unaligned(self, langs: Sequence[str]) -> list[str]:
        """Items present in some of `langs` but not all: what `aligned=True` leaves out."""
        have: dict[str, set[str]] = {}
        for row in self.rows:
            if row.lang in langs:
                have.setdefault(row.item_id, set()).add(row.lang)
        return [item for item, found in have.items() if len(found) < len(set(langs))]


def build_rows(records: Sequence[Sequence[Any]], source: str) -> tuple[TextRow, ...]:
    """Validate raw (item_id, lang, text[, split[, fields]]) records (numbered from 1 in errors) into rows."""
    rows: list[TextRow] = []
    seen: set[tuple[str, str]] = set()
    codes: dict[str, str] = {}
    for number, (item_id, lang, text, *extra) in enumerate(records, start=1):
        item, raw_lang = ("" if item_id is None else str(item_id)).strip(), str(lang or "").strip()
        if not item:
            raise CorpusError(f"{source}, row {number}: item_id is empty; give every row the id of its item")
        if raw_lang not in codes:
            try:
                codes[raw_lang] = normalise_lang(raw_lang)
            except LanguageError as error:
                raise CorpusError(f"{source}, row {number}: {error}") from None
        code = codes[raw_lang]
        if text is not None and not isinstance(text, str):
            raise CorpusError(
                f"{source}, row {number} (item {item}, {code}): the text is {text!r:.40}, not a string: "
                "write it as text (in JSON, between quotes)"
            )
        if not text or not text.strip():
            raise CorpusError(
                f"{source}, row {number} (item {item}, {code}): the text is empty; fill it or drop the row"
            )
        if (item, code) in seen:
            raise CorpusError(
                f"{source}, row {number}: item {item} appears twice in {code}; keep one text per language"
            )
        seen.add((item, code))
        rows.append(TextRow(item, code, text.strip(), *extra))
    return tuple(rows)
