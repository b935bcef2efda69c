"""The Python API (`import polyroute as pr`): every analysis gives what `polyroute analyze ... --format
json` gives, plans and steering what `polyroute plan` and `polyroute steer` give, the SQL console
stays read-only, and bad input raises a `ParameterError` naming the parameter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import polyroute as pr
from moe_core.errors import ParameterError
from moe_core.steering import LayerExperts, SteeringPlan
from polyroute import plans
from polyroute.cli import main
from polyroute.cli import plan as plan_cli
from store import SqlRefused, open_store
from store import queries as q
from tests.helpers import mgsm_copy

# (the CLI's flags, the API's keywords) for the same analysis of the planted run.
SAME = {
    "divergence": ([], {}),
    "divergence-selected": (
        ["--ref", "de", "--layers", "2-5", "--source", "hard", "--langs", "eng_Latn,de,ta"],
        {"ref": "de", "layers": (2, 5), "source": "hard", "langs": "eng_Latn,de,ta"},
    ),
    "entropy": ([], {}),
    "consistency": (["--max-pairs", "50", "--seed", "3"], {"max_pairs": 50, "seed": 3}),
    "experts": (["--tau", "0.25"], {"tau": 0.25}),
    "experts-task": (
        ["--tau", "0.25", "--ref-run", "1", "--langs", "eng_Latn,ta"],
        {"tau": 0.25, "ref_run": 1, "langs": ["eng_Latn", "ta"]},
    ),
    "shared": (
        ["--k", "4", "--thr", "0.4", "--group", "tam_Taml,tel_Telu"],
        {"k": 4, "thr": 0.4, "group": ["tam_Taml", "tel_Telu"]},
    ),
    "rise": (
        ["--target", "ta", "--budget", "12", "--ratios", "0.5,0.25,0.25"],
        {"target": "ta", "budget": 12, "ratios": (0.5, 0.25, 0.25)},
    ),
    "similarity": (["--layers", "0-7", "--measure", "cosine"], {"layers": (0, 7), "measure": "cosine"}),
    "isolation": (["--high", "3"], {"high": 3}),
    "expert": (
        ["--layer", "2", "--expert", "5", "--sequences", "4", "--top-tokens", "3", "--ref-run", "1"],
        {"layer": 2, "expert": 5, "sequences": 4, "top_tokens": 3, "ref_run": 1},
    ),
}
SCORES = {"de": 0.81, "fr": 0.8, "ta": 0.42, "te": 0.4, "kn": 0.38, "tr": 0.7, "kk": 0.5, "uz": 0.45}


def _cli_json(capsys: pytest.CaptureFixture[str], db: Path, analysis: str, *flags: str) -> dict[str, Any]:
    code = main(["analyze", analysis, "--run", "1", "--db", str(db), "--format", "json", *flags])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def _as_json(result: pr.Result) -> dict[str, Any]:
    """The API's result as the CLI's JSON says it (NaN as null, tuples as lists)."""
    tables = {
        name: frame.astype(object).where(frame.notna(), None).to_dict("records")
        for name, frame in result.tables.items()
    }
    payload = {"analysis": result.name, "params": result.params, "summary": result.summary, "notes": result.notes}
    return json.loads(json.dumps({**payload, "tables": tables}, default=str))


@pytest.mark.parametrize("case", list(SAME))
def test_every_analysis_equals_the_cli(planted_store, capsys, case):
    flags, keywords = SAME[case]
    analysis = case.split("-")[0]
    expected = _cli_json(capsys, planted_store, analysis, *flags)
    result = getattr(pr.open(planted_store).run(1), analysis)(**keywords)
    assert isinstance(result.frame, pd.DataFrame)
    assert len(result.frame) or case == "experts-task"  # a run against itself has no task experts
    assert _as_json(result) == expected


def test_compare_equals_the_clis_runs(compare_store, capsys):
    assert main(["analyze", "divergence", "--runs", "1,2,3", "--db", str(compare_store), "--format", "json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    store = pr.open(compare_store)
    assert _as_json(store.compare([1, 2, 3])) == expected
    with pytest.raises(ParameterError, match="no traced run 9 in the store: give runs ids"):
        store.compare([1, 9])
    with pytest.raises(ParameterError, match="analysis 'entropy' compares no runs: use divergence"):
        store.compare([1, 2], "entropy")


def test_correlation_takes_a_file_or_a_mapping_as_the_cli_takes_the_file(planted_store, tmp_path, capsys):
    scores = tmp_path / "scores.csv"
    scores.write_text("lang,accuracy\n" + "".join(f"{lang},{value}\n" for lang, value in SCORES.items()))
    expected = _cli_json(capsys, planted_store, "correlation", "--scores", str(scores))
    run = pr.open(planted_store).run(1)
    assert _as_json(run.correlation(scores=scores)) == expected
    from_mapping = run.correlation(scores=SCORES, score_column="accuracy")
    assert _as_json(from_mapping)["tables"] == expected["tables"]
    with pytest.raises(ParameterError, match=r"correlation needs eval_run .* or scores"):
        run.correlation()


def test_runs_lists_what_the_store_holds(planted_store):
    frame = pr.open(planted_store).runs()
    with open_store(planted_store, read_only=True) as store:
        stored = q.list_runs(store)
    assert frame["run_id"].tolist() == [run.run_id for run in stored]
    assert frame.loc[0, "kind"] == "trace" and frame.loc[0, "n_stored"] == stored[0].n_stored


def test_sql_reads_and_refuses_writes(planted_store):
    handle = pr.open(planted_store)
    counted = handle.sql("SELECT count(*) AS n FROM sequences")
    assert list(counted.columns) == ["n"] and counted.loc[0, "n"] > 0
    for statement in ("DELETE FROM sequences", "DROP TABLE runs", "CREATE TABLE x AS SELECT 1", "COPY runs TO 'x.csv'"):
        with pytest.raises(SqlRefused):
            handle.sql(statement)
    assert handle.sql("SELECT count(*) AS n FROM sequences").equals(counted)


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda run: run.experts(tau=2), "tau must lie in"),
        (lambda run: run.experts(tau="high"), "tau takes a number"),
        (lambda run: run.experts(taux=0.3), "experts takes no taux"),
        (lambda run: run.consistency(max_pairs=0), "max_pairs must be at least 1"),
        (lambda run: run.rise(), "rise needs target"),
        (lambda run: run.rise(target="ta", ratios=(1, 0)), "ratios takes three shares"),
        (lambda run: run.similarity(measure="euclid"), "measure takes one of divergence, cosine"),
        (lambda run: run.divergence(layers=(5, 2)), "layers takes one layer or"),
        (lambda run: run.divergence(source="logits"), "unknown source"),
        (lambda run: run.analysis("flow"), "unknown analysis name"),
        (lambda run: run.divergence(ref="ja", langs="de,fr"), "choose ref from deu_Latn, fra_Latn"),
    ],
)
def test_a_bad_parameter_is_named(planted_store, call, named):
    with pytest.raises(ParameterError, match=named):
        call(pr.open(planted_store).run(1))


def test_a_bad_run_id_is_named(planted_store):
    with pytest.raises(ParameterError, match=r"run_id 99 is no run of .*; its trace runs: 1"):
        pr.open(planted_store).run(99)


def test_plans_equal_the_cli(planted_store, tmp_path, capsys):
    assert set(plan_cli.KINDS) == set(plans.BUILDERS)
    run = pr.open(planted_store).run(1)
    built = pr.plan(run, "language-experts", lang="ta", tau=0.3, layers=(0, 7), output=tmp_path / "plan.json")
    assert (
        main(
            [
                "plan",
                "language-experts",
                "--run",
                "1",
                "--db",
                str(planted_store),
                "--lang",
                "ta",
                "--tau",
                "0.3",
                "--layers",
                "0-7",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out) == json.loads(built.to_json())
    assert SteeringPlan.load(tmp_path / "plan.json") == built
    shared = pr.plan(run, "shared", langs=["en", "ta", "te"], k=4, thr=0.4, layers=(0, 7))
    with open_store(planted_store, read_only=True) as store:
        assert shared == plans.shared_experts(
            store, 1, ["eng_Latn", "tam_Taml", "tel_Telu"], k=4, thr=0.4, layers=(0, 7)
        )
    with pytest.raises(ParameterError, match="takes no tau"):
        pr.plan(run, "exclusive", lang="ta", tau=0.3)
    with pytest.raises(ParameterError, match="unknown kind"):
        pr.plan(run, "random", lang="ta")


def test_steer_equals_the_cli(tiny_model, tmp_path, capsys):
    model = tiny_model("qwen3_moe")
    plan = SteeringPlan(
        method="soft", band=(1, 1), experts=(LayerExperts(layer=1, experts=(3,)),), strength=3.0, source="test"
    )
    path = plan.save(tmp_path / "plan.json")
    prompt = "The quick brown fox jumps over the lazy dog because"
    result = pr.steer(model=model, plan=path, prompt=prompt, max_new_tokens=5)
    assert main(["steer", "--model", str(model), "--plan", str(path), "--prompt", prompt, "--max-new-tokens", "5"]) == 0
    out = capsys.readouterr().out
    assert f"unsteered: {result.summary['unsteered']}" in out and f"steered:   {result.summary['steered']}" in out
    masses = result.frame.pivot(index="layer", columns="generation", values="mass")
    row = next(line.split() for line in out.splitlines() if line.startswith("1 "))
    assert (float(row[2]), float(row[3])) == (round(masses.loc[1, "unsteered"], 3), round(masses.loc[1, "steered"], 3))
    assert masses.loc[1, "steered"] > masses.loc[1, "unsteered"]
    with pytest.raises(ParameterError, match="prompt is empty"):
        pr.steer(model=model, plan=plan, prompt="  ")


def test_trace_returns_the_run_with_a_progress_bar(tiny_model, corpus_file, tmp_path, capsys, monkeypatch):
    db = tmp_path / "traced.duckdb"
    run = pr.trace(model=tiny_model("qwen3_moe"), corpus=corpus_file, langs="eng_Latn,deu_Latn", db=db, limit=2)
    assert "run 1" in capsys.readouterr().err  # tqdm's bar
    assert run.info()["status"] == "complete" and run.info()["n_stored"] == 4
    assert set(run.entropy().frame["lang"]) == {"eng_Latn", "deu_Latn"}
    monkeypatch.setitem(sys.modules, "tqdm", None)  # without tqdm: plain progress lines
    again = pr.trace(model=tiny_model("qwen3_moe"), corpus=corpus_file, langs=["deu_Latn"], db=db, limit=1)
    assert again.id == 2 and "run 2: 1/1 seq" in capsys.readouterr().err


def test_evaluate_equals_the_cli(tiny_model, tmp_path, capsys):
    model, corpus = tiny_model("qwen3_moe"), f"mgsm:{mgsm_copy(tmp_path / 'mgsm')}"
    plan = SteeringPlan(
        method="soft", band=(1, 1), experts=(LayerExperts(layer=1, experts=(3,)),), strength=3.0, source="test"
    )
    result = pr.evaluate(
        task="mgsm", model=model, corpus=corpus, langs="eng_Latn,deu_Latn", db=tmp_path / "api.duckdb", plan=plan,
        max_new_tokens=6,
    )  # fmt: skip
    assert "run 1" in capsys.readouterr().err and result.params["run"] == 1
    cli_db, path = tmp_path / "cli.duckdb", plan.save(tmp_path / "plan.json")
    argv = ["eval", "--task", "mgsm", "--model", str(model), "--corpus", corpus, "--langs", "eng_Latn,deu_Latn"]
    assert main([*argv, "--plan", str(path), "--max-new-tokens", "6", "--db", str(cli_db)]) == 0
    with open_store(cli_db, read_only=True) as store:
        expected = sorted((r.lang, r.variant, r.metric, r.value, r.n) for r in q.eval_results(store, 1))
    columns = ["lang", "variant", "metric", "value", "n"]
    assert sorted(map(tuple, result.frame[columns].itertuples(index=False))) == expected
    assert {"unsteered", "plan"} <= set(result.frame["variant"])


def test_every_analysis_of_the_registry_is_a_method_of_a_run():
    from polyroute.analyses.registry import ANALYSES

    assert pr.ANALYSES is ANALYSES
    assert [name for name in ANALYSES if not callable(getattr(pr.Run, name, None))] == []


def test_importing_polyroute_stays_light():
    code = "import sys, polyroute; assert not {'polyroute.api', 'pandas', 'duckdb', 'torch'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
