"""Benchmark readers on small fixture copies written in each benchmark's real formats, misaligned ones included."""

from __future__ import annotations

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from moe_core.corpora import load_corpus
from moe_core.errors import CorpusError, flag
from tests.conftest import write_jsonl

SENTENCES = {
    "eng_Latn": ["The cat sleeps on the mat.", "Rain fell all night long.", "She reads a book every week."],
    "deu_Latn": ["Die Katze schläft auf der Matte.", "Es regnete die ganze Nacht.", "Sie liest jede Woche ein Buch."],
    "rus_Cyrl": ["Кошка спит на коврике.", "Дождь шёл всю ночь.", "Она читает книгу каждую неделю."],
}


def _flores_record(code: str, index: int, text: str, glottocode: str = "") -> dict[str, object]:
    iso, script = code.split("_")
    return {
        "id": index, "iso_639_3": iso, "iso_15924": script, "glottocode": glottocode, "text": text,
        "url": "https://en.wikinews.org/wiki/x", "domain": "wikinews", "topic": "nature", "has_image": 0,
        "has_hyperlink": 0, "last_updated": "2.0",
    }  # fmt: skip


def _rows(corpus):
    return {(row.item_id, row.lang): row for row in corpus.rows}


def test_flores_plus_from_the_hub_layout_parquet_and_jsonl(tmp_path):
    # The Hub's layout: one file per language and split, Parquet in older releases, JSONL in newer ones.
    for split, offset in (("dev", 0), ("devtest", 100)):
        (tmp_path / split).mkdir()
        for code in ("eng_Latn", "rus_Cyrl"):
            records = [_flores_record(code, offset + i, f"{split}: {t}") for i, t in enumerate(SENTENCES[code], 1)]
            pq.write_table(pa.Table.from_pylist(records), tmp_path / split / f"{code}.parquet")
        # German in the newer JSONL layout, and misaligned: its second sentence is missing.
        german = [
            _flores_record("deu_Latn", offset + i, f"{split}: {t}") for i, t in enumerate(SENTENCES["deu_Latn"], 1)
        ]
        write_jsonl(tmp_path / split / "deu_Latn.jsonl", german[:1] + german[2:])
    corpus = load_corpus(f"flores_plus:{tmp_path}")
    assert corpus.langs == ["deu_Latn", "eng_Latn", "rus_Cyrl"] and corpus.items == ("1", "2", "3")
    rows = _rows(corpus)
    assert (
        rows["1", "deu_Latn"].text == "dev: Die Katze schläft auf der Matte." and rows["1", "deu_Latn"].split == "dev"
    )
    assert rows["3", "rus_Cyrl"].text == "dev: Она читает книгу каждую неделю."
    langs = ["eng_Latn", "deu_Latn", "rus_Cyrl"]
    assert corpus.missing(langs) == [("2", "deu_Latn")]
    assert corpus.unaligned(langs) == ["2"]
    assert [row.item_id for row in corpus.select(langs, aligned=True)] == ["1"] * 3 + ["3"] * 3
    devtest = load_corpus(f"flores_plus:{tmp_path}", ["eng_Latn"], "devtest")
    assert devtest.items == ("101", "102", "103") and devtest.langs == ["eng_Latn"]
    assert devtest.template == "{text}" and devtest.meta["split"] == "devtest"


def test_flores_plus_renamed_codes_and_varieties_map_back(tmp_path):
    records = [
        _flores_record("cmn_Hans", 1, "猫睡在垫子上。"),
        _flores_record("apc_Arab", 1, "القطة نايمة", glottocode="sout3123"),
        _flores_record("apc_Arab", 1, "البسة نايمة", glottocode="nort3139"),
        _flores_record("xyz_Latn", 1, "not a FLORES-200 language"),
    ]
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "dev.parquet")
    corpus = load_corpus(f"flores_plus:{tmp_path / 'dev.parquet'}")
    assert corpus.langs == ["ajp_Arab", "apc_Arab", "zho_Hans"]
    assert corpus.meta["skipped_langs"] == ["xyz_Latn"]


