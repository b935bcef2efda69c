"""Scale benchmark: a paper-sized store, every analysis as a fresh CLI process and every page in Chromium.

    python bench/scale.py build --decisions 500000000 --db big.duckdb
    python bench/scale.py measure --db big.duckdb

build: a synthetic trace run of about N routing decisions (48 MoE layers, top-8 of 128 experts,
20 languages, 20-40 tokens a sequence: FLORES+ dev+devtest in 20 languages is about 500M), traced
by `moe_core.synthetic` through the real pipeline and writer (`polyroute.workflows.trace.start_trace`), into
a partial file renamed when complete; a complete store at --db of the same size is reused. Prints
JSON: the store's size per table, bytes per decision (routes alone, the store without router
probabilities, the whole store), and the ingest rate: decisions per second of the writer's own time
(`store.writer.BatchWriter.write`, summaries included, and the run's closing checkpoint), per
second of its CPU time (what a busy shared machine distorts least), and of the whole build (the
synthetic model included, which runs beside the writer on the other core).

measure: every `polyroute analyze` analysis as a fresh process running the real CLI
(`polyroute.cli.main`): `open_to_result_s` (from the CLI call, after the imports, to the printed
result), `process_s` (the whole process) and its peak RSS; then every page of the app in headless
Chromium on a fresh `streamlit run` (first visit and navigation, as bench/app.py measures them).
Prints JSON with the goals of the scale issue and whether each figure meets them. Takes the
machine's load average before and after: these machines are shared. With `--against` (the JSON of
a measure of a smaller store, e.g. 50M decisions) it adds each analysis's growth: its time from call
to result here divided by its time there.

    python bench/scale.py measure --db big50.duckdb --skip-pages > m50.json
    python bench/scale.py measure --db big500.duckdb --against m50.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.analysis import LANGS  # noqa: E402

LAYERS, EXPERTS, TOP_K, TOKENS = 48, 128, 8, (20, 40)
GOALS = {"open_to_result_s": 2.0, "process_s": 4.0, "peak_rss_mb": 1536, "navigate_s": 2.0, "first_visit_s": 5.0}
GROWTH = 2.0  # 500M against 50M, from call to result, for every analysis but consistency (which reads rows)
GROWTH_EXEMPT = {"consistency"}
ANALYSES: dict[str, list[str]] = {
    "divergence": ["divergence"],
    "divergence_hard": ["divergence", "--source", "hard"],  # as an id-only (vLLM) run is analysed
    "divergence_weight": ["divergence", "--source", "weight"],
    "entropy": ["entropy"],
    "consistency": ["consistency"],
    "experts": ["experts", "--tau", "0.3"],
    "shared": ["shared", "--k", "15", "--thr", "0.4"],
    "rise": ["rise", "--target", "tam_Taml", "--budget", "64"],
    "similarity": ["similarity"],
    "isolation": ["isolation"],
    "correlation": ["correlation", "--scores", "{scores}"],
    "expert": ["expert", "--layer", "24", "--expert", "5"],  # reads a bounded sample of one layer's rows
}
# The child: the real CLI in a fresh interpreter, timed after its imports; its figures go to a file.
CHILD = """
import json, sys, time
started = time.perf_counter()
from polyroute.cli import main
imported = time.perf_counter()
code = main(sys.argv[2:])
done = time.perf_counter()
with open('/proc/self/status') as status:
    peak = int(status.read().split('VmHWM:')[1].split()[0]) / 1024
figures = {'code': code, 'imports_s': imported - started, 'open_to_result_s': done - imported, 'peak_rss_mb': peak}
with open(sys.argv[1], 'w') as out:
    json.dump(figures, out)
