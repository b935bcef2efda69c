"""AppTest helpers: open a page the way the app does (through app.py, so its navigation links
resolve), and read back what a page drew: chart titles and the rows behind each chart."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def open_page(page: str | None = None) -> AppTest:
    """The app run once, then switched to `page` (e.g. "pages/divergence.py"); fails on an exception."""
    at = AppTest.from_file(APP, default_timeout=90).run()
    if page is not None:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def wait_for_job(
    at: AppTest, *, until: str = "success", timeout: float = 120, each: Callable[[AppTest], None] | None = None
) -> AppTest:
    """Rerun a page that follows a background job (as its 2 s poll would) until it shows an `until`
    box: "success" when the job is done (a warning then fails), "warning" when it should fail.
    `each(at)` sees every rerun (to record the progress bar's stages)."""
    deadline = time.monotonic() + timeout
    while not getattr(at, until):
        assert time.monotonic() < deadline, [bar.proto.text for bar in at.get("progress")]
        assert not at.exception, at.exception
        assert until != "success" or not at.warning, at.warning[0].value
        if each is not None:
            each(at)
        time.sleep(0.5)
        at.run()
    return at


@dataclass(frozen=True)
class Chart:
    title: str
    spec: dict[str, Any]
    data: list[pd.DataFrame]  # every dataset of the chart (one per layer that has its own data)

    def rows(self) -> pd.DataFrame:
        """The largest dataset: the one the chart's main marks draw."""
        return max(self.data, key=len)


def charts(at: AppTest) -> list[Chart]:
    found = []
    for element in at.get("vega_lite_chart"):
        spec = json.loads(element.proto.spec)
        title = spec.get("title", "")
        data = [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in element.proto.datasets]
        found.append(Chart(title=title["text"] if isinstance(title, dict) else title, spec=spec, data=data))
    return found


def chart(at: AppTest, title_part: str) -> Chart:
    matches = [c for c in charts(at) if title_part in c.title]
    assert len(matches) == 1, [c.title for c in charts(at)]
    return matches[0]
