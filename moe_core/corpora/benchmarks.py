"""The standard multilingual benchmarks as parallel corpora: FLORES+, Belebele, MGSM, XQuAD, PolyMath.

Each is one declarative `Benchmark`: where it lives on the Hub and how a language is named there,
its splits, how an item is keyed across languages, the source fields a task needs (options,
answers), and the prompt template that turns those fields into the text a model reads. The
template is recorded with every run. Local copies are read in the layouts described in `tables`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moe_core.corpora.base import ParallelCorpus, build_rows
from moe_core.corpora.tables import COMMON_PARSERS, FileParser, Record, find_units, from_hub, read_unit
from moe_core.errors import CorpusError, LanguageError
from moe_core.languages import Language, find_lang, language, normalise_lang

# FLORES+ renamed some FLORES-200 codes (its CHANGELOG, 2.0); the Hub's configs use the new names.
FLORES_PLUS_CODES = {
    "zho_Hans": "cmn_Hans",
    "zho_Hant": "cmn_Hant",
    "tgl_Latn": "fil_Latn",
    "tzm_Tfng": "zgh_Tfng",
    "est_Latn": "ekk_Latn",
    "grn_Latn": "gug_Latn",
    "kon_Latn": "ktu_Latn",
    "ajp_Arab": "apc_Arab_sout3123",
    "apc_Arab": "apc_Arab_nort3139",
    "aka_Latn": "twi_Latn_asan1239",
    "twi_Latn": "twi_Latn_akua1239",
}


@dataclass(frozen=True, kw_only=True)
class Benchmark:
    """How to read one benchmark as a parallel corpus."""

    name: str  # the CLI name: --corpus NAME:PATH
    title: str
    hub_id: str
    hub_langs: tuple[str, ...] | None  # FLORES-200 codes of its Hub configs; None: FLORES-style configs
    hub_config: Callable[[Language], str]
    splits: tuple[str, ...]
    default_split: str
    template: str  # str.format over `fields`
    fields: Callable[[Record], dict[str, Any]]
    item_key: Callable[[Record, int], str]  # (record, its row number within its table) -> item id
    record_lang: Callable[[Record], str | None] = lambda record: None  # a language the record itself names
    parsers: Mapping[str, FileParser] = field(default_factory=lambda: COMMON_PARSERS)

    def read(self, path: Path | None, langs: Sequence[str] | None = None, split: str | None = None) -> ParallelCorpus:
        """The corpus from a local copy at `path`, or from the Hub when `path` is None."""
        split = split or self.default_split
        if split not in self.splits:
            raise CorpusError(f"{self.title} has no split {split!r}: use one of {', '.join(self.splits)}")
        skipped: set[str] = set()
        if path is None:
            tables = self._from_hub(langs, split)
            source = f"hf://{self.hub_id} ({split})"
        else:
            tables, skipped = self._from_local(path.expanduser(), langs, split)
            source = f"{path} ({split})"
        records = []
        # The fullest table first: its order becomes the corpus's item order, whatever another language lacks.
        for lang, table in sorted(tables, key=lambda entry: (-len(entry[1]), entry[0])):
            for index, record in enumerate(table):
                try:
                    fields = self.fields(record)
                    item_id = self.item_key(record, index)
                except KeyError as error:
                    raise CorpusError(
                        f"{source}: {lang} row {index + 1} has no column {error.args[0]!r} "
                        f"(it has {', '.join(record)}); is this a copy of {self.title}?"
                    ) from None
                records.append((item_id, lang, self.template.format(**fields), split, fields))
        found = {lang for lang, _ in tables}
        absent = [lang for lang in langs or [] if lang not in found]
        if absent or not records:
            have = ", ".join(sorted(found)) or "none"
            wanted = ", ".join(absent) or "any language"
            raise CorpusError(f"{source} has no {self.title} text in {wanted} (found: {have})")
        return ParallelCorpus(
            name=f"{self.name}-{split}",
            source=source,
            format=self.name,
            rows=build_rows(records, source),
            template=self.template,
            meta={"benchmark": self.name, "split": split, "hub_id": self.hub_id}
            | ({"skipped_langs": sorted(skipped)} if skipped else {}),
        )

    def _from_hub(self, langs: Sequence[str] | None, split: str) -> list[tuple[str, list[Record]]]:
        if not langs:
            raise CorpusError(f"reading {self.title} from the Hub needs {{langs}} (it has a config per language)")
        unknown = [lang for lang in langs if self.hub_langs is not None and lang not in self.hub_langs]
        if unknown:
            raise CorpusError(f"{self.title} has no {', '.join(unknown)}; it has {', '.join(self.hub_langs or [])}")
        return [(lang, from_hub(self.hub_id, self.hub_config(language(lang)), split, self.name)) for lang in langs]

    def _from_local(
        self, root: Path, langs: Sequence[str] | None, split: str
    ) -> tuple[list[tuple[str, list[Record]]], set[str]]:
        """Records by language from every unit of the local copy that holds `split`; unknown languages are skipped."""
        tables: dict[str, list[Record]] = {}
        skipped: set[str] = set()
        for unit in find_units(root, self.splits, self.parsers):
            if unit.split not in (None, split) or (langs and unit.lang and unit.lang not in langs):
                continue
            records = [r for r in read_unit(unit, self.parsers) if r.pop("__split__", split) == split]
            for record in records:
                named = self.record_lang(record)
                try:
                    lang = normalise_lang(named) if named else unit.lang
                except LanguageError:
                    skipped.add(str(named))
                    continue
                if lang is None:
                    raise CorpusError(
                        f"{unit.path}: cannot tell its language; name the file or folder after it (eng_Latn.jsonl, de/)"
                    )
                if not langs or lang in langs:
                    tables.setdefault(lang, []).append(record)
        return sorted(tables.items()), skipped


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _number(value: object) -> str:
    """A numeric answer as text without thousands separators: '2,125' -> '2125', 18.0 -> '18'."""
    text = str(value).replace(",", "").strip()
    return text.removesuffix(".0") if text.endswith(".0") else text


def read_flores_lines(path: Path) -> list[Record]:
    """FLORES-200's release files (`dev/eng_Latn.dev`): one sentence per line, aligned by line number."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [{"id": number, "text": line} for number, line in enumerate(lines, start=1)]


