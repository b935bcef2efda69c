"""Evaluation tasks: scoring on hand-made outputs, prompts from benchmark copies in their real
formats, sweep variants, and `polyroute eval` end to end on a tiny real model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from moe_core.analysis.rise import depth_zones
from moe_core.corpora import load_corpus
from moe_core.corpora.base import TextRow
from moe_core.errors import CorpusError, PolyrouteError, flag
from moe_core.evaluation.metrics import chrf_corpus
from moe_core.evaluation.sweeps import build_variants, parse_sweep, window_plan
from moe_core.evaluation.tasks import BUILTIN_TASK, TASKS, check_fields, get_task, opening, read_items, task_corpus
from moe_core.steering import LayerExperts, PlanError, SteeringPlan
from moe_core.steering.presets import preset_for
from polyroute.cli import main
from polyroute.cli.eval import TASK_NAMES
from store import open_store
from store import queries as q
from tests.helpers import belebele_copy, mgsm_copy, run_id_of


def _row(lang: str, item: str = "1", **fields: object) -> TextRow:
    return TextRow(item, lang, "prompt", "test", fields)


def test_math_scores_the_final_number_and_the_language():
    rows = [_row("deu_Latn", "1", answer="12"), _row("deu_Latn", "2", answer="8"), _row("deu_Latn", "3", answer="5")]
    outputs = [
        "Sie hat 3 mal 4 Enten, also insgesamt \\boxed{12} Enten.",
        "Die Antwort ist 7.",
        "12",  # digits only: no evidence of German
    ]
    scores = TASKS["mgsm"].score(outputs, rows)
    assert scores["accuracy"] == pytest.approx(1 / 3)
    assert scores["language_consistency"] == pytest.approx(2 / 3)
    assert TASKS["polymath"].score(["so the answer is \\boxed{8}"], [_row("eng_Latn", answer="8")])["accuracy"] == 1


def test_belebele_scores_the_letter_named():
    rows = [_row("eng_Latn", str(i), answer=str(a)) for i, a in enumerate((2, 1, 4, 3))]
    outputs = ["The answer is (B)", "C. Paris", " D", "I do not know"]
    assert TASKS["belebele"].score(outputs, rows) == {"accuracy": 0.5}


def test_flores_chrf_is_the_corpus_chrf_of_the_first_lines():
    refs = ["Die Katze schläft auf der Matte.", "Es regnete die ganze Nacht."]
    rows = [_row("deu_Latn", str(i), text=ref) for i, ref in enumerate(refs)]
    outputs = ["Die Katze schläft auf dem Teppich.\nEnglish: next sentence", "It rained all night."]
    scores = TASKS["flores"].score(outputs, rows)
    expected = chrf_corpus(["Die Katze schläft auf dem Teppich.", "It rained all night."], [[r] for r in refs])
    assert scores["chrf++"] == pytest.approx(expected) and 0 < expected < 100
    assert scores["language_consistency"] == 0.5


def test_xquad_exact_match_and_f1_against_every_gold():
    rows = [_row("eng_Latn", "1", answers=["Denver Broncos", "the Broncos"]), _row("eng_Latn", "2", answers=["1990"])]
    scores = TASKS["xquad"].score(["Broncos.\nQuestion: who?", "in 1991"], rows)
    assert scores["exact_match"] == 0.5  # "Broncos." matches "the Broncos" once normalised
    assert scores["f1"] == pytest.approx((1.0 + 0.0) / 2)


def _flores_copy(folder: Path) -> Path:
    (folder / "dev").mkdir(parents=True)
    (folder / "dev" / "eng_Latn.dev").write_text("The cat sleeps.\nRain fell.\n", encoding="utf-8")
    (folder / "dev" / "deu_Latn.dev").write_text("Die Katze schläft.\nEs regnete.\n", encoding="utf-8")
    return folder


def test_prompts_from_real_format_copies(tmp_path):
    mgsm = load_corpus(f"mgsm:{mgsm_copy(tmp_path / 'mgsm')}")
    row = next(r for r in mgsm.rows if r.lang == "deu_Latn" and r.item_id == "2")
    assert TASKS["mgsm"].prompt(row, None) == "Question: Ein Hof hat 2.000 Eier und verkauft 5. Wie viele?\nAnswer:"
    check_fields(TASKS["mgsm"], mgsm.rows, mgsm.source)
    assert TASKS["mgsm"].score(["\\boxed{1995}"], [row])["accuracy"] == 1

    belebele = load_corpus(f"belebele:{belebele_copy(tmp_path / 'belebele')}")
    row = belebele.rows[0]
    prompt = TASKS["belebele"].prompt(row, None)
    assert prompt.startswith(f"{row.lang} passage 0") and prompt.endswith("D. four\nAnswer:")
    check_fields(TASKS["belebele"], belebele.rows, belebele.source)

    flores = load_corpus(f"flores_plus:{_flores_copy(tmp_path / 'flores')}")
    by_key = {(r.item_id, r.lang): r for r in flores.rows}
    prompt = TASKS["flores"].prompt(by_key["2", "deu_Latn"], by_key["2", "eng_Latn"])
    assert prompt == "Translate the following sentence from English to German.\nEnglish: Rain fell.\nGerman:"
    with pytest.raises(CorpusError, match="no eng_Latn text"):
        TASKS["flores"].prompt(by_key["2", "deu_Latn"], None)
    # A FLORES row has no answer: MGSM cannot score it.
    with pytest.raises(CorpusError, match="no answer field, which task mgsm scores with"):
        check_fields(TASKS["mgsm"], flores.rows, flores.source)
    with pytest.raises(PolyrouteError, match="unknown task 'gsm8k'"):
        get_task("gsm8k")


def _plan(layers: tuple[int, ...] = (1,), band: tuple[int, int] | None = None, strength: float = 1.0) -> SteeringPlan:
    return SteeringPlan(
        method="soft",
        band=band or (min(layers), max(layers)),
        experts=tuple(LayerExperts(layer=layer, experts=(3,)) for layer in layers),
        strength=strength,
        source="test",
    )


def test_lambda_sweep_changes_only_the_strength():
    plan = _plan(strength=2.0)
    variants = build_variants(plan, parse_sweep("lambda=0,0.25,1"), n_layers=3, moe_layers=(0, 1, 2))
    assert [name for name, _ in variants] == ["unsteered", "strength=0", "strength=0.25", "strength=1"]
    assert variants[0][1] is None
    assert [v.strength for _, v in variants[1:] if v] == [0.0, 0.25, 1.0]
    assert all(v is not None and v.band == plan.band and v.experts == plan.experts for _, v in variants[1:])
    assert build_variants(plan, None, n_layers=3, moe_layers=(0, 1, 2)) == [("unsteered", None), ("plan", plan)]
    assert build_variants(None, None, n_layers=3, moe_layers=(0, 1, 2)) == [("unsteered", None)]
    with pytest.raises(PolyrouteError, match=r"sweeps a plan: pass plan plan\.json too") as raised:
        build_variants(None, parse_sweep("lambda=1"), n_layers=3, moe_layers=(0, 1, 2))
    assert raised.value.named(flag) == "--sweep lambda=1 sweeps a plan: pass --plan plan.json too"


def test_window_sweep_moves_the_band_to_each_depth_zone():
    n_layers, moe = 16, tuple(range(1, 16))  # layer 0 dense
    zones = depth_zones(np.asarray(moe), n_layers)
    plan = _plan(layers=moe, band=(4, 6))
    variants = build_variants(plan, parse_sweep("window=early,middle,late"), n_layers=n_layers, moe_layers=moe)
    assert [name for name, _ in variants] == ["unsteered", "window=early", "window=middle", "window=late"]
    for zone, (_, moved) in enumerate(variants[1:]):
        inside = [layer for layer, z in zip(moe, zones, strict=True) if z == zone]
        assert moved is not None and moved.band == (inside[0], inside[-1])
        assert moved.layers == tuple(inside) and moved.strength == plan.strength
    # A plan listing experts only in early layers has nothing to steer late: a clear error.
    with pytest.raises(PlanError, match="no expert in the late window"):
        window_plan(_plan(layers=(1, 2)), "late", n_layers=n_layers, moe_layers=moe)
    with pytest.raises(PlanError, match="no MoE layer in the middle zone"):
        window_plan(_plan(layers=(0,)), "middle", n_layers=3, moe_layers=(0, 2))


def test_window_sweep_can_use_a_presets_windows():
    plan = _plan(layers=(0, 1, 2, 3), band=(0, 3))
    assert window_plan(plan, "middle", n_layers=4, moe_layers=range(4)).band == (2, 2)  # the depth zones
    # A published preset's windows, scaled to 4 layers: 0-4, 22-26, 43-47 of 48 -> 0, 1-2, 3.
    windows = {w.name: w.band for w in preset_for("2601.14050-mgsm", moe_layers=range(4)).windows}
    variants = build_variants(
        plan, parse_sweep("window=early,middle,late"), n_layers=4, moe_layers=range(4), windows=windows
    )
    assert [v.band for _, v in variants[1:] if v] == [(0, 0), (1, 2), (3, 3)]
    with pytest.raises(PlanError, match="no late window given"):
        window_plan(plan, "late", n_layers=4, moe_layers=range(4), windows={"early": (0, 0)})


@pytest.mark.parametrize("text", ["lambda", "lambda=", "lambda=a", "window=deep", "depth=1", "lambda=1,1"])
def test_bad_sweeps_are_refused(text):
    with pytest.raises(PolyrouteError) as raised:
        parse_sweep(text)
    assert "{sweep}" in raised.value.template and "--" not in str(raised.value)  # the CLI says --sweep


def test_eval_mgsm_with_a_lambda_sweep_end_to_end(tiny_model, tmp_path, capsys):
    model, db = tiny_model("qwen3_moe"), tmp_path / "s.duckdb"
    plan = _plan(layers=(0, 1, 2)).save(tmp_path / "plan.json")
    args = ["eval", "--task", "mgsm", "--model", str(model), "--corpus", f"mgsm:{mgsm_copy(tmp_path / 'mgsm')}"]
    args += ["--langs", "eng_Latn,deu_Latn", "--plan", str(plan), "--sweep", "lambda=0,8", "--max-new-tokens", "6"]
    assert main([*args, "--db", str(db)]) == 0
    out = capsys.readouterr().out
    run_id = run_id_of(out)
    assert "strength=8" in out and "language_consistency" in out
    with open_store(db, read_only=True) as store:
        run = q.get_run(store, run_id)
        assert run is not None and run.kind == "evaluation" and run.status == "complete"
        assert run.n_stored == run.n_planned  # every generated answer is stored
        assert run.params["task"] == "mgsm" and run.params["sweep"] == "lambda=0,8"
        assert run.params["decoding"]["max_new_tokens"] == 6 and run.params["plan"]["strength"] == 1.0
        results = q.eval_results(store, run_id)
        keys = [(r.lang, r.variant, r.metric) for r in results]
        variants = ("strength=0", "strength=8", "unsteered")
        metrics = ("accuracy", "language_consistency")
        assert sorted(keys) == sorted(
            (lang, v, m) for lang in ("deu_Latn", "eng_Latn") for v in variants for m in metrics
        )
        assert all(r.n == 2 and r.task == "mgsm" and 0 <= r.value <= 1 for r in results)
        assert {r.plan is None for r in results if r.variant == "unsteered"} == {True}
        assert all(r.plan and '"strength": 0.0' in r.plan for r in results if r.variant == "strength=0")
        for lang in ("eng_Latn", "deu_Latn"):
            unsteered = q.generated_answers(store, run_id, lang, "unsteered")
            assert len(unsteered) == 2
            assert q.generated_answers(store, run_id, lang, "strength=0") == unsteered
        # lambda=8 really steers: somewhere its answers differ from the baseline's.
        assert any(
            q.generated_answers(store, run_id, lang, "strength=8")
            != q.generated_answers(store, run_id, lang, "unsteered")
            for lang in ("eng_Latn", "deu_Latn")
        )


def test_eval_belebele_with_a_plan(tiny_model, tmp_path, capsys):
    model, db = tiny_model("qwen3_moe"), tmp_path / "s.duckdb"
    plan = _plan(strength=3.0).save(tmp_path / "plan.json")
    corpus = f"belebele:{belebele_copy(tmp_path / 'belebele')}"
    args = ["eval", "--task", "belebele", "--model", str(model), "--corpus", corpus, "--langs", "deu_Latn"]
    assert main([*args, "--plan", str(plan), "--limit", "2", "--db", str(db)]) == 0
    run_id = run_id_of(capsys.readouterr().out)
    with open_store(db, read_only=True) as store:
        results = q.eval_results(store, run_id)
        assert [(r.lang, r.variant, r.metric, r.n) for r in results] == [
            ("deu_Latn", "plan", "accuracy", 2),
            ("deu_Latn", "unsteered", "accuracy", 2),
        ]
        answers = q.generated_answers(store, run_id, "deu_Latn", "plan")
        assert len(answers) == 2 and answers[0][1].endswith("D. four\nAnswer:")


def test_eval_refuses_bad_input_before_running(tiny_model, tmp_path, capsys):
    model, db = tiny_model("qwen3_moe"), tmp_path / "s.duckdb"
    mgsm = f"mgsm:{mgsm_copy(tmp_path / 'mgsm')}"
    base = ["eval", "--model", str(model), "--langs", "deu_Latn", "--db", str(db)]
    assert main([*base, "--task", "gsm8k", "--corpus", mgsm]) == 2
    assert "unknown task 'gsm8k'" in capsys.readouterr().err
    flores = f"flores_plus:{_flores_copy(tmp_path / 'flores')}"
    assert main([*base, "--task", "mgsm", "--corpus", flores]) == 2
    assert "no answer field, which task mgsm scores with" in capsys.readouterr().err
    bad = SteeringPlan(method="soft", band=(1, 1), experts=(LayerExperts(layer=1, experts=(99,)),), strength=1.0)
    assert main([*base, "--task", "mgsm", "--corpus", mgsm, "--plan", str(bad.save(tmp_path / "bad.json"))]) == 2
    assert "expert 99" in capsys.readouterr().err
    assert main([*base, "--task", "mgsm", "--corpus", mgsm, "--sweep", "lambda=1"]) == 2
    assert "pass --plan" in capsys.readouterr().err
    assert main([*base, "--task", "mgsm"]) == 2  # a benchmark task without its copy says where one comes from
    assert "task mgsm reads a copy of mgsm: pass --corpus mgsm:FOLDER" in capsys.readouterr().err
    assert not db.exists()  # nothing was started, nor a store left behind


def test_the_cli_names_every_task():
    assert tuple(TASKS) == TASK_NAMES


def test_the_built_in_task_continues_the_first_half_and_reads_the_held_out_split():
    task = get_task(BUILTIN_TASK)
    assert not task.needs_copy and task.model_loss and task_corpus(task, None) == "builtin"
    assert opening(_row("deu_Latn"), None) == "prompt"[:3]  # one word: half its characters
    row = TextRow("1", "eng_Latn", "Save the changes before you leave", "test", None)
    assert opening(row, None) == "Save the changes"
    items = read_items(task, "builtin", ["eng_Latn", "deu_Latn"], limit=4)
    heldout = {row.item_id for row in load_corpus("builtin", split="heldout").rows}
    assert len(items.rows) == 8 and {row.item_id for row in items.rows} <= heldout
    # Whether the model carries a text on in its language: letters of another script do not count.
    said = task.score(["the changes", "Привет"], [row, row])
    assert said == {"language_consistency": 0.5}


def test_eval_heldout_measures_the_loss_unsteered_and_steered(tiny_model, tmp_path, capsys):
    """The built-in task end to end: its loss is `language_losses` of the model (under the plan when
    steered), and a plan that changes routing changes it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from moe_core.adapt.training import language_losses

    model, db = tiny_model("qwen3_moe"), tmp_path / "s.duckdb"
    plan = SteeringPlan(method="soft", band=(1, 1), experts=(LayerExperts(layer=1, experts=(0,)),), strength=4.0)
    argv = ["eval", "--task", BUILTIN_TASK, "--model", str(model), "--langs", "eng_Latn,deu_Latn", "--limit", "3"]
    assert main([*argv, "--max-new-tokens", "4", "--plan", str(plan.save(tmp_path / "p.json")), "--db", str(db)]) == 0
    with open_store(db, read_only=True) as store:
        (run,) = q.list_runs(store)
        scores = {(r.lang, r.variant, r.metric): r.value for r in q.eval_results(store, run.run_id)}
        answers = q.run_answers(store, run.run_id)
    assert run.params["corpus"] == "builtin" and len(answers) == 2 * 3 * 2
    texts = [row.text for row in read_items(get_task(BUILTIN_TASK), "builtin", ["deu_Latn"], limit=3).rows]
    loaded = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    (expected,) = language_losses(loaded, AutoTokenizer.from_pretrained(model), {"deu_Latn": texts})
    assert scores["deu_Latn", "unsteered", "loss"] == pytest.approx(expected.loss, rel=1e-5)
    assert scores["deu_Latn", "unsteered", "perplexity"] == pytest.approx(np.exp(expected.loss), rel=1e-5)
    assert scores["deu_Latn", "plan", "loss"] != pytest.approx(expected.loss, rel=1e-6)


