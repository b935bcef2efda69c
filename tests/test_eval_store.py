"""Evaluation rows in the store: written all or nothing, read back by run."""

from __future__ import annotations

import pytest

from moe_core.records import GeneratedAnswer, ModelInfo, TaskScore
from store import StoreError, open_store
from store import queries as q
from store import writer as w


def _model() -> ModelInfo:
    return ModelInfo(
        model_id="m", arch="Qwen3MoeForCausalLM", family="qwen3_moe", source="/m", n_layers=2, moe_layers=(0, 1),
        n_experts=4, top_k=2, n_shared_experts=0, scoring="softmax->topk", soft_rule="softmax", weight_bound=1.0,
        config_hash="h",
    )  # fmt: skip


def test_scores_and_answers_round_trip_and_a_repeat_writes_nothing(tmp_path):
    scores = [
        TaskScore(task="mgsm", lang="deu_Latn", variant="unsteered", metric="accuracy", value=0.5, n=4),
        TaskScore(task="mgsm", lang="deu_Latn", variant="plan", metric="accuracy", value=0.75, n=4, plan='{"a": 1}'),
    ]
    answers = [GeneratedAnswer(variant="plan", item_id="1", lang="deu_Latn", prompt="2+2?", output="4")]
    with open_store(tmp_path / "s.duckdb") as store:
        w.ensure_model(store, _model())
        run = w.create_run(
            store, kind="evaluation", model_id="m", corpus_id=None, backend="hf", params={}, n_planned=0,
            weight_bound=1.0,
        )  # fmt: skip
        w.write_evaluation(store, run, scores, answers)
        found = q.eval_results(store, run)
        assert [(r.variant, r.value, r.plan) for r in found] == [("plan", 0.75, '{"a": 1}'), ("unsteered", 0.5, None)]
        assert q.generated_answers(store, run, "deu_Latn", "plan") == [("1", "2+2?", "4")]
        with pytest.raises(StoreError):
            w.write_evaluation(store, run, scores[:1], answers)  # the answer is already there: nothing is written
        assert len(q.eval_results(store)) == 2
