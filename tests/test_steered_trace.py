"""Steered traces (`polyroute trace --plan PLAN.json`): the stored routing is the routing the model
computes with the plan's hooks on, it differs from the unsteered run in the plan's band, the plan is
kept in `runs.plan` and reapplied on resume, and plans that cannot apply are refused in one line."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import pytest

from moe_core.backends.hf import HFBackend
from moe_core.errors import ParameterError
from moe_core.records import RoutingBatch
from moe_core.steering import LayerExperts, SteeringPlan
from moe_core.steering.hooks import Steering
from moe_core.synthetic import SyntheticBackend
from polyroute.cli import main
from polyroute.workflows.trace import TraceRequest, resume_trace, start_trace
from tests.conftest import PARALLEL, planted_routing, trace_synthetic
from tests.helpers import STEERED_LAYER, STEERING_PLAN, trace_argv

LANGS = ("eng_Latn", "deu_Latn")
PLAN = STEERING_PLAN
ROUTES = """
SELECT s.item_id, s.lang, r.pos, r.layer, list_sort(list(r.expert)) AS experts
FROM routes r JOIN sequences s USING (run_id, seq_id)
WHERE r.run_id = ? GROUP BY ALL ORDER BY ALL
"""


@pytest.fixture(scope="module")
def model(tiny_model) -> Path:
    return tiny_model("qwen3_moe")


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    return PLAN.save(tmp_path / "plan.json")


def _routes(db: Path, run_id: int) -> dict[tuple[str, str, int, int], list[int]]:
    """(item_id, lang, position, layer) -> the token's top-k experts, sorted, as the store holds them."""
    with duckdb.connect(str(db), read_only=True) as con:
        return {tuple(row[:4]): list(row[4]) for row in con.execute(ROUTES, [run_id]).fetchall()}


def _reference(model: Path, plan: SteeringPlan | None) -> dict[tuple[str, str, int, int], list[int]]:
    """The same keys, computed here: each language's texts through the model, with `plan`'s hooks on
    (this test's own Steering context, not the trace's)."""
    backend = HFBackend(model)
    found: dict[tuple[str, str, int, int], list[int]] = {}
    for lang in LANGS:
        texts = PARALLEL[lang]
        if plan is None:
            batch = backend.trace(texts)
        else:
            with Steering(backend.model, plan):
                batch = backend.trace(texts)
        found |= _keyed(batch, lang, [f"item{i}" for i in range(len(texts))])
    return found


def _keyed(batch: RoutingBatch, lang: str, items: Sequence[str]) -> dict[tuple[str, str, int, int], list[int]]:
    starts = np.concatenate([[0], np.cumsum(batch.seq_lengths)])
    return {
        (item, lang, pos, int(layer)): sorted(int(e) for e in batch.expert_ids[starts[row] + pos, slot])
        for row, item in enumerate(items)
        for pos in range(int(batch.seq_lengths[row]))
        for slot, layer in enumerate(batch.layers)
    }


def _differs(a: dict, b: dict, layer: int) -> bool:
    return any(a[key] != b[key] for key in a if key[3] == layer)


def test_a_steered_trace_stores_the_routing_the_model_computes_with_the_plan_on(
    tmp_path, model, corpus_file, plan_file, capsys
):
    db = tmp_path / "s.duckdb"
    assert main(trace_argv(db, model, corpus_file, ",".join(LANGS), "--plan", str(plan_file))) == 0
    assert "run 1 (steered)" in capsys.readouterr().out
    assert main(trace_argv(db, model, corpus_file, ",".join(LANGS))) == 0
    steered, plain = _routes(db, 1), _routes(db, 2)
    expected = _reference(model, PLAN)
    assert steered == expected
    assert plain == _reference(model, None)
    assert _differs(steered, plain, STEERED_LAYER), "the plan's layer routes differently"
    assert not _differs(steered, plain, 0), "a layer before the band sees the same hidden states"
    with duckdb.connect(str(db), read_only=True) as con:
        stored = con.execute("SELECT plan FROM runs ORDER BY run_id").fetchall()
    assert SteeringPlan.from_json(stored[0][0]) == PLAN and stored[1][0] is None

    capsys.readouterr()
    assert main(["runs", "--db", str(db), "--format", "json"]) == 0
    assert [run["steered"] for run in json.loads(capsys.readouterr().out)] == ["yes", "no"]


