"""App benchmark: time from navigation to a fully rendered page, for every page, on two stores.

Goals: at most 2 s a page on the demo store, at most 5 s on a store of 10M routing decisions.

The stores:
- demo: a fresh copy of data/demo.duckdb when it exists (the app opens its store for writing, and
  another app or command may hold data/demo.duckdb open), else `polyroute demo` into the cache.
- big: a synthetic store of about 10.6M routing decisions (24 layers, top-8 of 64 experts, about
  55k tokens in 20 languages, every item in every language), traced by `moe_core.synthetic` through
  the real pipeline and writer by bench/analysis.py's builder. It is cached under bench/.cache with
  its size and generator in the name, and reused by later runs (built in about 10 s).

For each store: a fresh `streamlit run app.py` (POLYROUTE_DB = the store), headless Debian
Chromium, and for every page of polyroute.ui.frame.NAVIGATION, repeated N times:
- first_visit_s: a new browser context (a new user) opens the page's URL; from `page.goto` to
  fully rendered. The first round is the first time the server draws that page (its cached
  analyses are computed then); the server's own first script run (imports, opening the store) is
  taken before, by a load of the Overview outside the goal, reported as server_first_load_s.
- navigate_s: in one session, a click on the page's sidebar link while the previous page of
  NAVIGATION is shown (Collect -> Overview -> Token paths -> ...), to fully rendered.

"Fully rendered", the same for every page, polled in the page on every animation frame: the page's
heading (its NAVIGATION label; "Polyroute" for the Overview) is visible, stApp's script state is
notRunning (seen together with the new heading, so it is the new run's state), no stSkeleton is
left, and every displayed stVegaLiteChart holds a drawn `svg.marks` or `canvas`, every displayed
stDataFrame its grid canvas. An stException (or a page error in the browser, or a timeout) fails
that measurement, and is reported with its text.

Prints one JSON object: per store its size and contents, per page median and max of both times,
the goal and whether every measurement met it (`met` for navigation, which the goal is about;
`first_visit_met` for a new tab); the machine and the versions.

Run: `python bench/app.py` (about 4 minutes on 2 cores; needs Debian's Chromium: `make chromium`),
or `--stores demo --repeats 1` for a smoke run.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import inspect
import json
import logging
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import streamlit  # noqa: E402
from playwright.sync_api import Browser, Page, ViewportSize, sync_playwright  # noqa: E402
from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402

# Importing the app's navigation defines its cached functions outside a Streamlit run: not worth a warning.
logging.getLogger("streamlit.runtime.caching.cache_data_api").setLevel(logging.ERROR)
from bench.analysis import LANGS, build_synthetic_store  # noqa: E402
from polyroute.ui.frame import NAVIGATION, PageLink  # noqa: E402
from tests.stwait import CHROMIUM, CHROMIUM_ARGS, streamlit_server  # noqa: E402

GOALS_S = {"demo": 2.0, "big": 5.0}
CACHE = ROOT / "bench" / ".cache"
BIG = {"n_layers": 24, "n_experts": 64, "top_k": 8, "n_items": 92}  # x 20 languages x ~30 tokens
MIN_BIG_DECISIONS = 10_000_000
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}

# True once the page is fully rendered (see the module's docstring), {exception: [...]} on an error box.
RENDERED = """
(heading) => {
  const errors = document.querySelectorAll('[data-testid="stException"]');
  if (errors.length) return {exception: Array.from(errors, (e) => e.innerText.slice(0, 1000))};
  const shown = (el) => el.checkVisibility();
  if (!Array.from(document.querySelectorAll('h1')).some((h) => h.innerText.trim() === heading && shown(h)))
    return false;
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  if (document.querySelector('[data-testid="stSkeleton"]')) return false;
  const charts = Array.from(document.querySelectorAll('[data-testid="stVegaLiteChart"]')).filter(shown);
  if (charts.some((chart) => !chart.querySelector('svg.marks, canvas'))) return false;
  const frames = Array.from(document.querySelectorAll('[data-testid="stDataFrame"]')).filter(shown);
  if (frames.some((frame) => !frame.querySelector('canvas'))) return false;
  return {charts: charts.length, dataframes: frames.length};
}
"""
# What is missing, for the report of a page that did not render in time.
DIAGNOSE = """
() => ({
  script_state: document.querySelector('[data-testid="stApp"]')?.getAttribute('data-test-script-state'),
  headings: Array.from(document.querySelectorAll('h1'), (h) => h.innerText.trim()),
  skeletons: document.querySelectorAll('[data-testid="stSkeleton"]').length,
  undrawn_charts: Array.from(document.querySelectorAll('[data-testid="stVegaLiteChart"]'))
    .filter((c) => !c.querySelector('svg.marks, canvas')).length,
  undrawn_dataframes: Array.from(document.querySelectorAll('[data-testid="stDataFrame"]'))
    .filter((f) => !f.querySelector('canvas')).length,
})
"""


# ---------------------------------------------------------------------------------------------
# The stores


def store_facts(db: Path) -> dict[str, Any] | None:
    """What a complete store holds (every run complete, with all its sequences), else None."""
    import duckdb

    from store import StoreError, open_store
    from store import queries as q

    try:
        with open_store(db, read_only=True) as store:
            runs = q.list_runs(store)
            if not runs or any(run.status != "complete" or run.n_stored != run.n_planned for run in runs):
                return None
            sequences, languages, tokens, decisions = store.con.execute(
                "SELECT count(*), count(DISTINCT lang), coalesce(sum(n_tokens), 0), (SELECT count(*) FROM routes) "
                "FROM sequences"
            ).fetchall()[0]
            models = store.con.execute("SELECT n_layers, n_experts, top_k FROM models").fetchall()
    except (StoreError, duckdb.Error):
        return None
    return {
        "runs": len(runs),
        "decisions": decisions,
        "sequences": sequences,
        "languages": languages,
        "tokens": int(tokens),
        "models": [dict(zip(("layers", "experts", "top_k"), model, strict=True)) for model in models],
        "size_mb": round(db.stat().st_size / 2**20, 1),
    }


def _remove(db: Path) -> None:
    for path in (db, Path(f"{db}.wal"), db.with_suffix(".jsonl"), db.with_suffix(".json")):
        path.unlink(missing_ok=True)


def _cached(db: Path, build: Callable[[Path], object]) -> dict[str, Any]:
    """The complete store at `db` with its build record, built (through a partial file) when absent."""
    record = db.with_suffix(".json")
    facts = store_facts(db) if record.is_file() else None
    if facts is not None:
        return {"path": str(db), "reused": True, **json.loads(record.read_text()), **facts}
    _remove(db)
    partial = db.with_name(db.stem + ".partial.duckdb")
    _remove(partial)
    started = time.perf_counter()
    build(partial)
    build_s = round(time.perf_counter() - started, 1)
    partial.with_suffix(".jsonl").unlink(missing_ok=True)
    assert not Path(f"{partial}.wal").exists(), "the build left a write-ahead log"
    partial.rename(db)
    record.write_text(json.dumps({"build_s": build_s}))
    facts = store_facts(db)
    assert facts is not None, f"{db} is not a complete store after its build"
    return {"path": str(db), "reused": False, "build_s": build_s, **facts}


def demo_store(cache: Path) -> dict[str, Any]:
    shipped = ROOT / "data" / "demo.duckdb"
    if shipped.is_file():
        copy = cache / "demo-copy.duckdb"
        _remove(copy)
        shutil.copyfile(shipped, copy)
        if Path(f"{shipped}.wal").is_file():
            shutil.copyfile(f"{shipped}.wal", f"{copy}.wal")
        facts = store_facts(copy)
        if facts is not None:
            return {"path": str(copy), "source": f"a copy of {shipped.relative_to(ROOT)}", **facts}
        print(f"{shipped} is not a complete store: building the demo store instead", file=sys.stderr)

    def build(db: Path) -> None:
        subprocess.run([sys.executable, "-m", "polyroute.cli", "demo", "--db", str(db)], cwd=ROOT, check=True)

    return {"source": "polyroute demo", **_cached(cache / "demo-built.duckdb", build)}


def big_store(cache: Path) -> dict[str, Any]:
    """The synthetic store, under a name that changes with its size, its generator and the schema."""
    from store import migrations

    source = [
        (ROOT / "moe_core" / "synthetic.py").read_text(),
        inspect.getsource(build_synthetic_store),
        json.dumps(LANGS),
        str(migrations.available()[-1][0]),
    ]
    digest = hashlib.sha256("\n".join(source).encode()).hexdigest()[:10]
    size = "-".join(f"{key.removeprefix('n_')}{value}" for key, value in BIG.items())
    db = cache / f"app-{size}-{digest}.duckdb"
    stored = _cached(db, lambda path: build_synthetic_store(path, **BIG))
    assert stored["decisions"] >= MIN_BIG_DECISIONS, stored
    return {"source": "moe_core.synthetic through polyroute.workflows.trace (bench/analysis.py)", **stored}


# ---------------------------------------------------------------------------------------------
# The measurements


def slug(link: PageLink) -> str:
    """The page's URL path: "" for the entry script, the file's stem for pages/x.py."""
    return "" if link.path == "app.py" else Path(link.path).stem


def heading(link: PageLink) -> str:
    return "Polyroute" if link.path == "app.py" else link.label


def pages() -> list[PageLink]:
    return [link for _, links in NAVIGATION for link in links]


class Failed(Exception):
    """A measurement that did not end in a fully rendered page."""


def rendered(page: Page, link: PageLink, page_errors: list[str], timeout_s: float) -> dict[str, int]:
    """Wait until `link`'s page is fully rendered; Failed on an error box, a page error or a timeout."""
    try:
        state = page.wait_for_function(RENDERED, arg=heading(link), polling="raf", timeout=timeout_s * 1000)
        found = state.json_value()
    except PlaywrightTimeout:
        raise Failed(f"not rendered within {timeout_s:g} s: {json.dumps(page.evaluate(DIAGNOSE))}") from None
    if "exception" in found:
        raise Failed("stException: " + " | ".join(found["exception"]))
    if page_errors:
        raise Failed("page error: " + " | ".join(page_errors))
    return found


