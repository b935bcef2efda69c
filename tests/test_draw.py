"""`polyroute.ui.draw.unchecked`: a chart converts without Altair's schema check, and only that chart."""

from __future__ import annotations

import altair as alt
import pandas as pd
import pytest

from polyroute.ui.draw import unchecked


def broken_chart() -> alt.Chart:
    """A chart whose spec Vega-Lite's schema refuses: a width given as a word (set as an item, which
    Altair does not check until it converts the chart)."""
    chart = alt.Chart(pd.DataFrame({"x": [1, 2]})).mark_point().encode(x="x:Q")
    chart["width"] = "wide"
    return chart


def test_an_unchecked_chart_converts_without_the_schema_check_and_others_keep_it() -> None:
    with pytest.raises(alt.utils.schemapi.SchemaValidationError):
        broken_chart().to_dict()
    spec = unchecked(broken_chart()).to_dict()
    assert spec["width"] == "wide"
    assert "to_dict" not in spec  # the replaced method is not a property of the chart
    with pytest.raises(alt.utils.schemapi.SchemaValidationError):  # the class's own to_dict is unchanged
        broken_chart().to_dict()


def test_an_unchecked_chart_gives_the_same_spec_as_a_checked_one() -> None:
    frame = pd.DataFrame({"layer": [0, 1, 2], "value": [0.1, 0.4, 0.2]})
    chart = alt.Chart(frame).mark_line().encode(x="layer:O", y="value:Q").properties(title="A title")
    assert unchecked(chart.copy()).to_dict() == chart.to_dict()
