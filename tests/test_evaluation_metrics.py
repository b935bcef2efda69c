"""The evaluation metrics against known values: sacrebleu's own test cases and the official
chrF++.py scores for chrF++, hand-made cases for EM/F1, numbers, options and language checks."""

from __future__ import annotations

import bz2
import os
import pickle
from pathlib import Path

import pytest

from moe_core.errors import LanguageError
from moe_core.evaluation.answers import (
    best_choice,
    choice_accuracy,
    final_number,
    numbers_match,
    parse_choice,
    parse_number,
    western_digits,
)
from moe_core.evaluation.language_id import LanguageCheck, check_language, dominant_script
from moe_core.evaluation.metrics import (
    answer_tokens,
    chrf_corpus,
    chrf_sentence,
    exact_match,
    normalise_answer,
    token_f1,
)

# --- chrF / chrF++ -------------------------------------------------------------------------------

# sacrebleu 2.6.0, test/test_chrf.py `test_cases`: corpus chrF, char_order 6, word_order 0, beta 3,
# epsilon smoothing (github.com/mjpost/sacrebleu, tag v2.6.0).
SACREBLEU_CHRF_CASES = [
    (["abcdefg"], ["hijklmnop"], 0.0),
    (["a"], ["b"], 0.0),
    ([""], ["b"], 0.0),
    ([""], ["ref"], 0.0),
    ([""], ["reference"], 0.0),
    (["aa"], ["ab"], 8.3333),
    (["a", "b"], ["a", "c"], 8.3333),
    (["a"], ["a"], 16.6667),
    (["a b c"], ["a b c"], 50.0),
    (["a b c"], ["abc"], 50.0),
    (
        [
            " risk assessment must be made of those who are qualified and expertise in the sector"
            " - these are the scientists ."
        ],
        [
            "risk assessment has to be undertaken by those who are qualified and expert in that area"
            " - that is the scientists ."
        ],
        63.361730,
    ),
    (
        [" Die    Beziehung zwischen  Obama und Netanjahu ist nicht gerade  freundlich. "],
        ["Das Verhältnis zwischen Obama und Netanyahu ist nicht gerade freundschaftlich."],
        64.1302698,
    ),
    (["Niemand hat die Absicht, eine Mauer zu errichten"], ["Niemand hat die Absicht, eine Mauer zu errichten"], 100.0),
]

# sacrebleu 2.6.0, test/test_chrf.py `test_sentence_level_chrf`: sentence chrF2 with epsilon smoothing.
SACREBLEU_SENTENCE_CASES = [
    (
        "Co nás nejvíc trápí, protože lékaři si vybírají, kdo bude žít a kdo zemře.",
        ["Nejvíce smutní jsme z toho, že musíme rozhodovat o tom, kdo bude žít a kdo zemře."],
        39.14078509,
    ),
    (
        "Nebo prostě nemají vybavení, které by jim pomohlo, uvedli lékaři.",
        ["A někdy nemáme ani potřebný materiál, abychom jim pomohli, popsali lékaři."],
        31.22557079,
    ),
    (
        "Lapali po dechu, jejich životy skončily dřív, než skutečně začaly.",
        ["Lapali po dechu a pak jejich život skončil - dřív, než skutečně mohl začít, připomněli."],
        57.15704367,
    ),
]


@pytest.mark.parametrize(("hypotheses", "references", "expected"), SACREBLEU_CHRF_CASES)
def test_corpus_chrf_matches_sacrebleus_own_cases(hypotheses, references, expected):
    score = chrf_corpus(
        hypotheses, [[ref] for ref in references], word_order=0, char_order=6, beta=3, eps_smoothing=True
    )
    assert score == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(("hypothesis", "references", "expected"), SACREBLEU_SENTENCE_CASES)
def test_sentence_chrf_matches_sacrebleus_own_cases(hypothesis, references, expected):
    assert chrf_sentence(hypothesis, references, word_order=0, eps_smoothing=True) == pytest.approx(expected, abs=1e-4)


