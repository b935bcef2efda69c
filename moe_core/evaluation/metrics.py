"""Reference-based scores of one output or a whole set: chrF++ (FLORES+) and SQuAD exact match and
token F1 (XQuAD). Pure functions on strings; scores are on sacrebleu's 0-100 scale for chrF++ and
0-1 for exact match and F1.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

from sacrebleu.metrics import CHRF

from moe_core.evaluation.scripts import UNSPACED_SCRIPTS, char_script

CHAR_ORDER = 6
WORD_ORDER = 2  # word bigrams on top of chrF's character 6-grams: chrF++ (Popović 2017)
BETA = 2


def _chrf(word_order: int, char_order: int, beta: int, eps_smoothing: bool) -> CHRF:
    return CHRF(char_order=char_order, word_order=word_order, beta=beta, eps_smoothing=eps_smoothing)


def chrf_sentence(
    hypothesis: str,
    references: Sequence[str],
    *,
    word_order: int = WORD_ORDER,
    char_order: int = CHAR_ORDER,
    beta: int = BETA,
    eps_smoothing: bool = False,
) -> float:
    """chrF++ (0-100) of one hypothesis against its references, by sacrebleu's `CHRF(word_order=2)`.

    The defaults are sacrebleu's chrF++ signature (nc:6, nw:2, beta 2, effective-order smoothing);
    `eps_smoothing=True` gives the original chrF++.py's numbers. An empty hypothesis scores 0.
    Raises ValueError when `references` is empty.
    """
    if not references:
        raise ValueError("chrF++ needs at least one reference")
    metric = _chrf(word_order, char_order, beta, eps_smoothing)
    return float(metric.sentence_score(hypothesis, list(references)).score)


def chrf_corpus(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    word_order: int = WORD_ORDER,
    char_order: int = CHAR_ORDER,
    beta: int = BETA,
    eps_smoothing: bool = False,
) -> float:
    """Corpus-level chrF++ (0-100): n-gram statistics summed over all sentences, then one F-score.

    references: one list per hypothesis (its references), not sacrebleu's streams; the lists may
    differ in length. Not the mean of sentence scores. Raises ValueError on an empty corpus, a
    length mismatch or a hypothesis without references.
    """
    if not hypotheses:
        raise ValueError("chrF++ of an empty corpus is undefined")
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    if any(not refs for refs in references):
        raise ValueError("every hypothesis needs at least one reference")
    # sacrebleu takes streams (the i-th reference of every sentence); missing ones are None.
    n_streams = max(len(refs) for refs in references)
    streams: list[Sequence[str | None]] = [
        [refs[i] if i < len(refs) else None for refs in references] for i in range(n_streams)
    ]
    metric = _chrf(word_order, char_order, beta, eps_smoothing)
    return float(metric.corpus_score(list(hypotheses), streams).score)  # type: ignore[arg-type]


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalise_answer(text: str) -> str:
    """The official SQuAD (v1.1, as XQuAD is scored) normalisation: lowercase, drop ASCII
    punctuation, drop the English articles a/an/the, collapse whitespace. '' for empty text.

    The English article rule is applied to every language, because that is what the official
    script (and so every published XQuAD number) does; non-ASCII punctuation (。, ¿, «) is kept.
    """
    text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_tokens(text: str, *, split_unspaced: bool = True) -> list[str]:
    """The tokens of a normalised answer for token F1: whitespace-separated words, except that
    every character of a script written without spaces (Han, kana, Thai, Lao, Khmer, Myanmar) is a
    token of its own, as MLQA's evaluation does for Chinese ("mixed segmentation").

    Without that split a Chinese, Japanese or Thai answer is one token and F1 collapses to exact
    match. `split_unspaced=False` gives the official SQuAD tokens (whitespace only). [] for ''.
    """
    normalised = normalise_answer(text)
    if not split_unspaced:
        return normalised.split()
    tokens: list[str] = []
    for word in normalised.split():
        pending = ""
        for char in word:
            if char_script(char) in UNSPACED_SCRIPTS:
                tokens.extend([pending, char] if pending else [char])
                pending = ""
            else:
                pending += char
        if pending:
            tokens.append(pending)
    return tokens


def _check_golds(golds: Sequence[str]) -> None:
    if isinstance(golds, str) or not golds:
        raise ValueError("pass the gold answers as a non-empty list of strings")


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0.

    Raises ValueError for an empty gold list (or a bare string, which would be read as characters).
    """
    _check_golds(golds)
    predicted = normalise_answer(prediction)
    return float(any(predicted == normalise_answer(gold) for gold in golds))


def _f1(predicted: list[str], gold: list[str]) -> float:
    if not predicted or not gold:
        return float(predicted == gold)  # SQuAD v2.0's rule: two empty answers agree
    common = sum((Counter(predicted) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, golds: Sequence[str], *, split_unspaced: bool = True) -> float:
    """The best token F1 (0-1) of the prediction against any gold answer, on `answer_tokens`.

    Bag-of-tokens overlap: F1 = 2PR / (P + R). An answer that normalises to nothing ('the', '.')
    scores 1 only against a gold that does too. Raises ValueError for an empty gold list.
    """
    _check_golds(golds)
    predicted = answer_tokens(prediction, split_unspaced=split_unspaced)
    return max(_f1(predicted, answer_tokens(gold, split_unspaced=split_unspaced)) for gold in golds)
