"""The `polyroute` command: a trace end to end, runs, sql, and one-line errors with exit code 2
that leave the store as it was."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoConfig, AutoModelForCausalLM

from moe_core.tiny import train_tokenizer
from polyroute.cli import main
from tests.conftest import write_jsonl
from tests.helpers import file_digest, snapshot, store_held_by_another_process, trace_argv


@pytest.fixture
def traced(tmp_path, tiny_model, corpus_file):
    db = tmp_path / "store.duckdb"
    assert (
        main(
            trace_argv(
                db, tiny_model("qwen3_moe"), corpus_file, "eng_Latn,deu_Latn", "--limit", "4", "--batch-size", "3"
            )
        )
        == 0
    )
    return db


def test_trace_runs_and_sql(traced, capsys):
    capsys.readouterr()
    assert main(["runs", "--db", str(traced), "--format", "json"]) == 0
    [run] = json.loads(capsys.readouterr().out)
    assert run["status"] == "complete" and run["sequences"] == "8/8" and run["langs"] == "eng_Latn,deu_Latn"
    assert (
        main(["sql", "SELECT lang, count(*) AS n FROM sequences GROUP BY lang ORDER BY lang", "--db", str(traced)]) == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert (
        out[0].split() == ["lang", "n"] and out[2].split() == ["deu_Latn", "4"] and out[3].split() == ["eng_Latn", "4"]
    )


def test_save_logits_fills_its_own_table(tmp_path, tiny_model, corpus_file, capsys):
    db = tmp_path / "s.duckdb"
    assert main(trace_argv(db, tiny_model("qwen3_moe"), corpus_file, "eng_Latn", "--limit", "2", "--save-logits")) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "sql",
                "SELECT count(*) = (SELECT sum(n_tokens) * 3 FROM sequences) FROM router_logits",
                "--db",
                str(db),
                "--format",
                "csv",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.splitlines()[1] == "True"


def _dense_model(tmp_path: Path) -> Path:
    tokenizer = train_tokenizer(["a dense model has no experts"], 300)
    config = AutoConfig.for_model("llama", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    folder = tmp_path / "dense"
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _unknown_arch(tmp_path: Path, tiny_model) -> Path:
    folder = tmp_path / "unknown"
    folder.mkdir()
    config = json.loads((tiny_model("qwen3_moe") / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["FooMoeForCausalLM"]}))
    return folder


def _bad_inputs(tmp_path, tiny_model, corpus_file):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    good = tiny_model("qwen3_moe")

    def args(model, corpus=corpus_file, langs="eng_Latn"):
        return ["--model", str(model), "--corpus", str(corpus), "--langs", langs]

    return {
        "missing model folder": (args(tmp_path / "nope"), "does not exist"),
        "dense model": (args(_dense_model(tmp_path)), "dense model"),
        "unknown architecture": (args(_unknown_arch(tmp_path, tiny_model)), "unknown to transformers"),
        "unknown language": (args(good, langs="eng_Latn,xx_Yyyy"), "unknown language code 'xx_Yyyy'"),
        "language not in corpus": (args(good, langs="fra_Latn"), "has no text in fra_Latn"),
        "empty corpus": (args(good, corpus=empty), "has no rows"),
    }


def test_bad_input_gets_one_line_exit_2_and_the_store_is_unchanged(traced, tmp_path, tiny_model, corpus_file, capsys):
    before = snapshot(traced)
    for name, (argv, message) in _bad_inputs(tmp_path, tiny_model, corpus_file).items():
        capsys.readouterr()
        assert main(["trace", "--db", str(traced), *argv]) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith("polyroute: error: ") and message in err and "\n" not in err, (name, err)
        assert snapshot(traced) == before, name


def test_a_corrupt_store_is_refused_untouched(tmp_path, tiny_model, corpus_file, capsys):
    db = tmp_path / "corrupt.duckdb"
    db.write_bytes(b"\x00garbage" * 4096)
    before = file_digest(db)
    assert main(trace_argv(db, tiny_model("qwen3_moe"), corpus_file)) == 2
    err = capsys.readouterr().err
    assert "damaged or not a DuckDB database" in err and "--db another file" in err
    assert file_digest(db) == before
    assert main(["runs", "--db", str(db)]) == 2


def test_a_locked_store_says_who_holds_it(traced, tiny_model, corpus_file, capsys):
    before = snapshot(traced)
    with store_held_by_another_process(traced) as pid:
        assert main(trace_argv(traced, tiny_model("qwen3_moe"), corpus_file)) == 2
        err = capsys.readouterr().err
        assert f"in use by process {pid}" in err and "pass --db another file" in err
        assert main(["sql", "SELECT 1", "--db", str(traced)]) == 2
    assert snapshot(traced) == before


@pytest.mark.slow
def test_the_installed_command_exits_2_with_one_line(tmp_path, corpus_file):
    result = subprocess.run(
        [sys.executable, "-m", "polyroute.cli", "trace", "--model", str(tmp_path / "missing"), "--corpus",
         str(corpus_file), "--langs", "eng_Latn", "--db", str(tmp_path / "s.duckdb")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr


def test_help_lists_export_and_import_and_their_flags(capsys):
    for argv in (["--help"], ["export", "--help"], ["import", "--help"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "export    write a run as Parquet files" in out and "import    add an exported run" in out
    assert "--run RUN_ID" in out and "--out DIR" in out and "--merge-into RUN_ID" in out and " DIR" in out


def test_export_and_import_without_their_arguments_exit_2_with_one_line(tmp_path, capsys):
    for argv, missing in ((["export", "--out", str(tmp_path / "x")], "--run"), (["import"], "DIR")):
        assert main([*argv, "--db", str(tmp_path / "s.duckdb")]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and missing in err, err
    assert not (tmp_path / "s.duckdb").exists() and not (tmp_path / "x").exists()


def test_sql_refuses_writes_and_file_reads(traced, capsys):
    before = snapshot(traced)
    for statement, message in [
        ("DELETE FROM runs", "only read-only queries"),
        ("COPY runs TO 'out.csv'", "only read-only queries"),
        ("SELECT * FROM read_csv('/etc/passwd')", "not allowed"),
        ("ATTACH 'x.duckdb'", "only read-only queries"),
        ("SELECT 1; SELECT 2", "one statement at a time"),
        ("SET threads = 1", "only read-only queries"),
    ]:
        capsys.readouterr()
        assert main(["sql", statement, "--db", str(traced)]) == 2, statement
        assert message in capsys.readouterr().err, statement
    assert snapshot(traced) == before


def test_sql_row_cap(traced, capsys):
    capsys.readouterr()
    assert main(["sql", "SELECT * FROM range(50)", "--db", str(traced), "--max-rows", "10", "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 11 and "first 10 rows" in captured.err


def test_missing_items_are_reported(tmp_path, tiny_model, capsys):
    corpus = write_jsonl(tmp_path / "gappy.jsonl", [
        {"item_id": 1, "lang": "eng_Latn", "text": "One sentence here."},
        {"item_id": 1, "lang": "deu_Latn", "text": "Ein Satz hier."},
        {"item_id": 2, "lang": "eng_Latn", "text": "Only in English."},
    ])  # fmt: skip
    assert main(trace_argv(tmp_path / "s.duckdb", tiny_model("qwen3_moe"), corpus, "eng_Latn,deu_Latn")) == 0
    captured = capsys.readouterr()
    assert "1 (item, language) pairs are missing" in captured.err and "item 2 in deu_Latn" in captured.err
    assert "stored 3 sequences" in captured.out


def test_overlong_texts_are_truncated_with_a_warning(tmp_path, tiny_model, corpus_file, capsys):
    db = tmp_path / "s.duckdb"
    assert (
        main(trace_argv(db, tiny_model("qwen3_moe"), corpus_file, "eng_Latn", "--limit", "3", "--max-tokens", "6")) == 0
    )
    assert "3 texts were longer than --max-tokens and were truncated" in capsys.readouterr().err
    assert main(["sql", "SELECT max(n_tokens), count(*) FROM sequences", "--db", str(db), "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "6,3"


def test_sql_stops_queries_that_run_too_long(traced):
    from store import SqlRefused
    from store.sandbox import run_sql

    with pytest.raises(SqlRefused, match=r"ran longer than 0\.5 s"):
        run_sql(traced, "SELECT count(*) FROM range(100000000000) a", timeout_s=0.5)
    assert run_sql(traced, "SELECT count(*) FROM runs").rows == [(1,)]
