"""The app in a real headless Chromium on the demo store, as users open it: every page by its URL
as a fresh server's first request and through the sidebar, a control changed on each, a SQL
query, five sessions browsing while a collection runs, and a collection cancelled from its page.
Screenshots go to artifacts/."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect, sync_playwright

from moe_core.records import TaskScore
from polyroute.ui.frame import NAVIGATION
from store import open_store, summaries
from store import queries as q
from store import writer as w
from tests.helpers import new_store
from tests.stwait import CHROMIUM, CHROMIUM_ARGS, settle, shot, streamlit_server

pytestmark = pytest.mark.browser

PAGES = [link for _, links in NAVIGATION for link in links]
UPLOADED_PLAN = {
    "method": "ablate", "band": [2, 2], "experts": [{"layer": 2, "experts": [5]}],
    "source": "a plan uploaded by the browser test",
}  # fmt: skip


def slug(path: str) -> str:
    """The URL path Streamlit gives a page file (the home page is "/")."""
    return "" if path == "app.py" else Path(path).stem


def heading(label: str) -> str:
    return "Polyroute" if label == "Overview" else label


@pytest.fixture
def store_copy(built_demo_store: Path, tmp_path: Path) -> Path:
    """The app opens its store for writing, so each server gets a copy of its own."""
    db = tmp_path / "demo.duckdb"
    shutil.copyfile(built_demo_store, db)
    return db


@pytest.fixture(scope="module")
def page_factory():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        contexts = []

        def new_page() -> tuple[Page, list[str]]:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            contexts.append(context)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            return page, errors

        yield new_page
        for context in contexts:
            context.close()
        browser.close()


def open_by_url(page: Page, url: str, link) -> None:
    page.goto(f"{url}/{slug(link.path)}")
    settle(page, page.locator("h1", has_text=heading(link.label)))
    # Rendered by the page itself, not by a bare run of its file: our title and our navigation.
    assert page.title() == ("Polyroute" if link.label == "Overview" else f"{link.label} · Polyroute")
    nav = page.get_by_test_id("stSidebar")
    for other in PAGES:
        assert nav.get_by_text(other.label, exact=True).count() == 1, other.label


def test_every_page_opens_by_its_url_as_a_fresh_servers_first_request(store_copy, page_factory, tmp_path):
    for link in PAGES:
        with streamlit_server({"POLYROUTE_DB": str(store_copy)}, tmp_path / f"{slug(link.path)}.log") as url:
            page, errors = page_factory()
            open_by_url(page, url, link)
            shot(page, f"direct_{slug(link.path) or 'overview'}")
            assert errors == []
            page.context.close()


def charts_drawn(scope: Page | Locator, at_least: int = 0) -> None:
    """Wait until `scope` holds `at_least` charts and every chart in it is drawn, and check that each
    one's title lies inside it (a title pushed above its chart, by an axis title longer than the
    plot, is cut off by what is above; a title in view starts 3 px above, its letters' ascent)."""
    found = scope.get_by_test_id("stVegaLiteChart")
    if at_least:
        found.nth(at_least - 1).wait_for()
    for chart in found.all():
        chart.locator("svg.marks, canvas").first.wait_for()
        above, title = chart.evaluate(
            "e => { const t = e.querySelector('.role-title-text');"
            " return t ? [e.getBoundingClientRect().top - t.getBoundingClientRect().top, t.textContent] : [0, ''];}"
        )
        assert above <= 6, f"the title of {title!r} starts {above:.0f} px above its chart, where it is cut off"


