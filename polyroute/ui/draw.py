"""Charts onto the page: `draw` is `st.altair_chart` without Altair's schema check.

Altair checks a chart against the Vega-Lite JSON schema each time it is converted: 0.15-0.2 s a
chart, 0.7 s of the Token paths page's 2.05 s first run on a 500M-decision store. The charts are
built by code, not by users, so the check belongs in the tests: `tests/conftest.py`'s
`charts_checked` puts it back for every chart an app-tier test draws.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

import altair as alt
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

AnyChart = alt.Chart | alt.LayerChart | alt.HConcatChart | alt.VConcatChart | alt.ConcatChart | alt.FacetChart
Chart = TypeVar("Chart", bound=AnyChart)


def unchecked(chart: Chart) -> Chart:
    """`chart`, converted to its Vega-Lite spec without the schema check (an attribute of this one
    object: Altair's own `to_dict`, and every other chart, are unchanged)."""
    # object.__setattr__: Altair's own __setattr__ would store the function as a chart property.
    object.__setattr__(chart, "to_dict", functools.partial(chart.to_dict, validate=False))
    return chart


def draw(chart: AnyChart, place: DeltaGenerator | None = None, **options: Any) -> DeltaGenerator:
    """`place.altair_chart(chart, **options)` (the page itself when `place` is None), unchecked."""
    return (place or st).altair_chart(unchecked(chart), **options)