"""


def load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


# build -----------------------------------------------------------------------------------------


def items_for(decisions: int) -> int:
    """Aligned items that give about `decisions` routing decisions in 20 languages."""
    tokens_per_item = sum(len(members) for members in LANGS.values()) * (TOKENS[0] + TOKENS[1]) / 2
    return max(1, round(decisions / (tokens_per_item * LAYERS * TOP_K)))


def table_sizes(db: Path) -> dict[str, float]:
    """MB of each table's storage blocks (blocks shared by two tables count for both)."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        block = con.execute("SELECT block_size FROM pragma_database_size()").fetchone()[0]  # type: ignore[index]
        tables = [row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        sizes = {}
        for table in tables:
            (blocks,) = con.execute(
                f"SELECT count(DISTINCT block_id) FROM pragma_storage_info('{table}') WHERE block_id >= 0"
            ).fetchone()  # type: ignore[misc]
            sizes[table] = round(blocks * block / 2**20, 1)
        return sizes
    finally:
        con.close()


def stored_run(db: Path) -> dict[str, Any] | None:
    """Run 1 of a complete store: its decisions and sequences, else None."""
    from store import StoreError, open_store
    from store import queries as q

    if not db.is_file():
        return None
    try:
        with open_store(db, read_only=True) as store:
            run = q.get_run(store, 1)
            layout = q.run_layout(store, 1)
    except StoreError:
        return None
    if run is None or layout is None or run.status != "complete" or run.n_stored != run.n_planned:
        return None
    decisions = run.n_tokens * len(layout.layers) * layout.top_k
    return {"decisions": decisions, "tokens": run.n_tokens, "sequences": run.n_stored, "languages": len(layout.langs)}


def build(decisions: int, db: Path) -> dict[str, Any]:
    from moe_core.synthetic import PlantedRouting, SyntheticBackend, synthetic_corpus
    from polyroute.workflows.trace import TraceRequest, start_trace
    from store import writer

    n_items = items_for(decisions)
    found = stored_run(db)
    if found and items_for(found["decisions"]) == n_items:
        return {"reused": True, **found, **sizes_of(db, found["decisions"])}
    langs = tuple(lang for members in LANGS.values() for lang in members)
    families = tuple(family for family, members in LANGS.items() for _ in members)
    plan = PlantedRouting(
        langs=langs, families=families, n_layers=LAYERS, n_experts=EXPERTS, top_k=TOP_K, n_items=n_items,
        tokens_per_seq=TOKENS,
    )  # fmt: skip
    partial = db.with_name(db.name + ".partial")
    corpus = db.with_name(db.name + ".corpus.jsonl")
    for path in (partial, Path(f"{partial}.wal"), corpus):
        path.unlink(missing_ok=True)
    keys = ("item_id", "lang", "text")
    rows = synthetic_corpus(plan)
    corpus.write_text("".join(json.dumps(dict(zip(keys, row, strict=True))) + "\n" for row in rows))
    writing = [0.0, 0.0]  # wall seconds in the writer, CPU seconds of its thread (DuckDB runs in it: threads=1)
    write = writer.BatchWriter.write

    def timed_write(self: writer.BatchWriter, batches: Any) -> None:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            write(self, batches)
        finally:
            writing[0] += time.perf_counter() - started
            writing[1] += time.thread_time() - cpu

    fold = writer.checkpoint

    def timed_checkpoint(store: Any) -> None:  # the run's closing checkpoint compresses what it wrote
        started, cpu = time.perf_counter(), time.process_time()  # DuckDB's threads: the model is done
        try:
            fold(store)
        finally:
            writing[0] += time.perf_counter() - started
            writing[1] += time.process_time() - cpu

    writer.BatchWriter.write = timed_write  # type: ignore[method-assign]  # the writer's own time
    writer.checkpoint = timed_checkpoint
    load_before, started = load(), time.perf_counter()
    request = TraceRequest(db=partial, model=SyntheticBackend(plan), corpus=corpus, langs=list(langs), batch_size=64)
    outcome = start_trace(request)
    build_s = time.perf_counter() - started
    corpus.unlink()
    db.unlink(missing_ok=True)
    partial.rename(db)
    made = outcome.n_tokens * LAYERS * TOP_K
    return {
        "reused": False,
        "decisions": made,
        "tokens": outcome.n_tokens,
        "sequences": outcome.n_sequences,
        "languages": len(langs),
        "build_s": round(build_s, 1),
        "writer_s": round(writing[0], 1),
        "writer_cpu_s": round(writing[1], 1),
        "ingest_decisions_per_s": round(made / writing[0]),
        "ingest_decisions_per_cpu_s": round(made / writing[1]),
        "build_decisions_per_s": round(made / build_s),
        "load_before": load_before,
        "load_after": load(),
        **sizes_of(db, made),
    }


def sizes_of(db: Path, decisions: int) -> dict[str, Any]:
    sizes = table_sizes(db)
    file_mb = db.stat().st_size / 2**20
    routes_mb = sizes.get("route_lists", 0.0)
    probs_mb = sizes.get("router_probs", 0.0)
    per = 2**20 / decisions
    return {
        "file_mb": round(file_mb, 1),
        "tables_mb": sizes,
        "bytes_per_decision": {
            "routes": round(routes_mb * per, 2),
            "store_without_router_probs": round((file_mb - probs_mb) * per, 2),
            "store": round(file_mb * per, 2),
        },
    }


# measure ---------------------------------------------------------------------------------------


def run_analysis(name: str, db: Path, scores: Path, figures: Path) -> dict[str, Any]:
    argv = ["analyze", *(arg.format(scores=scores) for arg in ANALYSES[name]), "--run", "1", "--db", str(db)]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(figures), *argv], cwd=ROOT, capture_output=True, text=True, check=False
    )
    process_s = time.perf_counter() - started
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]}
    child = json.loads(figures.read_text())
    return {
        "open_to_result_s": round(child["open_to_result_s"], 3),
        "process_s": round(process_s, 3),
        "imports_s": round(child["imports_s"], 3),
        "peak_rss_mb": round(child["peak_rss_mb"]),
    }