def change_a_control(page: Page, label: str) -> None:
    """One control per page, and what it changes on the screen."""
    main = page.get_by_test_id("stMain")
    if label == "Overview":
        store = page.get_by_test_id("stSidebar").get_by_role("textbox", name="Store file")
        original = store.input_value()
        store.fill("/nowhere/missing.duckdb")
        store.press("Enter")
        settle(page, main.get_by_text("no store at /nowhere/missing.duckdb"))
        store.fill(original)
        store.press("Enter")
        settle(page, main.get_by_role("heading", name="Runs"))
    elif label == "Token paths":
        main.get_by_text("one token", exact=True).click()
        settle(page, main.get_by_text("Token", exact=True))
    elif label == "Divergence":
        main.get_by_text("Script", exact=True).click()
        settle(page, main.locator("text=Script").nth(1))
    elif label == "Expert sharing":
        main.get_by_text("expert use (cosine)", exact=True).click()
        settle(page, main.get_by_text("Cosine similarity compares how often each expert is chosen"))
    elif label == "Steering":
        main.get_by_role("button", name="Generate").click()
        settle(page, main.get_by_role("heading", name="Where the routing moved"))
        charts_drawn(main, at_least=1)
        assert main.get_by_text("With the plan", exact=True).count() == 1
        # A plan file, uploaded as a user would (AppTest cannot drive an upload).
        main.get_by_text("a plan file", exact=True).click()
        settle(page, main.get_by_text("Upload a plan file or paste its JSON"))
        with tempfile.TemporaryDirectory() as folder:
            plan = Path(folder) / "ablate.json"
            plan.write_text(json.dumps(UPLOADED_PLAN))
            main.locator("input[type=file]").set_input_files(str(plan))
            settle(page, main.get_by_text(UPLOADED_PLAN["source"]))  # the page read the file's plan
    elif label == "Adapt":
        budget = main.get_by_role("spinbutton", name="Experts to train (K)")
        budget.fill("4")
        budget.press("Enter")
        settle(page, main.get_by_text("The 4 selected experts, in selection order"))
        charts_drawn(main, at_least=1)
    elif label == "Evaluate":
        main.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Score", exact=True)).click()
        page.get_by_role("option", name="language_consistency").click()
        settle(page, main.get_by_text("language_consistency per language, unsteered and steered"))
    elif label == "SQL console":
        editor = main.get_by_role("textbox").first
        editor.fill("SELECT lang, count(*) AS sentences FROM sequences GROUP BY lang ORDER BY lang")
        main.get_by_role("button", name="Run query").click()
        settle(page, main.get_by_text("34 rows"))
        assert main.get_by_test_id("stDataFrame").count() >= 1
    elif label == "Collect":
        limit = main.get_by_label("Sentences per language (at most)")
        limit.fill("7")
        limit.press("Enter")
        settle(page, main.get_by_role("button", name="Start collecting"))
        assert limit.input_value() == "7"


def add_an_evaluation(db: Path) -> None:
    """Scores of the demo model, unsteered and at two strengths, so the Evaluate page has controls."""
    with open_store(db) as store:
        (trace,) = q.list_runs(store)
        run = w.create_run(
            store, kind="evaluation", model_id=trace.model_id, corpus_id=None, backend="hf",
            params={"task": "mgsm", "langs": trace.params["langs"]}, n_planned=0, weight_bound=1.0,
        )  # fmt: skip
        scores = [
            TaskScore(task="mgsm", lang=lang, variant=variant, metric=metric, value=(i % 7) / 7 + gain, n=5)
            for i, lang in enumerate(trace.params["langs"])
            for variant, gain in (("unsteered", 0.0), ("strength=0.5", 0.05), ("strength=1", 0.1))
            for metric in ("accuracy", "language_consistency")
        ]
        w.write_evaluation(store, run, scores, [])
        w.set_run_status(store, run, "complete")


def test_navigation_and_a_control_on_every_page(store_copy, page_factory, tmp_path):
    add_an_evaluation(store_copy)
    with streamlit_server({"POLYROUTE_DB": str(store_copy)}, tmp_path / "streamlit.log") as url:
        page, errors = page_factory()
        page.goto(url)
        settle(page, page.locator("h1", has_text="Polyroute"))
        for link in PAGES:
            page.get_by_test_id("stSidebar").get_by_text(link.label, exact=True).click()
            settle(page, page.locator("h1", has_text=heading(link.label)))
            charts_drawn(page)
            shot(page, f"nav_{slug(link.path) or 'overview'}")
            change_a_control(page, link.label)
            shot(page, f"changed_{slug(link.path) or 'overview'}")
        assert errors == []


