"""The Expert browser page with Streamlit's AppTest on the demo store (the demo model: 4 layers,
8 experts, top-2, 34 languages), opened by a link's query parameters, and the links to it from the
pages that name experts."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from streamlit.testing.v1 import AppTest

from tests.apptest import APP, chart, open_page

PAGE = "pages/expert_browser.py"


def _opened(query: dict[str, str], page: str = PAGE) -> AppTest:
    """The app opened on `page` by a link with `query`, as a new session."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    for name, value in query.items():
        at.query_params[name] = value
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def _browser_links(at: AppTest) -> list:
    """The page's links to one expert in the browser (the navigation's plain link left out)."""
    return [
        link.proto for link in at.get("page_link") if link.proto.page == "expert_browser" and link.proto.query_string
    ]


def _link(at: AppTest) -> dict[str, str]:
    return {name: value[0] if isinstance(value, list) else value for name, value in dict(at.query_params).items()}


def test_a_link_opens_the_expert_and_the_page_keeps_its_choices_in_the_url(demo_app_db):
    at = _opened({"run": "1", "layer": "2", "expert": "3"})
    assert at.title[0].value == "Expert browser"
    labels = [line.value for line in at.markdown if line.value.startswith("- **")]
    assert labels and labels[0].startswith("- **shared**: max_share ")
    for number in (number for line in labels for number in re.findall(r"\d+\.\d+", line)):
        assert len(number.replace(".", "").lstrip("0")) <= 3, f"{number}: labels say three significant digits"
    assert at.selectbox(key="browser_layer_1").value == 2 and at.number_input(key="browser_expert_1").value == 3
    bars = chart(at, "How often each language sends a token to expert 3 of layer 2")
    assert len(bars.rows()) == 34 and bars.spec["encoding"]["x"]["title"]
    assert "legend" in bars.spec["encoding"]["color"]  # coloured by family, in the fixed colours
    heatmap = chart(at, "Expert 3 in layers 0-3")
    assert set(heatmap.rows()["layer"]) == {0, 1, 2, 3}
    partners = chart(at, "Experts the tokens of expert 3 of layer 2 also chose")
    assert 3 not in set(partners.rows()["expert"]) and partners.rows()["share"].between(0, 1).all()
    tokens = at.dataframe[0].value
    assert len(tokens) and tokens["context"].str.contains("⟦").all() and (tokens["routed"] >= 1).all()
    linked = at.dataframe[-1].value  # the co-chosen experts, each opening in the browser
    assert linked["browse"].str.startswith("expert_browser?run=1&layer=2&expert=").all()

    at.number_input(key="browser_expert_1").set_value(5).run()
    at.selectbox(key="browser_layer_1").set_value(1).run()
    link = _link(at)
    assert (link["layer"], link["expert"]) == ("1", "5")
    title = "How often each language sends a token to expert 5 of layer 1"
    assert chart(at, title)
    again = _opened(link)
    assert chart(again, title) and again.number_input(key="browser_expert_1").value == 5


def test_an_expert_out_of_range_in_a_link_falls_back_to_a_valid_one(demo_app_db):
    at = _opened({"run": "1", "layer": "99", "expert": "42"})
    assert at.selectbox(key="browser_layer_1").value in (0, 1, 2, 3)
    assert at.number_input(key="browser_expert_1").value == 0
    assert not at.warning


def test_pages_that_name_experts_link_to_the_browser(demo_app_db):
    at = open_page("pages/token_paths.py")
    links = _browser_links(at)
    assert len(links) == 1 and dict(parse_qsl(links[0].query_string))["run"] == "1"
    first = at.selectbox(key="token_paths_browse").value  # the expert the sentences visit most
    assert dict(parse_qsl(links[0].query_string)) == {"run": "1", "layer": str(first[0]), "expert": str(first[1])}

    at.switch_page("pages/expert_sharing.py").run()
    urls = [url for frame in at.dataframe if "browse" in frame.value.columns for url in frame.value["browse"]]
    assert urls and all(url.startswith("expert_browser?run=1&layer=") for url in urls)
    query = dict(parse_qsl(urls[0].partition("?")[2]))
    opened = _opened(query)  # the link, followed in a new session, shows that expert
    assert chart(opened, f"to expert {query['expert']} of layer {query['layer']}")

    at.switch_page("pages/adapt.py").run()
    selected = [frame.value for frame in at.dataframe if "browse" in frame.value.columns]
    assert selected and all(
        url == f"expert_browser?run=1&layer={layer}&expert={expert}"
        for frame in selected
        for url, layer, expert in zip(frame["browse"], frame["layer"], frame["expert"], strict=True)
    )

    at.switch_page("pages/steering.py").run()
    assert not at.exception
    plan = at.dataframe[0].value
    planned = [
        (int(layer), int(e)) for layer, experts in zip(plan["layer"], plan["experts"], strict=True)
        for e in experts.split(", ")
    ]  # fmt: skip
    picker = at.selectbox(key="steering_browse")
    assert len(picker.options) == len(planned) and picker.value[:2] == planned[0]
    links = _browser_links(at)
    layer, expert = planned[0]
    assert [dict(parse_qsl(link.query_string)) for link in links] == [
        {"run": "1", "layer": str(layer), "expert": str(expert)}
    ]
