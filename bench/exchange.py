"""Export and import benchmark: a large run written as Parquet files and read back into a new store.

    python bench/exchange.py --db big.duckdb [--run 1] [--work DIR]

The store must be at this version's schema (open a copy once for writing, e.g. `polyroute upgrade
--db COPY`: that migrates it in place). Each phase runs in a fresh process through the real
command line: `polyroute export`, then `polyroute import` into a new store (which verifies every
checksum, imports in one transaction, and closes the store, so checkpoints it). Per phase: wall
time, CPU time (what a busy shared machine distorts least), routing decisions per second of each,
and the process's peak RSS. Sizes: the Parquet files against the DuckDB file the run came from and
the new store holding only the imported run. Prints one JSON object with the goal of issue 22
(export and import each at least 5M decisions per second) and the machine's load average before
and after each phase: these machines are shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GOAL_DECISIONS_PER_S = 5_000_000

# A phase in a fresh interpreter: its figures as JSON on the last line of stdout.
CHILD = """
import json, resource, sys, time
from pathlib import Path
from polyroute.cli import main

phase, db, run, folder = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
cpu = time.process_time()
started = time.perf_counter()
argv = ["export", "--run", run, "--out", folder] if phase == "export" else ["import", folder]
code = main([*argv, "--db", db])
figures = {"code": code, "wall_s": round(time.perf_counter() - started, 2)}
figures["cpu_s"] = round(time.process_time() - cpu, 2)
figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
figures["n_decisions"] = json.loads((Path(folder) / "manifest.json").read_text())["run"]["n_decisions"]
print()  # after any progress bar
print(json.dumps(figures))
"""


def load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def phase(name: str, db: Path, run: int, folder: Path) -> dict[str, Any]:
    before = load()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, name, str(db), str(run), str(folder)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or '"code": 0' not in done.stdout:
        sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    decisions = figures["n_decisions"]
    return {
        **figures,
        "decisions_per_s": round(decisions / figures["wall_s"]),
        "decisions_per_cpu_s": round(decisions / figures["cpu_s"]),
        "meets_goal": decisions / figures["wall_s"] >= GOAL_DECISIONS_PER_S,
        "load_before": before,
        "load_after": load(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, required=True, help="a store at this version's schema")
    parser.add_argument("--run", type=int, default=1)
    parser.add_argument(
        "--work", type=Path, default=None, help="where the export and the new store go (default: a temp folder)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="exchange-", dir=args.work))
    folder, imported = work / "export", work / "imported.duckdb"
    try:
        exported = phase("export", args.db, args.run, folder)
        files = json.loads((folder / "manifest.json").read_text())["files"]
        parquet = sum(file["bytes"] for file in files)
        loaded = phase("import", imported, args.run, folder)
        db_bytes = args.db.stat().st_size
        result = {
            "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
            "store": str(args.db),
            "run": args.run,
            "goal_decisions_per_s": GOAL_DECISIONS_PER_S,
            "export": exported,
            "import": loaded,
            "sizes_mb": {
                "parquet": round(parquet / 1e6, 1),
                "duckdb_file": round(db_bytes / 1e6, 1),
                "imported_store": round(imported.stat().st_size / 1e6, 1),
                "parquet_per_table": {
                    file["table"]: round(file["bytes"] / 1e6, 1) for file in files if file["bytes"] > 1e5
                },
            },
            "parquet_bytes_per_decision": round(parquet / exported["n_decisions"], 2),
        }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
