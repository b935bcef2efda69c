"""Analysis benchmark: every `polyroute analyze` analysis from store to result on a large store.

Builds (or reuses, with --db) a synthetic store of about 50M routing decisions: 48 layers, top-8
of 128 experts, 130k tokens in 20 languages, traced by `moe_core.synthetic` through the real
pipeline and writer. Then runs each analysis in a fresh process, as `polyroute analyze` would:
open the store, read the inputs through `store.queries`, compute, build the result tables.

Prints one JSON object: per analysis the best and first of N wall times (seconds, goal <= 2 s on
2 cores) and the process's peak resident memory, in all and beyond its imports.

Run: `python bench/analysis.py` (about a minute to build the store), or `--quick` for a small one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GOAL_S = 2.0
LANGS = {
    "Indo-European": ("eng_Latn", "deu_Latn", "fra_Latn", "rus_Cyrl"),
    "Dravidian": ("tam_Taml", "tel_Telu", "kan_Knda", "mal_Mlym"),
    "Turkic": ("tur_Latn", "kaz_Cyrl", "uzn_Latn", "azj_Latn"),
    "Afro-Asiatic": ("arb_Arab", "heb_Hebr", "amh_Ethi", "hau_Latn"),
    "Austronesian": ("ind_Latn", "zsm_Latn", "tgl_Latn", "jav_Latn"),
}
ANALYSES: dict[str, dict[str, Any]] = {
    "divergence": {},
    # As for an id-only trace (vLLM): per-sequence activation frequencies from the streamed top-k ids.
    "divergence_hard": {},
    "entropy": {},
    "consistency": {},
    "experts": {"tau": 0.3},
    "shared": {"k": 15, "thr": 0.4},
    "rise": {"target": "tam_Taml", "budget": 64},
    "similarity": {},
    "isolation": {},
    "correlation": {},
}


def build_store(db: Path, quick: bool) -> dict[str, Any]:
    size = {"n_layers": 8, "n_items": 20} if quick else {"n_layers": 48, "n_items": 217}
    return build_synthetic_store(db, n_experts=128, **size)


def build_synthetic_store(db: Path, *, n_layers: int, n_items: int, n_experts: int, top_k: int = 8) -> dict[str, Any]:
    """A store at `db` of one synthetic trace run: `n_items` aligned items in every language of LANGS,
    20-40 tokens each, routed top-`top_k` of `n_experts` in `n_layers` layers (bench/app.py builds one too)."""
    from moe_core.synthetic import PlantedRouting, SyntheticBackend, synthetic_corpus
    from polyroute.workflows.trace import TraceRequest, start_trace

    langs = tuple(lang for members in LANGS.values() for lang in members)
    families = tuple(family for family, members in LANGS.items() for _ in members)
    plan = PlantedRouting(
        langs=langs, families=families, n_layers=n_layers, n_experts=n_experts, top_k=top_k,
        n_items=n_items, tokens_per_seq=(20, 40),
    )  # fmt: skip
    rows = synthetic_corpus(plan)
    corpus = db.with_suffix(".jsonl")
    keys = ("item_id", "lang", "text")
    corpus.write_text("".join(json.dumps(dict(zip(keys, row, strict=True))) + "\n" for row in rows))
    started = time.perf_counter()
    request = TraceRequest(db=db, model=SyntheticBackend(plan), corpus=corpus, langs=list(langs), batch_size=64)
    outcome = start_trace(request)
    return {
        "tokens": outcome.n_tokens,
        "decisions": outcome.n_tokens * plan.n_layers * plan.top_k,
        "layers": plan.n_layers,
        "experts": plan.n_experts,
        "top_k": plan.top_k,
        "languages": len(langs),
        "sequences": outcome.n_sequences,
        "build_s": round(time.perf_counter() - started, 1),
        "store_mb": round(db.stat().st_size / 2**20, 1),
    }


def run_one(name: str, db: Path) -> dict[str, float]:
    """One analysis in this process: store to result. Prints wall time and memory beyond baseline."""
    from polyroute import analyses
    from polyroute.run_data import RunData, Selection
    from store import open_store

    baseline = peak_rss_mb()
    params = dict(ANALYSES[name])
    started = time.perf_counter()
    with open_store(db, read_only=True) as store:
        data = RunData(store, 1, Selection(source="hard" if name.endswith("_hard") else "auto"))
        if name == "correlation":
            # Scores as a task evaluation would give them: one number per language.
            params["scores"] = {lang: 1.0 - 0.01 * i for i, lang in enumerate(data.langs)}
        result = getattr(analyses, f"analyze_{name.removesuffix('_hard')}")(data, **params)
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    assert result.tables[0].rows, name
    return {"seconds": seconds, "peak_rss_mb": peak, "extra_rss_mb": peak - baseline}


def peak_rss_mb() -> float:
    """This process's peak resident memory. Not getrusage: Linux carries ru_maxrss across exec, so a
    child would report the benchmark parent's peak; VmHWM starts afresh with the new program."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def measure(name: str, db: Path, repeats: int) -> dict[str, Any]:
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, __file__, "--one", name, "--db", str(db)], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(out.stdout))
    best = min(run["seconds"] for run in runs)
    return {
        "best_s": round(best, 3),
        "first_s": round(runs[0]["seconds"], 3),
        "peak_rss_mb": round(max(run["peak_rss_mb"] for run in runs)),
        "rss_beyond_imports_mb": round(max(run["extra_rss_mb"] for run in runs)),
        "meets_goal": best <= GOAL_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="reuse this store (its run 1) instead of building one")
    parser.add_argument("--quick", action="store_true", help="a small store, for a smoke run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.db)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "bench.duckdb"
        store = build_store(db, args.quick) if args.db is None else {"reused": str(db)}
        results = {name: measure(name, db, args.repeats) for name in ANALYSES}
    print(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "store": store,
                "goal_s": GOAL_S,
                "analyses": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