def test_chrf_plus_plus_by_hand():
    # "a b" vs "a c" (spaces removed for characters): char 1-grams P = R = 1/2, char 2-grams 0,
    # word unigrams P = R = 1/2, word bigrams 0; orders 3-6 have no n-grams and drop out of the
    # effective order: mean P = mean R = 1/4, so F2 = 25. chrF (no word n-grams) gives 1/4 too...
    assert chrf_sentence("a b", ["a c"]) == pytest.approx(25.0)
    # ...but word n-grams make the difference here: "ab" vs "a b" share every character n-gram
    # (chrF 100) and no word: word unigrams P = R = 0, and the one-word hypothesis has no bigram,
    # so that order drops out: chrF++ = mean over 3 orders (1, 1, 0) = 2/3.
    assert chrf_sentence("ab", ["a b"], word_order=0) == pytest.approx(100.0)
    assert chrf_sentence("ab", ["a b"]) == pytest.approx(200 / 3)
    assert chrf_sentence("Niemand hat die Absicht.", ["Niemand hat die Absicht."]) == pytest.approx(100.0)
    assert chrf_sentence("", ["reference"]) == 0.0


def test_chrf_takes_the_best_reference_and_ragged_reference_lists():
    assert chrf_sentence("a b", ["x y", "a b"]) == pytest.approx(100.0)
    # Corpus statistics are summed, not sentence scores averaged: 3 of 4 effective orders match.
    corpus = chrf_corpus(["a b", "x"], [["a c"], ["y", "x"]])
    assert corpus == pytest.approx(chrf_corpus(["a b", "x"], [["a c"], ["x"]]))
    assert corpus != pytest.approx((chrf_sentence("a b", ["a c"]) + 100.0) / 2)


def test_chrf_rejects_what_has_no_score():
    with pytest.raises(ValueError, match="reference"):
        chrf_sentence("a", [])
    with pytest.raises(ValueError, match="empty corpus"):
        chrf_corpus([], [])
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        chrf_corpus(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="at least one reference"):
        chrf_corpus(["a"], [[]])


# test.sh in sacrebleu 2.6.0: chrF++ of WMT17 en-de systems by the official chrF++.py (Popović),
# reproduced by sacrebleu with --chrf-word-order 2 --chrf-eps-smoothing. The system outputs are in
# sacrebleu's test/wmt17_en_de_systems.pkl.bz2 (1.7 MB, not copied here): point
# POLYROUTE_SACREBLEU_WMT17 at it to run this check.
OFFICIAL_CHRF_PLUS_PLUS = {"newstest2017.C-3MA.4959.en-de": 49.1683, "newstest2017.FBK.4870.en-de": 52.2330}


@pytest.mark.skipif(not os.environ.get("POLYROUTE_SACREBLEU_WMT17"), reason="POLYROUTE_SACREBLEU_WMT17 not set")
@pytest.mark.parametrize(("system", "expected"), OFFICIAL_CHRF_PLUS_PLUS.items())
def test_corpus_chrf_plus_plus_matches_the_official_chrf_plus_plus_py(system, expected):
    with bz2.BZ2File(Path(os.environ["POLYROUTE_SACREBLEU_WMT17"])) as file:
        data = dict(pickle.load(file))
    (references,) = data["reference"]
    score = chrf_corpus(data[system], [[ref] for ref in references], eps_smoothing=True)
    assert score == pytest.approx(expected, abs=1e-4)


# --- SQuAD exact match and F1 --------------------------------------------------------------------


def test_normalisation_is_squads():
    assert normalise_answer("  The Eiffel-Tower, in PARIS! ") == "eiffeltower in paris"
    assert normalise_answer("an apple a day") == "apple day"
    assert normalise_answer("Theatre") == "theatre"  # articles only as whole words
    # The English rule runs on every language, as the official script does: German "die" stays,
    # an English "the" inside a German answer goes; non-ASCII punctuation stays.
    assert normalise_answer("Die Brücke the end") == "die brücke end"
    assert normalise_answer("«Paris»。") == "«paris»。"
    assert normalise_answer("") == ""


def test_exact_match_takes_the_best_gold():
    assert exact_match("the Eiffel Tower.", ["Tour Eiffel", "Eiffel tower"]) == 1.0
    assert exact_match("Eiffel", ["Eiffel tower"]) == 0.0
    assert exact_match("", ["a"]) == 1.0  # both normalise to nothing
    with pytest.raises(ValueError):
        exact_match("x", [])
    with pytest.raises(ValueError):
        exact_match("x", "x")  # a bare string is no list of answers