def _collect_form(page: Page, main: Locator, *, sentences: int) -> None:
    """The Collect page's form, once drawn: `sentences` per language, one sentence a batch (the
    slowest collection, so that other sessions and Cancel act while it runs)."""
    settle(page, main.get_by_role("button", name="Start collecting"))
    for label, value in (("Sentences per language (at most)", str(sentences)), ("Batch size", "1")):
        field = main.get_by_label(label)
        field.fill(value)
        field.press("Enter")
        settle(page, main.get_by_label(label))


# Its point is that nothing is lost or broken, not how fast: a busy machine gets the time it needs.
@pytest.mark.timeout(1200)
def test_five_sessions_browse_while_a_collection_runs(store_copy, page_factory, tmp_path):
    with streamlit_server({"POLYROUTE_DB": str(store_copy)}, tmp_path / "streamlit.log") as url:
        collector, collector_errors = page_factory()
        collector.goto(f"{url}/collect")
        main = collector.get_by_test_id("stMain")
        _collect_form(collector, main, sentences=300)  # the whole corpus: 900 sentences, one a batch
        main.get_by_role("button", name="Start collecting").click()
        settle(collector, main.get_by_test_id("stProgress"))

        sessions = [page_factory() for _ in range(5)]
        rounds_while_running, started = 0, time.monotonic()
        while True:
            for turn, (page, _) in enumerate(sessions):  # all five ask at once, then each is checked
                page.goto(f"{url}/{slug(PAGES[(turn + rounds_while_running) % len(PAGES)].path)}", wait_until="commit")
            for turn, (page, _) in enumerate(sessions):
                link = PAGES[(turn + rounds_while_running) % len(PAGES)]
                settle(page, page.locator("h1", has_text=heading(link.label)))
            # A fresh look at the Collect page: the collection belongs to the app, not to one session.
            collector.reload()
            settle(collector, main.get_by_test_id("stProgress").or_(main.get_by_test_id("stAlert")).first)
            if not main.get_by_test_id("stProgress").count():
                break
            rounds_while_running += 1
            assert time.monotonic() - started < 1000, "the collection did not finish"
        assert main.get_by_text("is complete").count(), main.inner_text()
        assert rounds_while_running >= 1
        shot(collector, "collect_done")
        assert collector_errors == [] and all(errors == [] for _, errors in sessions)

    with open_store(store_copy, read_only=True) as store:
        run = q.get_run(store, 2)
        assert run is not None and run.status == "complete" and run.n_stored == run.n_planned == 900
        layout = q.run_layout(store, 2)
        assert layout is not None
        sums = summaries.language_sums(store.con, 2, layout.langs, layout.layers, layout.n_experts)
        # Every stored sentence has all its tokens' routes in every layer: nothing half-written.
        assert sums.hits.sum() == layout.seq_tokens.sum() * len(layout.layers) * layout.top_k
        routes = store.con.execute("SELECT count(*) FROM routes WHERE run_id = 2").fetchone()
        assert routes == (layout.seq_tokens.sum() * len(layout.layers) * layout.top_k,)
        assert sums.soft_sum is not None  # router probabilities were stored


# Per chart, its legend's labels and their symbols' fills (in the same order: one symbol per label).
LEGEND_COLOURS = """() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].map(chart => {
    const labels = [...chart.querySelectorAll('g.role-legend-label text')].map(text => text.textContent);
    const fills = [...chart.querySelectorAll('g.role-legend-symbol path')].map(path => path.getAttribute('fill'));
    return labels.length === fills.length ? Object.fromEntries(labels.map((label, i) => [label, fills[i]])) : {};
})"""


