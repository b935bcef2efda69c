"""The remote backend against real `polyroute serve` processes on this machine (hf backend, tiny
model): the same store as a local trace, the same steered generations, sharding over two servers,
the token rule, bad requests, and a server killed mid-trace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import numpy as np
import pytest

from moe_core.backends.base import GenerationParams
from moe_core.backends.hf import HFBackend
from moe_core.backends.remote import RemoteBackend
from moe_core.errors import RemoteError
from moe_core.steering import LayerExperts, SteeringPlan
from polyroute.cli import main
from polyroute.workflows.trace import TraceRequest, resume_trace, start_trace
from store import open_store
from store import queries as q
from tests.helpers import Served, mgsm_copy, serving

pytestmark = pytest.mark.slow
TOKEN = "s3cret-token"
ROUTING_TABLES = ("sequences", "tokens", "route_lists", "router_probs", "router_logits")


@pytest.fixture(scope="module")
def model(tiny_model) -> Path:
    return tiny_model("qwen3_moe")


@pytest.fixture(scope="module")
def server(model) -> Iterator[Served]:
    with serving(model) as served:
        yield served


def _routing(db: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every routing table's rows without run ids: equal = the same traces."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.execute(f"SELECT * EXCLUDE (run_id) FROM {t} ORDER BY ALL").fetchall() for t in ROUTING_TABLES}
    finally:
        con.close()


def _trace(db: Path, corpus: Path | str, langs: list[str], *, model: Path | None = None, **extra) -> int:
    request = TraceRequest(db=db, model=model, corpus=corpus, langs=langs, save_logits=True, **extra)
    return start_trace(request).run_id


def test_a_remote_trace_stores_exactly_what_a_local_trace_stores(server, model, corpus_file, tmp_path):
    langs = ["eng_Latn", "deu_Latn", "rus_Cyrl"]
    _trace(tmp_path / "local.duckdb", corpus_file, langs, model=model, batch_size=4)
    run_id = _trace(tmp_path / "remote.duckdb", corpus_file, langs, servers=(server.url,), batch_size=4)
    local, remote = _routing(tmp_path / "local.duckdb"), _routing(tmp_path / "remote.duckdb")
    assert all(remote[table] for table in ROUTING_TABLES)
    assert remote == local
    with open_store(tmp_path / "remote.duckdb", read_only=True) as store:
        run = q.get_run(store, run_id)
    assert run is not None and run.backend == "remote" and run.params["servers"] == [server.url]
    assert run.status == "complete" and run.n_stored == run.n_planned == 18


def test_remote_steered_generation_equals_local(server, model):
    plan = SteeringPlan(
        method="soft", band=(0, 1), experts=(LayerExperts(layer=0, experts=(1,)), LayerExperts(layer=1, experts=(2,))),
        strength=4.0,
    )  # fmt: skip
    prompts = ["The weather is lovely today.", "Пожалуйста, введите адрес."]
    params = GenerationParams(max_new_tokens=6)
    local, remote = HFBackend(model), RemoteBackend(server.url)
    for steering in (None, plan):
        here, there = local.generate(prompts, params, steering), remote.generate(prompts, params, steering)
        assert there.texts == here.texts
        for field in ("seq_lengths", "token_ids", "special", "generated", "expert_ids", "expert_weights"):
            np.testing.assert_array_equal(getattr(there.routing, field), getattr(here.routing, field), field)
        np.testing.assert_array_equal(there.routing.router_probs, here.routing.router_probs)
        assert there.routing.pieces == here.routing.pieces
    plain = remote.generate(prompts, params)
    steered = remote.generate(prompts, params, plan)
    assert not np.array_equal(plain.routing.expert_ids, steered.routing.expert_ids)  # the plan really steered


def test_two_servers_sharing_a_run_by_language_store_what_one_server_stores(server, model, corpus_file, tmp_path):
    # The second server binds every interface, so it also proves a token-guarded server works.
    langs = ["eng_Latn", "deu_Latn", "rus_Cyrl"]
    with serving(model, "--token", TOKEN, host="0.0.0.0") as second:
        # One sequence per batch: a batch's padding width then cannot differ between the two layouts.
        _trace(tmp_path / "one.duckdb", corpus_file, langs, servers=(server.url,), batch_size=1)
        run_id = _trace(
            tmp_path / "two.duckdb", corpus_file, langs, servers=(server.url, second.url), token=TOKEN, batch_size=1
        )
    assert _routing(tmp_path / "two.duckdb") == _routing(tmp_path / "one.duckdb")
    with open_store(tmp_path / "two.duckdb", read_only=True) as store:
        run = q.get_run(store, run_id)
    assert run is not None and run.params["servers"] == [server.url, second.url] and run.status == "complete"


def test_a_server_bound_beyond_loopback_needs_the_token(model, tmp_path, corpus_file):
    refused = subprocess.run(
        [sys.executable, "-m", "polyroute.cli", "serve", "--model", str(model), "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "POLYROUTE_TOKEN": ""},
    )  # fmt: skip
    assert refused.returncode == 2 and "pass --token" in refused.stderr
    with serving(model, "--token", TOKEN, host="0.0.0.0") as served:
        assert httpx.get(f"{served.url}/health").status_code == 200  # health needs no token
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            answer = httpx.post(f"{served.url}/trace", json={"batches": [["Hello."]]}, headers=headers)
            assert answer.status_code == 401 and "token" in answer.json()["error"]
            assert httpx.get(f"{served.url}/info", headers=headers).status_code == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{served.url}/info", headers=good).json()["model"]["n_experts"] == 8
        with pytest.raises(RemoteError, match="refused the token"):
            RemoteBackend(served.url, token="wrong")
        db = tmp_path / "refused.duckdb"
        argv = ["trace", "--db", str(db), "--corpus", str(corpus_file), "--langs", "eng_Latn"]
        assert main([*argv, "--backend", served.url, "--token", "wrong"]) == 2
        assert not db.exists()  # refused before the store was touched
        assert main([*argv, "--backend", served.url, "--token", TOKEN]) == 0


def test_bad_requests_are_refused_and_the_server_keeps_serving(model):
    with serving(model, "--max-request-mb", "0.01", "--max-texts", "5", "--max-new-tokens", "8") as served:
        url = served.url
        short = {"max_new_tokens": 2}
        cases = [
            ("/trace", {"content": b"{not json"}, 400, "not JSON"),
            ("/trace", {"json": ["a list"]}, 422, "JSON object"),
            ("/trace", {"json": {"batches": []}}, 422, "non-empty"),
            ("/trace", {"json": {"batches": [["ok", 3]]}}, 422, "list of strings"),
            ("/trace", {"json": {"batches": [["ok"]], "save_logits": "yes"}}, 422, "true or false"),
            ("/trace", {"json": {"batches": [["a"] * 6]}}, 413, "at most 5"),
            ("/trace", {"json": {"batches": [["x" * 20_000]]}}, 413, "larger than"),
            ("/trace", {"json": {"batches": [[""]]}}, 422, "empty"),
            ("/count_tokens", {"json": {"texts": "one"}}, 422, "list of strings"),
            ("/generate", {"json": {"prompts": ["Hi"], "params": {"max_new_tokens": 9}}}, 422, "max_new_tokens"),
            ("/generate", {"json": {"prompts": ["Hi"], "params": {"beams": 2}}}, 422, "unknown generation"),
            ("/generate", {"json": {"prompts": ["Hi"], "params": {"do_sample": 1}}}, 422, "must be a bool"),
            (
                "/generate",
                {"json": {"prompts": ["Hi"], "params": short, "plan": {"method": "soft"}}},
                422,
                "not a steering plan",
            ),
            ("/generate", {"json": {"prompts": ["Hi"], "params": short, "plan": _far_plan()}}, 422, "does not exist"),
        ]
        for path, body, status, message in cases:
            answer = httpx.post(url + path, **body)
            assert (answer.status_code, message in answer.json()["error"]) == (status, True), (path, answer.text)
        assert httpx.get(f"{url}/info").status_code == 200
        remote = RemoteBackend(url)
        assert remote.trace(["Still serving."]).n_sequences == 1
        with pytest.raises(RemoteError, match="more than the server"):
            list(remote.trace_batches([["a"] * 6]))
        # Batches that fit go out several requests at a time, within the limits.
        assert [b.n_sequences for b in remote.trace_batches([["a", "b", "c"], ["d", "e"], ["f"]])] == [3, 2, 1]


def _far_plan() -> dict[str, object]:
    return {"method": "soft", "band": [0, 1], "strength": 1.0, "experts": [{"layer": 0, "experts": [99]}]}


def test_a_server_killed_mid_trace_leaves_whole_sequences_and_a_resumable_run(
    server, model, corpus_file, tmp_path, monkeypatch
):
    db = tmp_path / "killed.duckdb"
    langs = ["eng_Latn", "deu_Latn", "rus_Cyrl"]
    # Four texts per request: the server can be at most one request ahead of what the client read.
    with serving(model, "--max-texts", "4") as doomed:
        received = RemoteBackend.trace_batches

        def kill_after_the_first_batch(self, batches, *, save_logits=False, plan=None):
            for index, batch in enumerate(received(self, batches, save_logits=save_logits, plan=plan)):
                if index == 0:
                    doomed.process.send_signal(signal.SIGKILL)
                    doomed.process.wait()
                yield batch

        monkeypatch.setattr(RemoteBackend, "trace_batches", kill_after_the_first_batch)
        request = TraceRequest(db=db, corpus=corpus_file, langs=langs, servers=(doomed.url,), batch_size=1)
        with pytest.raises(RemoteError, match="stopped"):
            start_trace(request)
        monkeypatch.undo()
    with open_store(db, read_only=True) as store:
        (run,) = q.list_runs(store)
        assert run.status == "failed" and 1 <= run.n_stored <= 4 < run.n_planned == 18
    _assert_every_sequence_whole(db)
    # The dead server's URL is recorded; resuming on another server with the same model finishes the run.
    with pytest.raises(RemoteError, match="cannot reach"):
        resume_trace(db, run.run_id)
    resume_trace(db, run.run_id, servers=(server.url,))
    with open_store(db, read_only=True) as store:
        run = q.get_run(store, run.run_id)
        assert run is not None and run.status == "complete" and run.n_stored == run.n_planned
    _assert_every_sequence_whole(db)
    local = tmp_path / "local.duckdb"
    start_trace(TraceRequest(db=local, model=model, corpus=corpus_file, langs=langs, batch_size=1))
    assert _routing(db) == _routing(local)


def _assert_every_sequence_whole(db: Path) -> None:
    con = duckdb.connect(str(db), read_only=True)
    try:
        info = con.execute("SELECT n_layers, top_k FROM models").fetchone()
        rows = con.execute(
            """SELECT s.seq_id, s.n_tokens,
                      (SELECT count(*) FROM tokens t WHERE t.run_id = s.run_id AND t.seq_id = s.seq_id),
                      (SELECT count(*) FROM routes r WHERE r.run_id = s.run_id AND r.seq_id = s.seq_id)
               FROM sequences s"""
        ).fetchall()
    finally:
        con.close()
    assert info is not None and rows
    n_layers, top_k = info
    for seq_id, n_tokens, n_token_rows, n_routes in rows:
        assert (n_token_rows, n_routes) == (n_tokens, n_tokens * n_layers * top_k), seq_id


def test_the_cli_traces_steers_and_evaluates_on_a_server(server, model, corpus_file, tmp_path, capsys):
    db = tmp_path / "cli.duckdb"
    argv = ["trace", "--db", str(db), "--backend", server.url, "--corpus", str(corpus_file), "--langs", "eng_Latn"]
    assert main(argv) == 0
    assert main([*argv, "--model", str(model)]) == 2
    assert "not both" in capsys.readouterr().err
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(_far_plan() | {"experts": [{"layer": 0, "experts": [1]}]}))
    steer = ["steer", "--backend", server.url, "--plan", str(plan), "--prompt", "Hello", "--max-new-tokens", "3"]
    assert main(steer) == 0
    out = capsys.readouterr().out
    assert "unsteered:" in out and "steered:" in out
    assert main([*steer[:2], f"{server.url},{server.url}", *steer[3:]]) == 2
    assert "runs on one" in capsys.readouterr().err
    mgsm = mgsm_copy(tmp_path / "mgsm")
    evaluate = ["eval", "--task", "mgsm", "--corpus", f"mgsm:{mgsm}", "--langs", "eng_Latn,deu_Latn", "--db", str(db)]
    assert main([*evaluate, "--backend", server.url, "--plan", str(plan), "--max-new-tokens", "4"]) == 0
    assert main([*evaluate, "--model", str(model), "--plan", str(plan), "--max-new-tokens", "4"]) == 0
    with open_store(db, read_only=True) as store:
        remote_run, local_run = (run for run in q.list_runs(store) if run.kind == "evaluation")
        assert remote_run.backend == "remote" and local_run.backend == "hf"
        answers = [
            [
                (
                    score.lang,
                    score.variant,
                    score.metric,
                    score.value,
                    q.generated_answers(store, run.run_id, score.lang, score.variant),
                )
                for score in q.eval_results(store, run.run_id)
            ]
            for run in (remote_run, local_run)
        ]
    assert len(answers[0]) >= 4 and answers[0] == answers[1]  # two languages, unsteered and steered
