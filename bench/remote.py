"""Remote-backend benchmark: the same ~10k-token trace run locally and through `polyroute serve`
on loopback, end to end into a fresh store each time. Goal: remote / local wall time <= 1.2.

Both variants run the whole job (`start_trace`: plan, trace, Arrow ingest, checkpoint) with the
model already loaded: locally in this process, remotely in a server process started once; both
compute on one thread. The variants are interleaved and repeated (best of N, after a warm-up each; bench/capture.py's
`best_time`). Prints one JSON object.

Run: `make bench` (or `python bench/remote.py --quick`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

from moe_core.backends.hf import HFBackend
from moe_core.corpora import load_corpus
from moe_core.demo import DEMO_MODEL_DIR
from polyroute.workflows.common import quiet_libraries
from polyroute.workflows.trace import TraceRequest, start_trace

# Run as a script (`python bench/remote.py`): the repository root holds the `bench` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.capture import best_time

GOAL = 1.2
TARGET_TOKENS = 10_000
LANGS = ["eng_Latn", "deu_Latn", "rus_Cyrl", "jpn_Jpan", "arb_Arab"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(model: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    argv = [sys.executable, "-m", "polyroute.cli", "serve", "--model", str(model), "--port", str(port)]
    # One compute thread on both sides (torch.set_num_threads(1) here): the comparison is then of
    # the transport, not of two processes' thread pools fighting over two cores.
    process = subprocess.Popen(argv, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("polyroute serve did not come up in 120 s")


def selection_for(backend: HFBackend, target: int, langs: list[str]) -> tuple[int, int]:
    """The smallest per-language item limit at which `langs`' built-in texts hold `target` tokens,
    and their token count then."""
    corpus = load_corpus("builtin", langs)
    limit = 0
    tokens = 0
    while tokens < target:
        limit += 1
        tokens = sum(backend.count_tokens([row.text for row in corpus.select(langs, limit)]))
    return limit, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: ~2k tokens, 1 repeat")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    quiet_libraries()
    torch.set_num_threads(1)
    local = HFBackend(DEMO_MODEL_DIR)
    limit, n_tokens = selection_for(local, 2_000 if args.quick else TARGET_TOKENS, LANGS)
    server, url = start_server(DEMO_MODEL_DIR)
    try:
        with tempfile.TemporaryDirectory() as folder:

            def job(name: str, **where: object) -> float:
                db = Path(folder) / f"{name}.duckdb"
                db.unlink(missing_ok=True)
                request = TraceRequest(db=db, corpus="builtin", langs=LANGS, limit=limit, batch_size=16, **where)  # type: ignore[arg-type]
                return float(start_trace(request).n_tokens)

            times = best_time(
                {"local": lambda: job("local", model=local), "remote": lambda: job("remote", servers=(url,))},
                repeats,
            )
    finally:
        server.kill()
        server.wait()
    ratio = times["remote"] / times["local"]
    print(
        json.dumps(
            {
                "benchmark": "remote trace vs local trace (loopback, demo model, fresh store each run)",
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "languages": LANGS,
                "items_per_language": limit,
                "tokens": n_tokens,
                "batch_size": 16,
                "compute_threads": 1,
                "repeats": repeats,
                "local_s": round(times["local"], 3),
                "remote_s": round(times["remote"], 3),
                "local_tokens_per_s": round(n_tokens / times["local"]),
                "remote_tokens_per_s": round(n_tokens / times["remote"]),
                "ratio_remote_over_local": round(ratio, 3),
                "goal": f"<= {GOAL}",
                "met": ratio <= GOAL,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