def measure_analyses(db: Path, repeats: int) -> dict[str, Any]:
    import tempfile

    from store import open_store
    from store import queries as q

    with open_store(db, read_only=True) as store:
        layout = q.run_layout(store, 1)
    assert layout is not None, f"{db} has no run 1"
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        scores = Path(tmp) / "scores.json"  # as a task evaluation would give them: one number per language
        scores.write_text(json.dumps({lang: 1.0 - 0.01 * i for i, lang in enumerate(layout.langs)}))
        for name in ANALYSES:
            runs = [run_analysis(name, db, scores, Path(tmp) / "figures.json") for _ in range(repeats)]
            failed = [run["error"] for run in runs if "error" in run]
            if failed:
                results[name] = {"error": failed[0]}
                continue
            best = {key: min(run[key] for run in runs) for key in ("open_to_result_s", "process_s", "imports_s")}
            peak = max(run["peak_rss_mb"] for run in runs)
            results[name] = {
                **best,
                "first_open_to_result_s": runs[0]["open_to_result_s"],
                "peak_rss_mb": peak,
                "met": best["open_to_result_s"] <= GOALS["open_to_result_s"]
                and best["process_s"] <= GOALS["process_s"]
                and peak <= GOALS["peak_rss_mb"],
            }
            print(f"  {name}: {results[name]}", file=sys.stderr)
    return results


def growth(analyses: dict[str, Any], smaller: dict[str, Any], decisions: int) -> dict[str, Any]:
    """Each analysis's time from call to result here over its time in `smaller` (a measure's JSON)."""
    ratios: dict[str, Any] = {}
    for name, here in analyses.items():
        there = smaller["analyses"].get(name, {})
        if "open_to_result_s" not in here or "open_to_result_s" not in there:
            continue
        ratio = round(here["open_to_result_s"] / there["open_to_result_s"], 2)
        ratios[name] = {"ratio": ratio, "met": ratio <= GROWTH or name in GROWTH_EXEMPT}
    return {"decisions": decisions, "against_decisions": smaller["store"]["decisions"], "goal": GROWTH, **ratios}


def measure_pages(db: Path, repeats: int, timeout_s: float) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from bench.app import measure_app
    from tests.stwait import CHROMIUM, CHROMIUM_ARGS, streamlit_server

    log = db.with_name(db.name + ".streamlit.log")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            started = time.perf_counter()
            with streamlit_server({"POLYROUTE_DB": str(db)}, log) as url:
                server_start_s = round(time.perf_counter() - started, 2)
                found = measure_app(browser, url, repeats, timeout_s)
        finally:
            browser.close()
    for page in found["pages"].values():
        worst = {kind: page[kind]["max"] for kind in ("navigate_s", "first_visit_s")}
        page["met"] = not page["errors"] and all(value is not None and value <= GOALS[k] for k, value in worst.items())
    return {"server_start_s": server_start_s, **found}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="build (or reuse) a synthetic store of about N decisions")
    make.add_argument("--decisions", type=int, default=500_000_000)
    make.add_argument("--db", type=Path, required=True)
    check = commands.add_parser("measure", help="time every analysis and page on a store")
    check.add_argument("--db", type=Path, required=True)
    check.add_argument("--repeats", type=int, default=3, help="runs of each analysis, visits of each page")
    check.add_argument("--timeout", type=float, default=120.0, help="seconds a page may take before it fails")
    check.add_argument("--skip-pages", action="store_true", help="only the analyses")
    check.add_argument("--against", type=Path, help="a measure's JSON of a smaller store: adds each analysis's growth")
    args = parser.parse_args()
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    if args.command == "build":
        print(json.dumps({"machine": machine, "store": build(args.decisions, args.db)}, indent=2))
        return
    facts = stored_run(args.db)
    assert facts is not None, f"{args.db} is not a complete store: build it with `bench/scale.py build`"
    smaller = json.loads(args.against.read_text()) if args.against else None
    load_before = load()
    analyses = measure_analyses(args.db, args.repeats)
    pages = None if args.skip_pages else measure_pages(args.db, args.repeats, args.timeout)
    print(
        json.dumps(
            {
                "machine": machine,
                "load_before": load_before,
                "load_after": load(),
                "store": {**facts, **sizes_of(args.db, facts["decisions"])},
                "goals": GOALS,
                "analyses": analyses,
                "growth": None if smaller is None else growth(analyses, smaller, facts["decisions"]),
                "pages": pages,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
