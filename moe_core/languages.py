"""Languages: the FLORES-200 codes (`ben_Beng` = ISO 639-3 + ISO 15924 script) and their metadata.

Every language a user names goes through `normalise_lang`, which accepts the codes people
actually write (`bn`, `ben`, `ben_Beng`, `bn-BD`, `zh`, `zh-TW`, `zh_Hant`, `pt_BR`, `Bengali`)
and returns the FLORES-200 code, or fails, before any model work starts, with the closest codes.

The metadata (English name, family and branch, resource class 0-5 in the taxonomy of Joshi et al.
2020) lives in `data/languages.tsv`, one row per FLORES-200 code; its header says where it came from.
"""

from __future__ import annotations

import csv
import difflib
import io
from dataclasses import dataclass
from functools import cache
from importlib import resources

from moe_core.errors import LanguageError

# A bare ISO code with several FLORES-200 scripts and no two-letter code to say which is the main one.
DEFAULT_SCRIPT = {"ace": "Latn", "bjn": "Latn", "kas": "Arab", "knc": "Latn", "min": "Latn", "taq": "Latn"}
# Regions that decide the script: Chinese in Taiwan, Hong Kong and Macau is written in traditional characters.
REGION_SCRIPT = {("zho", "TW"): "Hant", ("zho", "HK"): "Hant", ("zho", "MO"): "Hant"}


@dataclass(frozen=True, kw_only=True)
class Language:
    """One row of the `languages` table."""

    lang: str  # FLORES-200 code
    name: str
    iso639_3: str
    iso639_1: str | None
    script: str  # ISO 15924
    family: str
    branch: str
    resource_class: int  # 0 (left behind) .. 5 (winners), Joshi et al. 2020
    aliases: tuple[str, ...]  # other codes that name it: ISO 639-2/B, macrolanguage codes, FLORES+ renames


@cache
def languages() -> dict[str, Language]:
    """Every FLORES-200 language by code, in code order."""
    text = resources.files("moe_core").joinpath("data", "languages.tsv").read_text(encoding="utf-8")
    lines = (line for line in io.StringIO(text) if not line.startswith("#"))
    found = {}
    for row in csv.DictReader(lines, delimiter="\t"):
        iso639_3, script = row["lang"].split("_")
        found[row["lang"]] = Language(
            lang=row["lang"],
            name=row["name"],
            iso639_3=iso639_3,
            iso639_1=row["iso639_1"] or None,
            script=script,
            family=row["family"],
            branch=row["branch"],
            resource_class=int(row["resource_class"]),
            aliases=tuple(row["aliases"].split()),
        )
    return found


def flores200_codes() -> tuple[str, ...]:
    return tuple(languages())


@cache
def _lookup() -> tuple[dict[str, str], dict[str, list[str]]]:
    """(full code or name -> code, bare language code -> codes), all keys casefolded."""
    exact: dict[str, str] = {}
    bare: dict[str, list[str]] = {}
    for lang in languages().values():
        exact[lang.lang.casefold()] = lang.lang
        exact.setdefault(lang.name.casefold(), lang.lang)
        bare.setdefault(lang.iso639_3, []).append(lang.lang)
        if lang.iso639_1:
            bare.setdefault(lang.iso639_1, []).insert(0, lang.lang)  # the row that carries it comes first
        for alias in lang.aliases:
            if "_" in alias:
                exact[alias.casefold()] = lang.lang
            else:
                bare.setdefault(alias.casefold(), []).insert(0, lang.lang)
    return exact, bare


def normalise_lang(code: str) -> str:
    """Return the FLORES-200 code for `code` (case-insensitive, `-` or `_`), or raise LanguageError."""
    found = _resolve(code)
    if found is not None:
        return found
    keys = [*flores200_codes(), *(lang.name for lang in languages().values())]
    close = difflib.get_close_matches(code.strip().replace("-", "_"), keys, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise LanguageError(
        f"unknown language code {code!r}: {hint}use FLORES-200 codes such as eng_Latn, deu_Latn, ben_Beng "
        "(`polyroute languages` lists them)"
    )


def find_lang(code: str) -> str | None:
    """The FLORES-200 code for `code`, or None: for guessing from names, where a miss is no error."""
    try:
        return _resolve(code)
    except LanguageError:
        return None


def _resolve(code: str) -> str | None:
    """The code `code` names, None if it names none, LanguageError if it names a script FLORES-200 lacks."""
    raw = code.strip()
    cleaned = raw.replace("-", "_")
    exact, bare = _lookup()
    for key in (raw.casefold(), cleaned.casefold()):  # names may hold hyphens: Ta'izzi-Adeni Arabic
        if key in exact:
            return exact[key]
    base, *rest = cleaned.split("_")
    candidates = bare.get(base.casefold())
    if candidates and all(_is_script(part) or _is_region(part) for part in rest):
        return _variant(code, candidates[0].split("_")[0], rest, candidates[0])
    return None


def _is_script(part: str) -> bool:
    return len(part) == 4 and part.isalpha()  # ISO 15924: Latn, Hant


def _is_region(part: str) -> bool:
    return (len(part) == 2 and part.isalpha()) or (len(part) == 3 and part.isdigit())  # BR, 419


def _variant(code: str, iso: str, rest: list[str], main: str) -> str:
    """The FLORES-200 code of language `iso` for the script or region parts in `rest` (`Hant`, `TW`, `BR`)."""
    script = next((part.title() for part in rest if _is_script(part)), None)
    for region in (part.upper() for part in rest if _is_region(part)):
        script = script or REGION_SCRIPT.get((iso, region))
    if script is None:
        return f"{iso}_{DEFAULT_SCRIPT[iso]}" if iso in DEFAULT_SCRIPT else main
    found = _lookup()[0].get(f"{iso}_{script}".casefold())
    if found is None:
        have = " or ".join(c for c in flores200_codes() if c.startswith(f"{iso}_"))
        name = languages()[main].name
        raise LanguageError(f"{code!r}: {name} is in FLORES-200 only as {have}, not in {script} script")
    return found


def parse_langs(spec: str) -> list[str]:
    """Parse a comma-separated list of codes into FLORES-200 codes, keeping order, dropping repeats."""
    codes = [normalise_lang(part) for part in spec.split(",") if part.strip()]
    if not codes:
        raise LanguageError("no language given: pass codes such as {langs} eng_Latn,deu_Latn")
    return list(dict.fromkeys(codes))


def language(code: str) -> Language:
    """The metadata of the language `code` names."""
    return languages()[normalise_lang(code)]