def test_flores200_release_files_and_save_to_disk_copies_agree(tmp_path):
    release = tmp_path / "flores200_dataset"
    for split in ("dev", "devtest"):
        (release / split).mkdir(parents=True)
        for code, texts in SENTENCES.items():
            (release / split / f"{code}.{split}").write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    from_release = load_corpus(f"flores_plus:{release}", ["eng_Latn", "rus_Cyrl"], "devtest")
    assert from_release.items == ("1", "2", "3") and from_release.langs == ["eng_Latn", "rus_Cyrl"]

    saved = tmp_path / "saved"
    records = [_flores_record(code, i, t) for code, texts in SENTENCES.items() for i, t in enumerate(texts, 1)]
    table = datasets.Dataset.from_list(records)
    datasets.DatasetDict({"dev": table, "devtest": table}).save_to_disk(str(saved))
    from_disk = load_corpus(f"flores_plus:{saved}", ["eng_Latn", "rus_Cyrl"], "devtest")
    assert [(r.item_id, r.lang, r.text) for r in from_disk.rows] == [
        (r.item_id, r.lang, r.text) for r in from_release.rows
    ]


def _belebele(code: str, n: int) -> dict[str, object]:
    return {
        "link": f"https://en.wikibooks.org/wiki/page{n // 2}", "question_number": n % 2 + 1,
        "flores_passage": f"{code} passage {n}", "question": f"{code} question {n}?",
        "mc_answer1": "one", "mc_answer2": "two", "mc_answer3": "three", "mc_answer4": "four",
        "correct_answer_num": str(n % 4 + 1), "dialect": code, "ds": "2023-05-03",
    }  # fmt: skip


def test_belebele_jsonl_release_and_a_saved_language(tmp_path):
    folder = tmp_path / "Belebele"
    folder.mkdir()
    for code in ("eng_Latn", "ben_Beng"):
        write_jsonl(folder / f"{code}.jsonl", [_belebele(code, n) for n in range(4) if (code, n) != ("ben_Beng", 3)])
    datasets.Dataset.from_list([_belebele("hin_Latn", n) for n in range(4)]).save_to_disk(str(tmp_path / "x"))
    corpus = load_corpus(f"belebele:{folder}")
    assert corpus.langs == ["ben_Beng", "eng_Latn"] and len(corpus.items) == 4
    first = _rows(corpus)[corpus.items[0], "ben_Beng"]
    assert first.text == (
        "ben_Beng passage 0\nQuestion: ben_Beng question 0?\nA. one\nB. two\nC. three\nD. four\nAnswer:"
    )
    assert first.fields is not None and first.fields["answer"] == "1" and first.split == "test"
    assert corpus.unaligned(["eng_Latn", "ben_Beng"]) == [corpus.items[3]]
    # hin_Latn (a romanised Belebele variant) is not a FLORES-200 language: named, not guessed.
    whole = load_corpus(f"belebele:{tmp_path}")
    assert whole.meta["skipped_langs"] == ["hin_Latn"]


def test_mgsm_original_tsvs_and_the_hub_columns(tmp_path):
    (tmp_path / "mgsm_en.tsv").write_text(
        'Janet has 3 "big" ducks. How many?\t3\nA farm sells 2,000 eggs. How many left?\t2,125\n', encoding="utf-8"
    )
    (tmp_path / "mgsm_de.tsv").write_text("Janet hat 3 Enten. Wie viele?\t3\n", encoding="utf-8")
    corpus = load_corpus(f"mgsm:{tmp_path}")
    rows = _rows(corpus)
    assert rows["1", "eng_Latn"].text == 'Question: Janet has 3 "big" ducks. How many?\nAnswer:'
    assert rows["2", "eng_Latn"].fields == {"question": "A farm sells 2,000 eggs. How many left?", "answer": "2125"}
    assert corpus.missing(["eng_Latn", "deu_Latn"]) == [("2", "deu_Latn")]

    hub = tmp_path / "hub"
    for code in ("en", "sw"):
        records = [{"question": f"{code} q", "answer": None, "answer_number": 18, "equation_solution": None}]
        datasets.Dataset.from_list(records).save_to_disk(str(hub / code))
    from_hub = load_corpus(f"mgsm:{hub}", ["swh_Latn"])
    assert [(r.lang, r.fields) for r in from_hub.rows] == [("swh_Latn", {"question": "sw q", "answer": "18"})]


def _squad(lang: str, ids: list[str]) -> dict[str, object]:
    return {
        "version": "1.1",
        "data": [{
            "title": "Super_Bowl_50",
            "paragraphs": [{
                "context": f"{lang} context",
                "qas": [{"id": qid, "question": f"{lang} question {qid}?",
                         "answers": [{"answer_start": 0, "text": f"{lang} answer"}]} for qid in ids],
            }],
        }],
    }  # fmt: skip