def read_mgsm_tsv(path: Path) -> list[Record]:
    """The original MGSM files (`mgsm_de.tsv`): no header, question TAB answer; quotes are literal text."""
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        question, sep, answer = line.rpartition("\t")
        if not sep:
            raise CorpusError(f"{path}, line {number}: expected question<TAB>answer")
        records.append({"question": question, "answer_number": answer})
    return records


def read_squad_json(path: Path) -> list[Record]:
    """SQuAD-format JSON (XQuAD's `xquad.de.json`): one record per question, with its context."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise CorpusError(f"{path}: expected SQuAD JSON with a top-level 'data' list")
    return [
        {
            "id": qa["id"],
            "context": paragraph["context"],
            "question": qa["question"],
            "answers": {
                "text": [answer["text"] for answer in qa["answers"]],
                "answer_start": [answer["answer_start"] for answer in qa["answers"]],
            },
        }
        for article in data["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]


def _flores_plus_lang(record: Record) -> str | None:
    """FLORES+ rows name their language in columns; a glottocode tells apart varieties that share a code."""
    if not record.get("iso_639_3"):
        return None
    code = f"{record['iso_639_3']}_{record['iso_15924']}"
    # apc_Arab_sout3123 is FLORES-200's ajp_Arab; other glottocodes add nothing to the code.
    return find_lang(f"{code}_{record.get('glottocode')}") or code


def _iso639_1(lang: Language) -> str:
    if lang.iso639_1 is None:
        raise CorpusError(f"{lang.lang} has no two-letter code, which this benchmark names its configs by")
    return lang.iso639_1


def _codes(*two_letter: str) -> tuple[str, ...]:
    return tuple(normalise_lang(code) for code in two_letter)


FLORES_PLUS = Benchmark(
    name="flores_plus",
    title="FLORES+",
    hub_id="openlanguagedata/flores_plus",
    hub_langs=None,
    hub_config=lambda lang: FLORES_PLUS_CODES.get(lang.lang, lang.lang),
    splits=("dev", "devtest"),
    default_split="dev",
    template="{text}",
    fields=lambda r: {"text": r["text"]},
    item_key=lambda r, index: str(r.get("id", index + 1)),
    record_lang=lambda r: (
        "_".join(str(r[k]) for k in ("iso_639_3", "iso_15924", "glottocode") if r.get(k))
        if r.get("iso_639_3")
        else None
    ),
    parsers={**COMMON_PARSERS, ".dev": read_flores_lines, ".devtest": read_flores_lines},
)

BELEBELE = Benchmark(
    name="belebele",
    title="Belebele",
    hub_id="facebook/belebele",
    hub_langs=None,
    hub_config=lambda lang: lang.lang,
    splits=("test",),
    default_split="test",
    template=(
        "{passage}\nQuestion: {question}\nA. {mc_answer1}\nB. {mc_answer2}\nC. {mc_answer3}\nD. {mc_answer4}\nAnswer:"
    ),
    fields=lambda r: {
        "passage": r["flores_passage"],
        "question": r["question"],
        **{f"mc_answer{n}": r[f"mc_answer{n}"] for n in range(1, 5)},
        "answer": str(r["correct_answer_num"]),
    },
    item_key=lambda r, index: f"{_short_hash(r['link'])}-q{r['question_number']}",
    record_lang=lambda r: r.get("dialect"),
)

MGSM = Benchmark(
    name="mgsm",
    title="MGSM",
    hub_id="juletxara/mgsm",
    hub_langs=_codes("bn", "de", "en", "es", "fr", "ja", "ru", "sw", "te", "th", "zh"),
    hub_config=_iso639_1,
    splits=("test", "train"),
    default_split="test",
    template="Question: {question}\nAnswer:",
    fields=lambda r: {"question": r["question"], "answer": _number(r["answer_number"])},
    item_key=lambda r, index: str(index + 1),  # the languages' files are parallel line by line
    parsers={**COMMON_PARSERS, ".tsv": read_mgsm_tsv},
)

XQUAD = Benchmark(
    name="xquad",
    title="XQuAD",
    hub_id="google/xquad",
    hub_langs=_codes("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh"),
    hub_config=lambda lang: f"xquad.{_iso639_1(lang)}",
    splits=("validation",),
    default_split="validation",
    template="{context}\nQuestion: {question}\nAnswer:",
    fields=lambda r: {"context": r["context"], "question": r["question"], "answers": list(r["answers"]["text"])},
    item_key=lambda r, index: str(r["id"]),
    parsers={**COMMON_PARSERS, ".json": read_squad_json},
)

POLYMATH = Benchmark(
    name="polymath",
    title="PolyMath",
    hub_id="Qwen/PolyMath",
    hub_langs=_codes(
        "ar", "bn", "de", "en", "es", "fr", "id", "it", "ja", "ko", "ms", "pt", "ru", "sw", "te", "th", "vi", "zh"
    ),
    hub_config=_iso639_1,
    splits=("low", "medium", "high", "top"),
    default_split="low",
    template="{question}",
    fields=lambda r: {"question": r["question"], "answer": str(r["answer"])},
    item_key=lambda r, index: str(r.get("id") or index + 1),  # the languages' tables are parallel row by row
)

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (FLORES_PLUS, BELEBELE, MGSM, XQUAD, POLYMATH)}
