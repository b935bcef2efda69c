"""What a generated answer says: the final number of a solution (MGSM, PolyMath) and the option a
multiple-choice answer picks (Belebele), plus the scores built on them. Pure functions on strings.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from fractions import Fraction

OPTION_LETTERS = "ABCD"

# Separators and signs NFKC leaves alone: Arabic decimal and thousands marks, the minus sign.
_SIGNS = str.maketrans({"\u066b": ".", "\u066c": ",", "\u2212": "-", "\u2013": "-"})
# French and Russian group thousands with a (narrow) no-break space, which NFKC turns into a plain
# space; it is marked "_" first, so "1 234" stays one number and "3 4" two.
_GROUP_SPACE = re.compile(r"(?<=\d)[\u00a0\u202f\u2009](?=\d{3}(?!\d))")
_NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d{1,3}(?:_\d{3})+|\d+)(?:\.\d+)?|\.\d+"
# A minus sign only where it cannot be a hyphen or a subtraction: touching the number, not after a
# letter, digit or dot ("-7" but not "3-5" or "3 - 2").
_VALUE = re.compile(rf"(?:(?<![\w.])(-))?({_NUMBER})(?:\s*/\s*(-)?({_NUMBER}))?")
_LATEX_FRACTION = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_LATEX_NOISE = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{[^{}]*\}|\\[,;:! ]|\\left|\\right|\\%|\$|\\\$")


def western_digits(text: str) -> str:
    """`text` with every decimal digit in ASCII and full-width forms folded (NFKC): Arabic-Indic
    ٣, Devanagari ३, Bengali ৩, Thai ๓ and full-width ３ all become 3; a no-break space between
    thousands groups becomes '_' (1 234 -> 1_234). '' stays ''."""
    text = unicodedata.normalize("NFKC", _GROUP_SPACE.sub("_", text)).translate(_SIGNS)
    return "".join(
        str(unicodedata.decimal(char)) if not char.isascii() and unicodedata.decimal(char, None) is not None else char
        for char in text
    )


def _to_fraction(sign: str | None, number: str) -> Fraction:
    value = Fraction(re.sub(r"[,_]", "", number))
    return -value if sign else value


def _values(text: str) -> list[Fraction]:
    """Every number or fraction a/b in `text` (already in ASCII digits), in order."""
    values = []
    for match in _VALUE.finditer(text):
        sign, number, denominator_sign, denominator = match.groups()
        value = _to_fraction(sign, number)
        if denominator is not None:
            below = _to_fraction(denominator_sign, denominator)
            if below == 0:
                continue  # "3/0" is no value; skip it rather than fail on a model's typo
            value /= below
        values.append(value)
    return values


def _boxed(text: str) -> str | None:
    """The content of the first \\boxed{...} (braces balanced), or None."""
    start = text.find("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for index in range(begin, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth < 0:
            return text[begin:index]
    return text[begin:]  # unclosed: everything after it


def parse_number(text: str) -> float | None:
    """The value of a short answer such as a gold answer or a box's content, or None if it holds
    no number: '1,234' -> 1234, '-3.5', '3/4' and '\\frac{3}{4}' -> 0.75, 'x = 12' -> 12, '١٢' -> 12.

    LaTeX units and spacing (\\text{...}, \\,, $) are dropped; after an '=' only its right side
    counts; then the first number is the answer ('5 cm^2' is 5).
    """
    text = _LATEX_NOISE.sub(" ", western_digits(text))
    text = _LATEX_FRACTION.sub(r"(\1)/(\2)", text).replace("(", "").replace(")", "")
    values = _values(text.rpartition("=")[2])
    return float(values[0]) if values else None


def final_number(text: str) -> float | None:
    """The answer of a worked solution: the value in the first \\boxed{...} if there is one (see
    `parse_number`), else the last number in the text; None if there is none (or `text` is empty).

    Digits of any script count; thousands separators (1,234 or 1 234 with a no-break space) and
    decimals are read; '1.234' is one point two three four, as in English. Number words
    ('twelve', 十二) are not read.
    """
    boxed = _boxed(text)
    if boxed is not None:
        return parse_number(boxed)
    text = _LATEX_FRACTION.sub(r"\1/\2", western_digits(text))
    values = _values(text)
    return float(values[-1]) if values else None


def numbers_match(predicted: float | None, gold: float | str, *, rel_tol: float = 1e-6) -> bool:
    """Whether a predicted number equals the gold one by value: 12 matches 12.0, '12', '12.0' and
    '\\frac{24}{2}'; 12000 matches '12,000'. False when nothing was predicted (None).

    A string gold answer is read with `parse_number`; one without a number raises ValueError.
    Relative tolerance `rel_tol` absorbs float rounding of fractions (1/3 vs 0.333333333).
    """
    expected = parse_number(gold) if isinstance(gold, str) else float(gold)
    if expected is None:
        raise ValueError(f"gold answer {gold!r} holds no number")
    return predicted is not None and math.isclose(predicted, expected, rel_tol=rel_tol, abs_tol=1e-9)


# The chosen option, most explicit first. A-D are capitals only: a lone "a" is an article.
_CHOICE_PATTERNS = (
    # "The answer is (B)", "answer: 3", "Answer - option C", "correct option is D"
    re.compile(r"(?i:answer|option|choice)\s*(?:is|:|=|-)?\s*(?i:option\s*|choice\s*)?[(\[]?([A-D1-4])\b"),
    # "Antwort: B", "答案：B", "Ответ: (3)": any word, a colon, the option
    re.compile(r"[:：]\s*[(\[]?([A-D1-4])(?![\w])"),
    # The whole reply or its first line starts with it: "B", "B.", "(B) Paris", "3)"
    re.compile(r"^\s*[(\[]?([A-D1-4])(?:[)\].:]|\s*$|\s*\n)"),
    # A bracketed option anywhere: "... so (C)."
    re.compile(r"[(\[]([A-D1-4])[)\]]"),
)


def parse_choice(text: str) -> int | None:
    """The option (1-4, Belebele's `correct_answer_num`) a generated answer picks, from a letter
    A-D or a number 1-4: 'The answer is (B)' -> 2, 'B.' -> 2, 'Answer: 3' -> 3. None when the text
    (or an empty one) names no option: 'Berlin', 'A dog barks' (a capital A starting a sentence).
    """
    text = unicodedata.normalize("NFKC", text)  # full-width Ｂ and ３
    for pattern in _CHOICE_PATTERNS:
        match = pattern.search(text)
        if match:
            found = match.group(1).upper()
            return OPTION_LETTERS.index(found) + 1 if found in OPTION_LETTERS else int(found)
    return None


def best_choice(scores: Sequence[float]) -> int:
    """The 1-based option with the highest score (log-likelihood); the first on a tie. NaN scores
    never win. Raises ValueError for no scores or only NaN scores."""
    ranked = [(score, -index) for index, score in enumerate(scores) if not math.isnan(score)]
    if not ranked:
        raise ValueError("no option has a score")
    return -max(ranked)[1] + 1


def choice_accuracy(scores: Sequence[Sequence[float]], answers: Sequence[int]) -> float:
    """The fraction of items (0-1) whose highest-scoring option is the correct one.

    scores: [items][options] log-likelihoods; answers: the correct 1-based option of each item.
    Raises ValueError for no items or a length mismatch.
    """
    if not scores or len(scores) != len(answers):
        raise ValueError(f"need one answer per scored item, got {len(scores)} items and {len(answers)} answers")
    return sum(best_choice(item) == answer for item, answer in zip(scores, answers, strict=True)) / len(scores)
