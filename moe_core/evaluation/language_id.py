"""Language consistency: is an output written in the language it should be in?

langid.py (Lui and Baldwin 2012, 97 languages, its model shipped in the package) names the
language where it knows the target; for the other FLORES-200 languages the check falls back to the
script: the script most of the output's letters are in must be the target's.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from moe_core.evaluation.scripts import letter_scripts
from moe_core.languages import Language, find_lang, language, languages

# Scripts that are ways of writing with Han ideographs (and, for Japanese, kana).
_SCRIPT_LETTERS = {"Hans": {"Hani"}, "Hant": {"Hani"}, "Jpan": {"Hani", "Kana"}, "Hang": {"Hang", "Hani"}}


@dataclass(frozen=True, kw_only=True)
class LanguageCheck:
    """The verdict on one output.

    matches: True or False; None when the text has no letters to judge (empty, digits only).
    detected: with "langid", the FLORES-200 code langid names (the target's own code when it names
    the target's language); with "script", the ISO 15924 code of the dominant script.
    """

    matches: bool | None
    detected: str | None
    how: Literal["langid", "script"]


@cache
def _identifier() -> Any:
    from langid.langid import LanguageIdentifier, model  # loads the model: about a second

    return LanguageIdentifier.from_modelstring(model, norm_probs=False)


def langid_code(lang: Language) -> str | None:
    """The ISO 639-1 code langid would use for `lang`, or None if langid does not know the language.

    A variety without a code of its own takes its language's (zho_Hant -> zh, from zho_Hans).
    """
    code = lang.iso639_1 or next(
        (other.iso639_1 for other in languages().values() if other.iso639_3 == lang.iso639_3 and other.iso639_1),
        None,
    )
    return code if code in _identifier().nb_classes else None


def dominant_script(text: str, target_script: str | None = None) -> str | None:
    """The ISO 15924 code of the script most letters of `text` are in, None without letters.

    Han and kana letters count for `target_script` when it writes with them (Jpan, Hans, Hant,
    Hang), so Japanese mixing kanji and kana is one script.
    """
    counts: dict[str, int] = {}
    accepted = _SCRIPT_LETTERS.get(target_script or "", set())
    for script, count in letter_scripts(text).items():
        key = target_script if script in accepted and target_script else script
        counts[key] = counts.get(key, 0) + count
    return max(counts, key=lambda script: counts[script]) if counts else None


def check_language(text: str, target: str) -> LanguageCheck:
    """Whether `text` is in the language `target` (any code `normalise_lang` reads).

    By langid when it knows the target's language (the script must then agree too, so romanised
    Arabic is not Arabic in Arabic script); else by the dominant script of the letters, which
    cannot tell apart languages sharing a script. Empty or letterless text: matches None.
    Raises LanguageError for an unknown target.
    """
    lang = language(target)
    code = langid_code(lang)
    how: Literal["langid", "script"] = "langid" if code else "script"
    script = dominant_script(text, lang.script)
    if script is None:
        return LanguageCheck(matches=None, detected=None, how=how)
    if code is None:
        return LanguageCheck(matches=script == lang.script, detected=script, how=how)
    found = str(_identifier().classify(text)[0])
    same = found == code and script == lang.script
    detected = lang.lang if same else (find_lang(found) or found)
    return LanguageCheck(matches=same, detected=detected, how=how)
