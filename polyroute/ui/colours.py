"""One colour per language family, script, resource class, language and run for the whole app.

A colour is fixed by the value itself, never by its position among what a chart shows: families
and scripts are ranked once (the most studied first, then by how many FLORES-200 languages they
have), so the common ones get the clearest colours, and a chart's scale lists the values of the
languages on the page with their fixed colours. Japanese as the reference, or a language left
out, changes no other colour and no legend.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Final

import altair as alt

from moe_core.languages import flores200_codes, languages
from polyroute.run_data import lang_facts

# Thirty colours: the first twenty as far apart as twenty can be (Tableau 10 less its grey, then
# darker and brighter ones), the last ten for the rarest scripts only.
PALETTE: Final = (
    "#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#ff9da6", "#9d755d",
    "#393b79", "#17becf", "#3b3b3b", "#c51b7d", "#bcbd22", "#843c39", "#6b6ecf", "#637939", "#a6d854",
    "#7b4173", "#e7ba52", "#1f77b4", "#e6550d", "#31a354", "#756bb1", "#d6616b", "#8c6d31", "#ce6dbd",
    "#2ca02c", "#8c564b", "#d62728",
)  # fmt: skip
# The families and scripts most studied in multilingual MoE work come first, so that the ones that
# meet in one chart get the clearest colours; the rest follow by how many languages they have.
FIRST: Final = {
    "family": (
        "Indo-European", "Sino-Tibetan", "Afro-Asiatic", "Austronesian", "Turkic", "Japonic", "Koreanic",
        "Dravidian", "Niger-Congo", "Uralic", "Mongolic", "Kra-Dai", "Austroasiatic",
    ),
    "script": ("Latn", "Cyrl", "Arab", "Hans", "Hant", "Jpan", "Hang", "Deva", "Grek", "Hebr", "Thai", "Beng", "Taml"),
}  # fmt: skip
UNKNOWN: Final = "#9a9a9a"  # a code outside FLORES-200: no family, script or class
# Resource class 0 (left behind) .. 5 (winners): ordered, so one ramp, dark to light.
RESOURCE_CLASSES: Final = {
    "0": "#5e3c99",
    "1": "#3b6fb6",
    "2": "#2a9d8f",
    "3": "#8ab33f",
    "4": "#e9a820",
    "5": "#d9480f",
}


@cache
def _ranked(field: str) -> dict[str, str]:
    counts = Counter(getattr(lang, field) for lang in languages().values())
    first = FIRST[field]
    ranked = [*first, *sorted((v for v in counts if v not in first), key=lambda value: (-counts[value], value))]
    return {value: PALETTE[i % len(PALETTE)] for i, value in enumerate(ranked)}


@cache
def _language_colours() -> dict[str, str]:
    # Neighbouring codes (deu_Latn, dik_Latn, ...) get colours far apart in the palette.
    return {code: PALETTE[(i * 7) % len(PALETTE)] for i, code in enumerate(flores200_codes())}


def colour_of(field: str, value: object) -> str:
    """The app's colour for a family, script, resource class ("0".."5") or language code."""
    text = "" if value is None else str(value)
    if field == "resource_class":
        return RESOURCE_CLASSES.get(text, UNKNOWN)
    if field in ("family", "script"):
        return _ranked(field).get(text, UNKNOWN)
    if field == "lang":
        return _language_colours().get(text, UNKNOWN)
    raise ValueError(f"no fixed colours for {field!r}")


def run_colour(run_id: int) -> str:
    """The app's colour for a run: fixed by its id, so a run keeps it whichever others it is shown with."""
    return PALETTE[(int(run_id) - 1) % len(PALETTE)]


def run_scale(runs: Mapping[str, int]) -> alt.Scale:
    """A colour scale for runs shown by their labels (label -> run id), each in its fixed colour."""
    return alt.Scale(domain=list(runs), range=[run_colour(run_id) for run_id in runs.values()])


def fixed_scale(field: str, values: Iterable[object]) -> alt.Scale:
    """A colour scale for the `values` a chart shows, each in its fixed colour, listed A to Z."""
    shown = sorted({str(v) for v in values if v is not None and v == v})
    return alt.Scale(domain=shown, range=[colour_of(field, value) for value in shown])


def group_values(langs: Iterable[str], field: str) -> list[str]:
    """The values of `field` among `langs` (codes): a page's legend, the same in all its charts."""
    if field == "lang":
        return sorted(set(langs))
    found = set()
    for code in langs:
        facts = lang_facts(code)
        value = facts[field]
        found.add("" if value is None else str(value))
    return sorted(found)