class _FailsAfterOneBatch(HFBackend):
    """The hf backend, failing at its second batch: a steered run left half done."""

    batches = 0

    def trace(self, texts, *, save_logits=False, plan=None):
        self.batches += 1
        if self.batches > 1:
            raise RuntimeError("the machine went away")
        return super().trace(texts, save_logits=save_logits, plan=plan)


def test_resuming_a_steered_run_reapplies_its_plan_and_refuses_another(tmp_path, model, corpus_file, capsys):
    db = tmp_path / "s.duckdb"
    request = TraceRequest(
        db=db, model=_FailsAfterOneBatch(model), corpus=corpus_file, langs=list(LANGS), batch_size=2, plan=PLAN
    )
    with pytest.raises(RuntimeError, match="went away"):
        start_trace(request)
    partial = _routes(db, 1)
    assert 0 < len({key[:2] for key in partial}) < 2 * len(PARALLEL["eng_Latn"])

    other = replace(PLAN, strength=2.0)
    with pytest.raises(ParameterError, match="with another plan: a resumed run keeps its own, so leave out plan"):
        resume_trace(db, 1, plan=other)
    other_file = other.save(tmp_path / "other.json")
    capsys.readouterr()
    assert main(["trace", "--resume", "1", "--db", str(db), "--plan", str(other_file)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "leave out --plan" in err, err
    assert _routes(db, 1) == partial, "a refused resume stores nothing"

    assert main(["trace", "--resume", "1", "--db", str(db)]) == 0
    assert _routes(db, 1) == _reference(model, PLAN)


def test_plans_that_cannot_apply_are_refused_in_one_line_and_store_nothing(tmp_path, model, corpus_file, capsys):
    db = tmp_path / "s.duckdb"
    assert main(trace_argv(db, model, corpus_file, "eng_Latn", "--limit", "1")) == 0  # an unsteered run 1
    for_a_deeper_model = SteeringPlan(method="soft", band=(5, 5), experts=(LayerExperts(layer=5, experts=(0,)),))
    for_more_experts = SteeringPlan(method="ablate", band=(1, 1), experts=(LayerExperts(layer=1, experts=(12,)),))
    cases = {
        "deeper.json": (for_a_deeper_model, "--plan does not fit qwen3_moe: the layer band 5-5 ends past"),
        "wider.json": (for_more_experts, "--plan does not fit qwen3_moe: expert 12 of layer 1 does not exist"),
    }
    broken = tmp_path / "broken.json"
    broken.write_text('{"method": "soft", "band": [1]}')
    for name, (plan, message) in cases.items():
        plan.save(tmp_path / name)
        capsys.readouterr()
        assert main(trace_argv(db, model, corpus_file, "eng_Latn", "--plan", str(tmp_path / name))) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
    for argv, message in (
        (trace_argv(db, model, corpus_file, "eng_Latn", "--plan", str(broken)), f"--plan {broken}:"),
        (trace_argv(db, model, corpus_file, "eng_Latn", "--plan", str(tmp_path / "none.json")), "no plan at"),
        (["trace", "--resume", "1", "--db", str(db), "--plan", str(tmp_path / "deeper.json")], "without a plan"),
    ):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
    capsys.readouterr()
    assert main(["runs", "--db", str(db), "--format", "json"]) == 0
    assert [run["run_id"] for run in json.loads(capsys.readouterr().out)] == [1], "no refused run was created"


def test_a_backend_that_cannot_steer_a_trace_refuses_the_plan_before_a_run_begins(tmp_path):
    planted = planted_routing()
    db = tmp_path / "s.duckdb"
    trace_synthetic(db, planted, tmp_path)
    corpus = tmp_path / "synthetic.jsonl"
    request = TraceRequest(db=db, model=SyntheticBackend(planted), corpus=corpus, langs=list(planted.langs), plan=PLAN)
    with pytest.raises(ParameterError, match="the synthetic backend cannot steer a trace: drop plan"):
        start_trace(request)
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (1,)


@pytest.mark.slow
def test_a_trace_on_a_server_refuses_a_plan_in_one_line(tmp_path, model, corpus_file, plan_file, capsys):
    from tests.helpers import serving

    db = tmp_path / "s.duckdb"
    with serving(model) as server:
        argv = ["trace", "--backend", server.url, "--corpus", str(corpus_file), "--langs", "eng_Latn"]
        capsys.readouterr()
        assert main([*argv, "--plan", str(plan_file), "--db", str(db)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the remote backend cannot steer a trace: drop --plan" in err, err
    assert not db.exists() or not _routes(db, 1), "nothing is stored"