def test_token_f1_by_hand():
    # prediction {denver, broncos, won}, gold {broncos}: P = 1/3, R = 1, F1 = 0.5
    assert token_f1("Denver Broncos won", ["Broncos"]) == pytest.approx(0.5)
    # best over golds: the second gives P = R = 1
    assert token_f1("Denver Broncos", ["Broncos", "the Denver Broncos"]) == pytest.approx(1.0)
    # repeated tokens count once per occurrence: {a a b} vs {a c}: common 1, P = 1/3, R = 1/2, F1 = 0.4
    assert token_f1("x x y", ["x z"]) == pytest.approx(0.4)
    assert token_f1("cat", ["dog"]) == 0.0
    assert token_f1("", ["dog"]) == 0.0
    assert token_f1("the", ["a"]) == 1.0  # both empty after normalisation (SQuAD v2.0's rule)


def test_unspaced_scripts_are_scored_by_character():
    assert answer_tokens("北京大学 in 2020年") == ["北", "京", "大", "学", "in", "2020", "年"]
    assert answer_tokens("東京タワー") == ["東", "京", "タ", "ワ", "ー"]
    assert answer_tokens("กรุงเทพ") == list("กรุงเทพ")
    # 北京 vs 北京大学: common 2, P = 1, R = 1/2, F1 = 2/3; by whitespace tokens it would be 0
    assert token_f1("北京", ["北京大学"]) == pytest.approx(2 / 3)
    assert token_f1("北京", ["北京大学"], split_unspaced=False) == 0.0
    # Thai: กรุง (4 chars) vs กรุงเทพ (7): P = 1, R = 4/7, F1 = 8/11
    assert token_f1("กรุง", ["กรุงเทพ"]) == pytest.approx(8 / 11)
    # spaced scripts are untouched: Russian words stay words
    assert answer_tokens("Москва река") == ["москва", "река"]


# --- final numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She has 3 apples, buys 5, so 8 in total.", 8),
        ("The answer is 1,234.", 1234),
        ("It costs $1,234,567.50 in all", 1234567.5),
        ("The temperature is -12.5 degrees.", -12.5),
        ("From 3-5 people", 5),  # a hyphen is no minus sign
        ("7 - 2 = 5 and then -3", -3),
        ("so x=-4", -4),
        ("We get 0.75", 0.75),
        ("En tout 1\u202f234 pommes", 1234),  # French thousands with a narrow no-break space
        ("Всего 3 4", 4),  # a plain space separates numbers
        ("She ate 3/4 of it", 0.75),
        ("First 2, then \\boxed{18} and finally 20", 18),  # the first box wins over later numbers
        ("\\boxed{\\frac{3}{4}}", 0.75),
        ("\\boxed{-\\dfrac{1}{2}}", -0.5),
        ("\\boxed{x = 12}", 12),
        ("\\boxed{12 \\text{ dollars}}", 12),
        ("\\boxed{5 cm^2}", 5),
        ("\\boxed{1,000}", 1000),
        ("\\boxed{\\$42}", 42),
        ("الجواب هو ١٢٣", 123),  # Arabic-Indic digits
        ("الجواب ١٢٫٥", 12.5),  # and the Arabic decimal separator
        ("उत्तर ४२ है", 42),  # Devanagari
        ("উত্তর হল ১৮", 18),  # Bengali
        ("答案是１２", 12),  # full-width
        ("คำตอบคือ ๗", 7),  # Thai
    ],
)
def test_final_number(text, expected):
    assert final_number(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "no number here", "twelve", "\\boxed{}", "\\boxed{x}", "十二"])
def test_final_number_none(text):
    assert final_number(text) is None


def test_western_digits_and_parse_number():
    assert western_digits("٠١٢٣٤٥٦٧٨٩ ०१२ ০১২ ０１２") == "0123456789 012 012 012"
    assert western_digits("") == ""
    assert parse_number("2,125") == 2125
    assert parse_number("3/4") == 0.75
    assert parse_number("no") is None


def test_numbers_compare_by_value():
    assert numbers_match(12.0, "12")
    assert numbers_match(12, "12.0")
    assert numbers_match(final_number("so 1,000 in all"), "1000")
    assert numbers_match(final_number("\\boxed{\\frac{1}{3}}"), "1/3")
    assert numbers_match(12, "\\frac{24}{2}")  # PolyMath golds may be LaTeX
    assert numbers_match(0.75, 0.75)
    assert not numbers_match(12.5, "12")
    assert not numbers_match(None, "12")
    with pytest.raises(ValueError, match="holds no number"):
        numbers_match(1.0, "seven")


