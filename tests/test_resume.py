"""A trace run killed with SIGKILL mid-way, then resumed, ends with every sequence stored exactly once,
and the store never holds a half-written sequence."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import duckdb
import pytest

from moe_core.tiny import build_tiny_model
from polyroute.cli import main
from tests.helpers import PROGRESS, assert_summaries_match_a_rebuild, repeated_corpus

ROUTES_BY_TEXT = """
SELECT s.item_id, s.lang, r.pos, r.layer, r.rank, r.expert
FROM routes r JOIN sequences s USING (run_id, seq_id) ORDER BY ALL
"""


def _check_whole(con: duckdb.DuckDBPyConnection, layers: int, k: int) -> int:
    """Every stored sequence has all its tokens, routes and soft distributions; returns how many."""
    broken = con.execute(
        """
        SELECT s.seq_id FROM sequences s
        LEFT JOIN (SELECT seq_id, count(*) n FROM tokens GROUP BY 1) t USING (seq_id)
        LEFT JOIN (SELECT seq_id, count(*) n FROM routes GROUP BY 1) r USING (seq_id)
        LEFT JOIN (SELECT seq_id, count(*) n FROM router_probs GROUP BY 1) p USING (seq_id)
        WHERE t.n IS DISTINCT FROM s.n_tokens OR r.n IS DISTINCT FROM s.n_tokens * ? OR p.n IS DISTINCT FROM ?
        """,
        [layers * k, layers],
    ).fetchall()
    assert broken == []
    orphans = con.execute(
        "SELECT count(*) FROM route_lists WHERE seq_id NOT IN (SELECT seq_id FROM sequences)"
    ).fetchone()[0]
    assert orphans == 0
    return con.execute("SELECT count(*) FROM sequences").fetchone()[0]


@pytest.mark.slow
def test_sigkill_then_resume_stores_every_sequence_once(tmp_path):
    model = build_tiny_model("qwen3_moe", tmp_path / "model", layers=6, hidden=256, experts=16, top_k=4)
    corpus = repeated_corpus(tmp_path / "corpus.jsonl", copies=20)  # 360 sequences
    db = tmp_path / "store.duckdb"
    args = ["--model", str(model), "--corpus", str(corpus), "--langs", "eng_Latn,deu_Latn,rus_Cyrl"]
    command = [sys.executable, "-m", "polyroute.cli", "trace", *args, "--db", str(db), "--batch-size", "1"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert process.stderr is not None
    os.set_blocking(process.stderr.fileno(), False)
    seen, deadline, done = b"", time.monotonic() + 240, 0
    while time.monotonic() < deadline and process.poll() is None:
        seen += process.stderr.read() or b""
        counts = PROGRESS.findall(seen)
        done, total = map(int, counts[-1]) if counts else (0, 1)
        if 0 < done < total:  # the first groups are committed, the rest still to come
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert process.wait(timeout=30) == -signal.SIGKILL, f"the run ended before it could be killed: {seen[-300:]!r}"

    con = duckdb.connect(str(db), read_only=True)
    stored = _check_whole(con, layers=6, k=4)
    assert 0 < stored < 360
    assert con.execute("SELECT status FROM runs WHERE run_id = 1").fetchone()[0] == "running"
    con.close()
    assert_summaries_match_a_rebuild(db, 1, tmp_path)  # the killed run's summaries are of what it stored

    assert main(["trace", "--resume", "1", "--db", str(db)]) == 0
    con = duckdb.connect(str(db), read_only=True)
    assert _check_whole(con, layers=6, k=4) == 360
    ids = [row[0] for row in con.execute("SELECT seq_id FROM sequences ORDER BY seq_id").fetchall()]
    assert ids == list(range(360))
    assert con.execute("SELECT status FROM runs WHERE run_id = 1").fetchone()[0] == "complete"
    resumed = con.execute(ROUTES_BY_TEXT).fetchall()
    con.close()
    assert_summaries_match_a_rebuild(db, 1, tmp_path)

    # The same run uninterrupted stores exactly the same routing.
    fresh = tmp_path / "fresh.duckdb"
    assert main(["trace", *args, "--db", str(fresh), "--batch-size", "4"]) == 0
    con = duckdb.connect(str(fresh), read_only=True)
    assert con.execute(ROUTES_BY_TEXT).fetchall() == resumed

    assert main(["trace", "--resume", "1", "--db", str(db)]) == 0  # nothing left to do