def test_a_family_keeps_its_colour_in_every_chart_whatever_the_reference(store_copy, page_factory, tmp_path):
    """The Divergence page's charts (curves, band bars, entropy) colour each language family as the
    app's fixed table says, before and after the reference language changes."""
    from polyroute.ui.colours import colour_of

    with streamlit_server({"POLYROUTE_DB": str(store_copy)}, tmp_path / "streamlit.log") as url:
        page, errors = page_factory()
        page.goto(f"{url}/divergence")
        main, sidebar = page.get_by_test_id("stMain"), page.get_by_test_id("stSidebar")
        settle(page, main.get_by_text("Routing divergence from eng_Latn", exact=False).first)
        for chart in main.get_by_test_id("stVegaLiteChart").all():
            chart.locator("svg.marks").first.wait_for()
        before = page.evaluate(LEGEND_COLOURS)
        sidebar.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Reference language", exact=True)).click()
        page.keyboard.type("Japanese")
        page.get_by_role("option", name="jpn_Jpan · Japanese").click()
        settle(page, main.get_by_text("Routing divergence from jpn_Jpan", exact=False).first)
        for chart in main.get_by_test_id("stVegaLiteChart").all():
            chart.locator("svg.marks").first.wait_for()
        after = page.evaluate(LEGEND_COLOURS)
        shot(page, "colours_japanese_reference")
        assert errors == []
    with_legends = [legend for legend in before + after if "Indo-European" in legend]
    assert len(with_legends) >= 4, (before, after)  # two charts or more, before and after
    for legend in with_legends:
        assert legend == {family: colour_of("family", family) for family in legend}, legend
    # English is Indo-European, Japanese Japonic: each is drawn as a reference only, so the legends
    # differ in what they list, never in the colours of what both list.
    assert "Japonic" in " ".join(" ".join(legend) for legend in before)


def test_a_copied_link_reopens_the_same_view(store_copy, page_factory, tmp_path):
    with streamlit_server({"POLYROUTE_DB": str(store_copy)}, tmp_path / "streamlit.log") as url:
        page, errors = page_factory()
        page.goto(f"{url}/divergence")
        main, sidebar = page.get_by_test_id("stMain"), page.get_by_test_id("stSidebar")
        settle(page, main.get_by_text("Routing divergence from eng_Latn", exact=False).first)
        sidebar.get_by_test_id("stSelectbox").filter(has=page.get_by_text("Reference language", exact=True)).click()
        page.keyboard.type("Japanese")  # the list shows a few options at a time: filter it
        page.get_by_role("option", name="jpn_Jpan · Japanese").click()
        settle(page, main.get_by_text("Routing divergence from jpn_Jpan", exact=False).first)
        main.get_by_text("Script", exact=True).click()
        settle(page, main.get_by_text("Script", exact=True).nth(1))
        link = page.url
        assert "ref=jpn_Jpan" in link and "colour=script" in link, link
        shot(page, "link_before")

        fresh, fresh_errors = page_factory()  # another browser session: nothing in common but the link
        fresh.goto(link)
        fresh_main = fresh.get_by_test_id("stMain")
        settle(fresh, fresh_main.get_by_text("Routing divergence from jpn_Jpan", exact=False).first)
        assert "ref=jpn_Jpan" in fresh.url and "langs=all" in fresh.url  # all languages but the reference
        assert fresh_main.get_by_role("radio", name="Script").is_checked()
        assert (
            fresh_main.get_by_text("Band: layer", exact=False).inner_text()
            == main.get_by_text("Band: layer", exact=False).inner_text()
        )
        shot(fresh, "link_after")
        assert errors == [] and fresh_errors == []