def test_eval_flores_translates_from_english_with_a_window_sweep(tiny_model, tmp_path, capsys):
    model, db = tiny_model("qwen3_moe"), tmp_path / "s.duckdb"
    plan = _plan(layers=(0, 1, 2), strength=4.0).save(tmp_path / "plan.json")
    corpus = f"flores_plus:{_flores_copy(tmp_path / 'flores')}"
    args = ["eval", "--task", "flores", "--model", str(model), "--corpus", corpus, "--langs", "deu_Latn"]
    args += ["--plan", str(plan), "--sweep", "window=early,late", "--max-new-tokens", "4", "--db", str(db)]
    assert main(args) == 0
    run_id = run_id_of(capsys.readouterr().out)
    with open_store(db, read_only=True) as store:
        results = q.eval_results(store, run_id)
        assert sorted((r.variant, r.metric) for r in results) == [
            (v, m) for v in ("unsteered", "window=early", "window=late") for m in ("chrf++", "language_consistency")
        ]
        assert all(r.lang == "deu_Latn" and r.n == 2 for r in results)
        # tiny model: 3 layers, all MoE; depth zones put layers 0-1 early and layer 2 late.
        late = next(r.plan for r in results if r.variant == "window=late")
        assert late is not None and SteeringPlan.from_json(late).band == (2, 2)
        answers = q.generated_answers(store, run_id, "deu_Latn", "unsteered")
        assert [prompt for _, prompt, _ in answers] == [
            "Translate the following sentence from English to German.\nEnglish: The cat sleeps.\nGerman:",
            "Translate the following sentence from English to German.\nEnglish: Rain fell.\nGerman:",
        ]