def test_xquad_squad_json_and_hub_parquet(tmp_path):
    (tmp_path / "xquad.en.json").write_text(json.dumps(_squad("en", ["q1", "q2"])), encoding="utf-8")
    (tmp_path / "xquad.el.json").write_text(json.dumps(_squad("el", ["q1"])), encoding="utf-8")
    corpus = load_corpus(f"xquad:{tmp_path}")
    rows = _rows(corpus)
    assert rows["q1", "ell_Grek"].text == "el context\nQuestion: el question q1?\nAnswer:"
    assert rows["q2", "eng_Latn"].fields["answers"] == ["en answer"]
    assert corpus.unaligned(["eng_Latn", "ell_Grek"]) == ["q2"]

    hub = tmp_path / "hub" / "xquad.de"
    hub.mkdir(parents=True)
    records = [
        {"id": "q1", "context": "de context", "question": "de q?", "answers": {"text": ["a"], "answer_start": [0]}}
    ]
    pq.write_table(pa.Table.from_pylist(records), hub / "validation-00000-of-00001.parquet")
    assert _rows(load_corpus(f"xquad:{tmp_path / 'hub'}"))["q1", "deu_Latn"].fields["answers"] == ["a"]


def test_polymath_levels_are_splits(tmp_path):
    for code in ("en", "bn"):
        for level in ("low", "top"):
            (tmp_path / code).mkdir(exist_ok=True)
            records = [
                {"id": f"{level}-{i}", "question": f"{code} {level} {i}", "answer": "$\\frac{5}{4}$"} for i in range(2)
            ]
            pq.write_table(pa.Table.from_pylist(records), tmp_path / code / f"{level}.parquet")
    low = load_corpus(f"polymath:{tmp_path}")
    assert low.items == ("low-0", "low-1") and low.langs == ["ben_Beng", "eng_Latn"]
    top = load_corpus(f"polymath:{tmp_path}", ["ben_Beng"], "top")
    assert [(r.item_id, r.text, r.fields["answer"]) for r in top.rows] == [
        ("top-0", "bn top 0", "$\\frac{5}{4}$"),
        ("top-1", "bn top 1", "$\\frac{5}{4}$"),
    ]


def test_the_errors_say_what_to_do(tmp_path):
    with pytest.raises(CorpusError, match="has no split 'test': use one of dev, devtest"):
        load_corpus(f"flores_plus:{tmp_path}", split="test")
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(f"belebele:{tmp_path / 'nowhere'}")
    (tmp_path / "questions.jsonl").write_text(json.dumps({"question": "q", "answer_number": 1}) + "\n")
    with pytest.raises(CorpusError, match="cannot tell its language; name the file or folder after it"):
        load_corpus(f"mgsm:{tmp_path / 'questions.jsonl'}")
    (tmp_path / "mgsm_en.tsv").write_text("q\t1\n")
    with pytest.raises(CorpusError, match=r"no MGSM text in deu_Latn \(found: eng_Latn\)"):
        load_corpus(f"mgsm:{tmp_path / 'mgsm_en.tsv'}", ["deu_Latn", "eng_Latn"])
    (tmp_path / "belebele").mkdir()
    write_jsonl(tmp_path / "belebele" / "eng_Latn.jsonl", [{"question": "q", "dialect": "eng_Latn"}])
    with pytest.raises(CorpusError, match=r"eng_Latn row 1 has no column 'flores_passage' .* a copy of Belebele"):
        load_corpus(f"belebele:{tmp_path / 'belebele'}")
    with pytest.raises(CorpusError, match=r"^reading FLORES\+ from the Hub needs langs \(it has a config"):
        load_corpus("flores_plus")
    with pytest.raises(CorpusError, match="MGSM has no kor_Hang"):
        load_corpus("mgsm", ["kor_Hang"])
    with pytest.raises(CorpusError, match=r"^split applies to the built-in corpus and benchmarks"):
        load_corpus(str(tmp_path / "questions.jsonl"), split="dev")


def test_without_a_network_the_hub_error_points_to_a_local_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(CorpusError) as error:
        load_corpus("belebele", ["ben_Beng"])
    message = str(error.value)
    assert "cannot load facebook/belebele (ben_Beng, test) from the Hugging Face Hub" in message
    assert ".save_to_disk(DIR)" in message and "pass corpus belebele:DIR" in message
    assert "pass --corpus belebele:DIR" in error.value.named(flag)  # what the CLI says
