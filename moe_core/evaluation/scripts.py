"""The writing system of a character, as an ISO 15924 code (the script half of `ben_Beng`).

Read from the character's Unicode name, which starts with its script (`BENGALI LETTER A`), so no
table of code point ranges has to be kept up to date. Han ideographs are `Hani` and kana `Kana`:
`Hans`, `Hant` and `Jpan` are ways of writing with them, which the callers decide.
"""

from __future__ import annotations

import unicodedata

# The first word(s) of Unicode character names -> ISO 15924, for every script FLORES-200 uses.
_NAME_SCRIPTS = {
    "LATIN": "Latn",
    "FULLWIDTH LATIN": "Latn",
    "CYRILLIC": "Cyrl",
    "GREEK": "Grek",
    "ARMENIAN": "Armn",
    "GEORGIAN": "Geor",
    "HEBREW": "Hebr",
    "ARABIC": "Arab",
    "ETHIOPIC": "Ethi",
    "TIFINAGH": "Tfng",
    "DEVANAGARI": "Deva",
    "BENGALI": "Beng",
    "GURMUKHI": "Guru",
    "GUJARATI": "Gujr",
    "ORIYA": "Orya",
    "TAMIL": "Taml",
    "TELUGU": "Telu",
    "KANNADA": "Knda",
    "MALAYALAM": "Mlym",
    "SINHALA": "Sinh",
    "THAI": "Thai",
    "LAO": "Laoo",
    "TIBETAN": "Tibt",
    "MYANMAR": "Mymr",
    "KHMER": "Khmr",
    "OL CHIKI": "Olck",
    "HANGUL": "Hang",
    "HIRAGANA": "Kana",
    "KATAKANA": "Kana",
    "HALFWIDTH KATAKANA": "Kana",
    "CJK UNIFIED IDEOGRAPH": "Hani",
    "CJK COMPATIBILITY IDEOGRAPH": "Hani",
}
_PREFIXES = sorted(_NAME_SCRIPTS, key=len, reverse=True)  # FULLWIDTH LATIN before LATIN

# Scripts written without spaces between words: word tokens mean nothing there.
UNSPACED_SCRIPTS = frozenset({"Hani", "Kana", "Thai", "Laoo", "Khmr", "Mymr"})


def char_script(char: str) -> str | None:
    """The ISO 15924 code of one character's script; None for digits, punctuation, spaces, symbols
    and scripts FLORES-200 does not use."""
    name = unicodedata.name(char, "")
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return _NAME_SCRIPTS[prefix]
    return None


def letter_scripts(text: str) -> dict[str, int]:
    """How many letters of `text` each script has ({} for empty text or text without letters).

    Only letters count (`str.isalpha`), so digits, punctuation and combining vowel signs vote for no
    script; the result is ordered from the most letters to the fewest.
    """
    counts: dict[str, int] = {}
    for char in text:
        if char.isalpha():
            script = char_script(char)
            if script is not None:
                counts[script] = counts.get(script, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))