# --- Belebele ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is (B)", 2),
        ("B.", 2),
        (" C", 3),
        ("D) none of them", 4),
        ("(A) Paris", 1),
        ("Answer: 3", 3),
        ("The correct option is 4.", 4),
        ("Antwort: C", 3),
        ("答案：Ｄ", 4),
        ("Ответ: (1)", 1),
        ("Looking at the passage, I choose (C).", 3),
        ("B\nbecause the passage says so", 2),
    ],
)
def test_parse_choice(text, expected):
    assert parse_choice(text) == expected


@pytest.mark.parametrize(
    "text", ["", "Berlin", "A dog barks in the passage.", "The answer is a car", "Answer: 300 people", "E."]
)
def test_parse_choice_none(text):
    assert parse_choice(text) is None


def test_choices_from_log_likelihoods():
    assert best_choice([-3.0, -1.0, -1.0, -2.0]) == 2  # the first of a tie
    assert best_choice([float("nan"), -5.0, -9.0, -7.0]) == 2
    scores = [[-1.0, -2.0, -3.0, -4.0], [-4.0, -3.0, -2.0, -1.0], [-2.0, -1.0, -3.0, -4.0]]
    assert choice_accuracy(scores, [1, 4, 3]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        best_choice([])
    with pytest.raises(ValueError):
        choice_accuracy([], [])
    with pytest.raises(ValueError):
        choice_accuracy(scores, [1, 2])


# --- language consistency ------------------------------------------------------------------------

CLEAR = {
    "eng_Latn": "The weather is lovely today, so we are going for a walk in the park.",
    "deu_Latn": "Das Wetter ist heute schön, deshalb gehen wir im Park spazieren.",
    "rus_Cyrl": "Сегодня прекрасная погода, поэтому мы идём гулять в парк.",
    "jpn_Jpan": "今日は天気がいいので、公園に散歩に行きます。",
    "arb_Arab": "الطقس جميل اليوم، لذلك سنذهب للتنزه في الحديقة.",
    "ben_Beng": "আজ আবহাওয়া খুব সুন্দর, তাই আমরা পার্কে হাঁটতে যাচ্ছি।",
}


@pytest.mark.parametrize(("lang", "text"), CLEAR.items())
def test_clear_text_is_in_its_language(lang, text):
    assert check_language(text, lang) == LanguageCheck(matches=True, detected=lang, how="langid")


def test_a_wrong_language_is_caught_and_named():
    assert check_language(CLEAR["eng_Latn"], "deu_Latn") == LanguageCheck(
        matches=False, detected="eng_Latn", how="langid"
    )
    found = check_language(CLEAR["rus_Cyrl"], "ben_Beng")
    assert found.matches is False and found.detected == "rus_Cyrl"
    assert check_language(CLEAR["deu_Latn"], "de").matches  # any code normalise_lang reads


def test_languages_langid_lacks_fall_back_to_the_script():
    # Santali (Ol Chiki) and Moroccan Arabic are not langid languages.
    assert check_language("ᱥᱟᱱᱛᱟᱲᱤ ᱯᱟᱹᱨᱥᱤ", "sat_Olck") == LanguageCheck(matches=True, detected="Olck", how="script")
    assert check_language(CLEAR["eng_Latn"], "sat_Olck") == LanguageCheck(matches=False, detected="Latn", how="script")
    assert check_language(CLEAR["arb_Arab"], "ary_Arab").matches is True


def test_text_without_letters_has_no_verdict():
    assert check_language("", "eng_Latn") == LanguageCheck(matches=None, detected=None, how="langid")
    assert check_language("42 + 7 = 49 !", "sat_Olck") == LanguageCheck(matches=None, detected=None, how="script")
    with pytest.raises(LanguageError):
        check_language("text", "xx_Nope")


def test_dominant_script_counts_letters_only():
    assert dominant_script("今日は天気", "Jpan") == "Jpan"  # kanji and kana are one script for Japanese
    assert dominant_script("今日は天気") == "Hani"  # 3 Han letters against 1 kana
    assert dominant_script("Привет, 123 world") == "Cyrl"
    assert dominant_script("12.5 %") is None