def new_page(browser: Browser) -> tuple[Page, list[str]]:
    page = browser.new_context(viewport=VIEWPORT).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page, errors


def first_visit(browser: Browser, url: str, link: PageLink, timeout_s: float) -> tuple[float, dict[str, int]]:
    page, errors = new_page(browser)
    try:
        started = time.perf_counter()
        page.goto(f"{url}/{slug(link)}")
        found = rendered(page, link, errors, timeout_s)
        return time.perf_counter() - started, found
    finally:
        page.context.close()


def navigate(page: Page, errors: list[str], link: PageLink, timeout_s: float) -> tuple[float, dict[str, int]]:
    target = page.get_by_test_id("stSidebar").get_by_test_id("stPageLink-NavLink").filter(has_text=link.label)
    started = time.perf_counter()
    target.first.click()
    found = rendered(page, link, errors, timeout_s)
    return time.perf_counter() - started, found


def summary(times: list[float]) -> dict[str, Any]:
    if not times:
        return {"median": None, "max": None, "runs": []}
    return {
        "median": round(statistics.median(times), 3),
        "max": round(max(times), 3),
        "runs": [round(t, 3) for t in times],
    }


def measure_app(browser: Browser, url: str, repeats: int, timeout_s: float) -> dict[str, Any]:
    links = pages()
    times: dict[str, dict[str, list[float]]] = {link.path: {"first_visit": [], "navigate": []} for link in links}
    errors: dict[str, list[str]] = {link.path: [] for link in links}
    shapes: dict[str, dict[str, int]] = {}

    started = time.perf_counter()  # the server's first script run: imports, the store opened
    first_load_s, _ = first_visit(browser, url, links[0], timeout_s)
    print(f"  server's first load ({links[0].label}): {first_load_s:.2f} s", file=sys.stderr)

    for round_ in range(repeats):
        for link in links:
            try:
                seconds, shapes[link.path] = first_visit(browser, url, link, timeout_s)
                times[link.path]["first_visit"].append(seconds)
            except Failed as failure:
                errors[link.path].append(f"first visit {round_ + 1}: {failure}")
        print(f"  first visits, round {round_ + 1}/{repeats} done", file=sys.stderr)

    page, page_errors = new_page(browser)
    shown = links[-1]  # the page on screen, fully rendered
    try:
        page.goto(f"{url}/{slug(shown)}")
        rendered(page, shown, page_errors, timeout_s)
        broken = False  # the last click did not render: the page on screen is not `shown`
        for round_ in range(repeats):
            for link in links:
                if broken and link == shown:
                    errors[link.path].append(f"navigate {round_ + 1}: skipped, no other page renders to start from")
                    continue
                if broken:  # start from the last page that rendered, loaded afresh
                    page_errors.clear()
                    page.goto(f"{url}/{slug(shown)}")
                    rendered(page, shown, page_errors, timeout_s)
                    broken = False
                try:
                    seconds, shapes[link.path] = navigate(page, page_errors, link, timeout_s)
                    times[link.path]["navigate"].append(seconds)
                    shown = link
                except Failed as failure:
                    errors[link.path].append(f"navigate {round_ + 1} from {shown.label}: {failure}")
                    broken = True
            print(f"  navigation, round {round_ + 1}/{repeats} done", file=sys.stderr)
    except Failed as failure:
        errors[shown.path].append(f"navigation stopped, {shown.label} no longer renders: {failure}")
    finally:
        page.context.close()

    return {
        "server_first_load_s": round(first_load_s, 3),
        "measure_s": round(time.perf_counter() - started, 1),
        "pages": {
            link.label: {
                "url": "/" + slug(link),
                "heading": heading(link),
                **shapes.get(link.path, {}),
                "first_visit_s": summary(times[link.path]["first_visit"]),
                "navigate_s": summary(times[link.path]["navigate"]),
                "errors": errors[link.path],
            }
            for link in links
        },
    }