def test_a_collection_is_cancelled_from_its_page_and_keeps_whole_sentences(page_factory, tmp_path):
    db = new_store(tmp_path / "s.duckdb")
    with streamlit_server({"POLYROUTE_DB": str(db)}, tmp_path / "streamlit.log") as url:
        page, errors = page_factory()
        page.goto(f"{url}/collect")
        main = page.get_by_test_id("stMain")
        _collect_form(page, main, sentences=100)
        _cancel_running_job(page, main, "Start collecting", "A collection was cancelled")
        shot(page, "collect_cancelled")
        assert main.get_by_text("polyroute trace --resume 1").count()
        assert errors == []
    with open_store(db, read_only=True) as store:
        run = q.get_run(store, 1)
        assert run is not None and run.status == "cancelled" and run.n_stored < run.n_planned
        stored = sorted(q.stored_seq_ids(store, 1))
        layout = q.run_layout(store, 1)
        assert layout is not None and stored == list(range(len(stored)))
        sums = summaries.language_sums(store.con, 1, layout.langs, layout.layers, layout.n_experts)
        # The summaries hold exactly the stored sentences: every token's routes in every layer.
        assert sums.hits.sum() == layout.seq_tokens.sum() * len(layout.layers) * layout.top_k


def _cancel_running_job(page: Page, main: Locator, start: str, cancelled: str) -> str:
    """Press `start`, then the Cancel beside the job's progress bar, and wait for the message that
    says `cancelled`: its text."""
    main.get_by_role("button", name=start, exact=True).click()
    cancel = main.get_by_role("button", name="Cancel")
    settle(page, cancel)
    cancel.click()
    said = main.get_by_test_id("stAlertContentInfo").filter(has_text=cancelled)
    expect(said).to_be_visible(timeout=300_000)
    settle(page, said)
    assert main.get_by_test_id("stProgress").count() == 0
    return said.inner_text()


@pytest.mark.parametrize(
    ("slug_", "start", "kind", "rows"),
    [
        ("evaluate", "Start the evaluation", "evaluation", "eval_results"),
        ("adapt", "Train", "adaptation", "adaptation_experts"),
    ],
)
def test_an_evaluation_and_an_adaptation_are_cancelled_from_their_pages(
    store_copy, page_factory, tmp_path, slug_, start, kind, rows
):
    """Cancel stops the job at its next safe point: its run is marked cancelled and holds no half result."""
    with streamlit_server({"POLYROUTE_DB": str(store_copy)}, tmp_path / "streamlit.log") as url:
        page, errors = page_factory()
        page.goto(f"{url}/{slug_}")
        main = page.get_by_test_id("stMain")
        button = main.get_by_role("button", name=start, exact=True)
        settle(page, button)
        assert button.is_enabled(), main.inner_text()
        said = _cancel_running_job(page, main, start, f"An {kind} was cancelled")
        shot(page, f"{slug_}_cancelled")
        assert errors == []
    with open_store(store_copy, read_only=True) as store:
        runs = [run for run in q.list_runs(store) if run.kind == kind]
        if not runs:  # cancelled while the model loaded or the losses before training were measured
            assert "before it stored anything" in said, said
            return
        (run,) = runs
        assert run.status == "cancelled" and f"run {run.run_id} keeps what it stored" in said, said
        assert store.con.execute(f"SELECT count(*) FROM {rows} WHERE run_id = ?", [run.run_id]).fetchone() == (0,)


def test_the_steering_demo_changes_the_text(store_copy, page_factory, tmp_path):
    """The Steering page opens on the steering demo; Generate writes two different texts."""
    with streamlit_server({"POLYROUTE_DB": str(store_copy)}, tmp_path / "streamlit.log") as url:
        page, errors = page_factory()
        page.goto(f"{url}/steering")
        main = page.get_by_test_id("stMain")
        settle(page, main.get_by_role("button", name="Generate"))
        main.get_by_role("button", name="Generate").click()
        settle(page, main.get_by_role("heading", name="Where the routing moved"))
        texts = main.get_by_test_id("stHorizontalBlock").filter(has=page.get_by_text("Without steering", exact=True))
        plain, steered = (column.inner_text() for column in texts.get_by_test_id("stColumn").all())
        plain, steered = plain.replace("Without steering", "").strip(), steered.replace("With the plan", "").strip()
        assert plain and steered and plain != steered
        assert main.get_by_text("The plan did not change the text").count() == 0
        charts_drawn(main, at_least=1)
        shot(page, "steering_demo")
        assert errors == []


