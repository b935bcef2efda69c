"""`polyroute analyze`: every analysis from the command line, in every format, naming its parameters."""

from __future__ import annotations

import io
import json
import shutil

import pytest

from moe_core.records import TaskScore
from polyroute.cli import main
from store import open_store
from store import queries as q
from store import writer as w

ANALYSES = {
    "divergence": [],
    "entropy": [],
    "consistency": ["--max-pairs", "50"],
    "experts": ["--tau", "0.25"],
    "shared": ["--k", "4", "--thr", "0.4", "--group", "tam_Taml,tel_Telu"],
    "rise": ["--target", "ta", "--budget", "12"],
    "similarity": ["--layers", "0-7"],
    "isolation": [],
}


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("analysis", list(ANALYSES))
def test_every_analysis_prints_json_with_its_parameters(planted_store, capsys, analysis):
    code, out, err = _run(
        capsys, "analyze", analysis, "--run", "1", "--db", str(planted_store), "--format", "json", *ANALYSES[analysis]
    )
    assert code == 0, err
    payload = json.loads(out)
    assert payload["analysis"] == analysis
    assert payload["params"]["run"] == 1 and payload["params"]["layers"]
    first = next(iter(payload["tables"].values()))
    assert first, f"{analysis} returned an empty first table"


def test_csv_starts_with_its_parameters_and_reads_back(planted_store, capsys):
    import pandas as pd

    code, out, _ = _run(
        capsys,
        "analyze",
        "divergence",
        "--run",
        "1",
        "--db",
        str(planted_store),
        "--format",
        "csv",
        "--ref",
        "de",
        "--layers",
        "2-5",
    )
    assert code == 0
    assert "# ref=deu_Latn" in out and "# layers=2-5" in out
    frame = pd.read_csv(io.StringIO(out), comment="#")
    assert list(frame.columns) == ["lang", "layer", "divergence", "js", "pairs"]
    assert sorted(frame["layer"].unique()) == [2, 3, 4, 5]
    code, out, _ = _run(
        capsys, "analyze", "shared", "--run", "1", "--db", str(planted_store), "--format", "csv", "--table", "reliance"
    )
    assert "# table=reliance" in out and "on_shared" in out


def test_table_output_is_readable(planted_store, capsys):
    code, out, _ = _run(capsys, "analyze", "similarity", "--run", "1", "--db", str(planted_store), "--layers", "0-7")
    assert code == 0
    assert out.startswith("similarity: run=1")
    assert "ari_clusters_vs_families=" in out and "clusters (9 rows)" in out


def test_correlation_reads_a_scores_file(planted_store, tmp_path, capsys):
    scores = tmp_path / "belebele.csv"
    scores.write_text("lang,accuracy\nde,0.81\nfr,0.8\nta,0.42\nte,0.4\nkn,0.38\ntr,0.7\nkk,0.5\nuz,0.45\n")
    code, out, err = _run(
        capsys,
        "analyze",
        "correlation",
        "--run",
        "1",
        "--db",
        str(planted_store),
        "--scores",
        str(scores),
        "--layers",
        "0-7",
        "--format",
        "json",
    )
    assert code == 0, err
    payload = json.loads(out)
    assert payload["summary"]["n"] == 8 and payload["params"]["score"] == "accuracy"
    assert -1 <= payload["summary"]["pearson_r"] <= 1


def test_correlation_reads_an_evaluation_run_as_it_reads_a_file(planted_store, tmp_path, capsys):
    accuracy = {"deu_Latn": 0.81, "fra_Latn": 0.8, "tam_Taml": 0.42, "tel_Telu": 0.4, "kan_Knda": 0.38}
    db = tmp_path / "scored.duckdb"
    shutil.copyfile(planted_store, db)
    with open_store(db) as store:
        run = w.create_run(
            store, kind="evaluation", model_id=q.list_runs(store)[0].model_id, corpus_id=None, backend="hf",
            params={}, n_planned=0, weight_bound=1.0,
        )  # fmt: skip
        scores = [
            TaskScore(task="belebele", lang=lang, variant=variant, metric=metric, value=value + shift, n=10)
            for lang, value in accuracy.items()
            for variant, shift in (("unsteered", 0.0), ("plan", 0.05))
            for metric in ("accuracy", "language_consistency")
        ]
        w.write_evaluation(store, run, scores, [])
    scores_file = tmp_path / "scores.csv"
    scores_file.write_text("lang,accuracy\n" + "".join(f"{lang},{value}\n" for lang, value in accuracy.items()))
    common = ["analyze", "correlation", "--run", "1", "--db", str(db), "--layers", "0-7", "--format", "json"]
    _, from_file, _ = _run(capsys, *common, "--scores", str(scores_file))
    code, from_store, err = _run(capsys, *common, "--eval-run", str(run), "--metric", "accuracy")
    assert code == 0, err
    stored, filed = json.loads(from_store), json.loads(from_file)
    assert stored["summary"] == filed["summary"] and stored["summary"]["n"] == 5
    assert stored["params"]["score"] == "belebele accuracy (unsteered)"
    _, steered, _ = _run(capsys, *common, "--eval-run", str(run), "--metric", "accuracy", "--variant", "plan")
    assert json.loads(steered)["params"]["score"] == "belebele accuracy (plan)"
    for extra, message in (
        ([], "choose one with --metric"),
        (["--metric", "f1"], "its metrics are accuracy, language_consistency"),
        (["--metric", "accuracy", "--scores", str(scores_file)], "one of them"),
    ):
        code, _, err = _run(capsys, *common, "--eval-run", str(run), *extra)
        assert code == 2 and message in err, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["divergence", "--run", "7"], "no traced sequences for run 7"),
        (["divergence", "--run", "1", "--langs", "ben_Beng"], "its languages are"),
        (["divergence", "--run", "1", "--layers", "x-y"], "--layers takes A-B"),
        (["divergence", "--run", "1", "--ref", "ja"], "choose --ref from"),
        (["rise", "--run", "1", "--target", "ta", "--ratios", "0.5,0.5"], "--ratios takes three"),
        (["rise", "--run", "1", "--target", "ta", "--ratios", "0.5,0.5,0.5"], "sum to 1"),
        (["shared", "--run", "1", "--k", "0"], "--k must be at least 1"),
        (["experts", "--run", "1", "--tau", "2"], "--tau must lie in"),
        (["isolation", "--run", "1", "--high", "6"], "change --high/--low"),
        (["correlation", "--run", "1", "--scores", "/nonexistent.csv"], "no scores file"),
        (["correlation", "--run", "1"], "needs --eval-run RUN_ID"),
        (["correlation", "--run", "1", "--eval-run", "1"], "run 1 holds no scores"),
        (["divergence", "--run", "1", "--format", "csv", "--table", "nope"], "has no table 'nope'"),
    ],
)
def test_bad_input_gets_one_line_with_the_fix(planted_store, capsys, argv, message):
    code, _, err = _run(capsys, "analyze", *argv, "--db", str(planted_store))
    assert code == 2
    assert message in err and err.startswith("polyroute: error:")


def test_a_missing_store_is_reported(tmp_path, capsys):
    code, _, err = _run(capsys, "analyze", "entropy", "--run", "1", "--db", str(tmp_path / "none.duckdb"))
    assert code == 2 and "no store at" in err