def bench_store(browser: Browser, name: str, stored: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    log = Path(args.cache) / f"streamlit-{name}.log"
    goal = GOALS_S[name]
    result: dict[str, Any] | None = None
    started = time.perf_counter()
    try:
        with streamlit_server({"POLYROUTE_DB": stored["path"]}, log) as url:
            server_start_s = round(time.perf_counter() - started, 2)
            result = {"server_start_s": server_start_s, **measure_app(browser, url, args.repeats, args.timeout)}
    except AssertionError:
        if result is None:
            raise
        result["server_errors"] = logged_errors(log)  # the server logged a traceback
    for found in result["pages"].values():
        # The goal is about navigating the app; a new tab also loads Streamlit's front end and the
        # chart library (about 1.5 s before any page of ours), so it is judged apart.
        for kind, verdict in (("navigate_s", "met"), ("first_visit_s", "first_visit_met")):
            worst = found[kind]["max"]
            found[verdict] = not found["errors"] and worst is not None and worst <= goal
    return {
        "name": name,
        **{key: stored[key] for key in ("decisions", "sequences", "languages", "tokens", "models", "size_mb")},
        "store": {key: value for key, value in stored.items() if key in ("path", "source", "reused", "build_s")},
        "goal_s": goal,
        "met": all(found["met"] for found in result["pages"].values()) and "server_errors" not in result,
        **result,
    }


def logged_errors(log: Path) -> list[str]:
    """The distinct exception lines of the tracebacks in a server log (colour codes removed)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", log.read_text())
    found = re.findall(r"^(\w+(?:Error|Exception)\b.*)$", text, flags=re.MULTILINE)
    return list(dict.fromkeys(line.strip() for line in found))[:20]


def versions() -> dict[str, str]:
    import duckdb

    chromium = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    return {
        "python": platform.python_version(),
        "streamlit": streamlit.__version__,
        "duckdb": duckdb.__version__,
        "playwright": importlib.metadata.version("playwright"),
        "chromium": chromium,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each page and kind (default 3)")
    parser.add_argument("--stores", default="demo,big", help="which stores, of demo and big (default both)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a page may take before it fails")
    parser.add_argument("--cache", type=Path, default=CACHE, help=f"where stores are kept (default {CACHE})")
    args = parser.parse_args()
    names = [name.strip() for name in args.stores.split(",") if name.strip()]
    assert names and set(names) <= set(GOALS_S), f"--stores takes demo and/or big, not {args.stores}"
    args.cache.mkdir(parents=True, exist_ok=True)
    (args.cache / ".gitignore").write_text("*\n")

    started = time.perf_counter()
    stores = {}
    for name in names:
        stores[name] = (demo_store if name == "demo" else big_store)(args.cache)
        s = stores[name]
        how = "reused" if s.get("reused") else "copied" if "build_s" not in s else "built"
        build = f", built in {s['build_s']} s" if "build_s" in s else ""
        print(
            f"{name} store ({how}): {s['decisions']:,} routing decisions, {s['sequences']:,} sequences, "
            f"{s['languages']} languages, {s['size_mb']} MB{build}: {s['path']}",
            file=sys.stderr,
        )
    results = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for name in names:
                print(f"{name} store: measuring every page", file=sys.stderr)
                results.append(bench_store(browser, name, stores[name], args))
        finally:
            browser.close()
    print(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count()},
                "versions": versions(),
                "repeats": args.repeats,
                "stores": results,
                "met": all(result["met"] for result in results),
                "total_s": round(time.perf_counter() - started, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