def test_evaluate_runs_its_built_in_task_from_the_default_form(store_copy, page_factory, tmp_path):
    """A new user on the demo store: the Evaluate page's form, as it opens, starts an evaluation that
    completes and shows its scores and its answers."""
    with streamlit_server({"POLYROUTE_DB": str(store_copy)}, tmp_path / "streamlit.log") as url:
        page, errors = page_factory()
        page.goto(f"{url}/evaluate")
        main = page.get_by_test_id("stMain")
        start = main.get_by_role("button", name="Start the evaluation")
        settle(page, start)
        assert start.is_enabled(), main.inner_text()
        # The form as it opens, untouched (10 items per language): a field typed into just before the
        # click could be redrawn by a rerun and lose its text on a busy machine.
        start.click()
        done = main.get_by_text("is complete: 2 languages, 10 items")
        deadline = time.monotonic() + 600
        while not done.count():  # the page polls its job and reruns once when it ends
            assert time.monotonic() < deadline, main.inner_text()
            assert not main.get_by_text("The evaluation stopped").count(), main.inner_text()
            time.sleep(2)
        settle(page, main.get_by_text("The answers, item by item"))
        assert main.get_by_text("language_consistency per language, unsteered", exact=True).count()
        assert main.get_by_text("The correlation needs at least 3 languages").count()
        shot(page, "evaluate_builtin_done")
        assert errors == []
    with open_store(store_copy, read_only=True) as store:
        (run,) = [run for run in q.list_runs(store) if run.kind == "evaluation"]
        assert run.status == "complete" and run.params["task"] == "heldout"
        assert len(q.run_answers(store, run.run_id)) == 2 * 10


def test_compare_runs_draws_a_steered_run_against_its_unsteered_run(compare_store, page_factory, tmp_path):
    """Two runs of one model, one traced with a steering plan: the depth curves and the steered-minus-
    unsteered chart are drawn with their titles in view, and the page's choice is in its URL."""
    db = tmp_path / "compare.duckdb"
    shutil.copyfile(compare_store, db)
    with streamlit_server({"POLYROUTE_DB": str(db)}, tmp_path / "streamlit.log") as url:
        page, errors = page_factory()
        page.goto(f"{url}/compare_runs?runs=1,2")
        main = page.get_by_test_id("stMain")
        settle(page, main.get_by_text("What steering changed", exact=False).first)
        # The depth curves and the difference; no band bars: neither 3-layer model has a middle-zone layer.
        expect(main.get_by_test_id("stVegaLiteChart")).to_have_count(2)
        expect(main.get_by_text("no middle-band mean to compare", exact=False)).to_be_visible()
        charts_drawn(main)
        assert main.get_by_text("None of the chosen runs is a steered run").count() == 0
        assert "runs=1%2C2" in page.url or "runs=1,2" in page.url
        shot(page, "compare_runs_steered")
        assert errors == []


def test_the_expert_browser_opens_on_the_expert_of_its_link(store_copy, page_factory, tmp_path):
    """A link to one expert opens the Expert browser on it: its use per language, the layers around,
    the tokens sent to it and the experts chosen with it, each drawn."""
    with streamlit_server({"POLYROUTE_DB": str(store_copy)}, tmp_path / "streamlit.log") as url:
        page, errors = page_factory()
        page.goto(f"{url}/expert_browser?run=1&layer=2&expert=3")
        main = page.get_by_test_id("stMain")
        settle(page, main.get_by_role("heading", name="The experts chosen with it"))
        expect(main.get_by_role("heading", name="What the analyses call expert 3 of layer 2")).to_be_visible()
        charts_drawn(main, at_least=3)
        assert "layer=2" in page.url and "expert=3" in page.url
        shot(page, "expert_browser")
        assert errors == []
