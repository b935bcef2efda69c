"""Every bad input to the `polyroute` command gets one clear line and exit code 2, and nothing is
written: bad values (checked when parsed), bad corpus files, damaged models, store paths that
cannot be (a file as a folder, a read-only folder, a full disk), corrupt stores. Runs whose process
died show as interrupted, with the command that finishes them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest

from moe_core.errors import FixableError, PolyrouteError
from polyroute.cli import main
from store import StoreError
from tests.helpers import TABLES, file_digest, snapshot, trace_argv

ROOT = Path(__file__).resolve().parent.parent


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], *, after_progress: bool = False) -> str:
    """Run `polyroute argv`, which must fail with exit code 2 and one error line: its only line on
    stderr, or its last one after a trace's progress bar. Returns the line."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err, err
    line = err.splitlines()[-1] if after_progress else err
    assert line.startswith("polyroute: error: ") and "\n" not in line, err
    return line


@pytest.fixture
def model(tiny_model) -> Path:
    return tiny_model("qwen3_moe")


# --- values checked when parsed -------------------------------------------------------------------

BAD_VALUES = [
    (["--max-tokens", "-5"], "--max-tokens must be at least 1, not -5"),
    (["--max-tokens", "0"], "--max-tokens must be at least 1, not 0"),
    (["--max-tokens", "many"], "--max-tokens must be a whole number, not 'many'"),
    (["--device", "tpu9"], "--device must be cpu, cuda or cuda:N, not 'tpu9'"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--limit", "-1"], "--limit must be at least 1"),
    (["--resume", "0"], "--resume must be at least 1"),
    (["--template", "fancy"], "--template invalid choice"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_VALUES)
def test_a_bad_trace_value_is_one_line_and_no_store_appears(tmp_path, model, corpus_file, capsys, extra, message):
    db = tmp_path / "new.duckdb"
    err = _fails(capsys, [*trace_argv(db, model, corpus_file), *extra])
    assert message in err and "--help`)" in err
    assert sorted(tmp_path.iterdir()) == [corpus_file]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--model", "m", "--port", "99999"], "--port must be a port from 1 to 65535, not 99999"),
        (["serve", "--model", "m", "--port", "0"], "--port must be a port from 1 to 65535, not 0"),
        (["serve", "--model", "m", "--max-request-mb", "-1"], "--max-request-mb must be a number above 0, not -1"),
        (["serve", "--model", "m", "--max-seconds", "nan"], "--max-seconds must be a number above 0, not nan"),
        (["serve", "--model", "m", "--max-texts", "0"], "--max-texts must be at least 1"),
        (["sql", "SELECT 1", "--max-rows", "-1"], "--max-rows must be at least 1, not -1"),
        (["corpus", "show", "builtin", "--limit", "0"], "--limit must be at least 1"),
        (["eval", "--task", "mgsm", "--corpus", "c", "--langs", "x", "--device", "gpu"], "--device must be cpu"),
        (["analyze", "consistency", "--run", "1", "--seed", "-3"], "--seed must be a whole number from 0"),
        (["no-such-command"], "invalid choice: 'no-such-command'"),
    ],
)
def test_other_commands_check_their_values_when_parsed(tmp_path, capsys, argv, message):
    assert message in _fails(capsys, [*argv, "--db", str(tmp_path / "s.duckdb")])
    assert list(tmp_path.iterdir()) == []


def test_the_server_limits_refuse_nonsense_at_start_up():
    from moe_core.errors import PolyrouteError
    from moe_core.server import Limits

    for bad in ({"max_request_bytes": -1}, {"max_texts": 0}, {"max_seconds": float("nan")}, {"max_new_tokens": True}):
        with pytest.raises(PolyrouteError, match="must be a number above 0"):
            Limits(**bad)  # type: ignore[arg-type]


def _raised(call) -> FixableError:
    """The domain error `call()` raises (its `str` is what a Python-API user reads)."""
    with pytest.raises((PolyrouteError, StoreError)) as raised:
        call()
    return raised.value


def test_domain_errors_name_parameters_and_the_cli_says_its_flags(tmp_path, corpus_file, capsys):
    from moe_core.backends.hf import load_config
    from moe_core.evaluation.sweeps import parse_sweep
    from moe_core.languages import parse_langs
    from polyroute.ui.words import error_words
    from store import open_store

    db, missing = tmp_path / "s.duckdb", tmp_path / "missing"
    bad_sweep = ["eval", "--sweep", "nonsense", "--task", "mgsm", "--corpus", "builtin", "--langs", "eng_Latn"]
    cases = [  # (the domain call, what it says, the same bad input on the command line, what that says)
        (lambda: open_store(tmp_path), "pass db a file", ["runs", "--db", str(tmp_path)], "pass --db a file"),
        (
            lambda: load_config(missing),
            f"model folder {missing} does not exist: pass model a folder",
            trace_argv(db, missing, corpus_file),
            f"model folder {missing} does not exist: pass --model a folder",
        ),
        (
            lambda: parse_langs(","),
            "pass codes such as langs eng_Latn",
            trace_argv(db, missing, corpus_file, ","),
            "pass codes such as --langs eng_Latn",
        ),
        (
            lambda: parse_sweep("nonsense"),
            "cannot read sweep 'nonsense'",
            [*bad_sweep, "--model", str(missing), "--db", str(db)],
            "cannot read --sweep 'nonsense'",
        ),
    ]
    for call, said, argv, flagged in cases:
        message = str(_raised(call))
        assert said in message and "--" not in message, message
        assert flagged in _fails(capsys, argv)
    # A page says the parameter as the control that sets it.
    assert error_words(_raised(lambda: load_config(missing))).endswith(
        "pass the model a folder with config.json and weights"
    )
    assert not db.exists()


# --- corpus files --------------------------------------------------------------------------------


def _bad_corpora(folder: Path) -> dict[str, tuple[Path, str]]:
    def write(name: str, data: bytes) -> Path:
        path = folder / name
        path.write_bytes(data)
        return path

    good = b'{"item_id": "1", "lang": "eng_Latn", "text": "Hello there."}\n'
    latin1 = '{"item_id": "2", "lang": "eng_Latn", "text": "caf\xe9"}\n'.encode("latin-1")
    deep_object = b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"\n"
    unclosed = b'item_id,lang,text\n1,eng_Latn,"Hello\n1,deu_Latn,Hallo\n2,eng_Latn,Bye\n'
    return {
        "invalid UTF-8": (write("latin1.jsonl", good + latin1), "not UTF-8 text"),
        "JSON syntax error": (write("broken.json", b'[{"item_id": "1", "lang": '), "line 1 column 27: not valid JSON"),
        "JSONL syntax error": (write("broken.jsonl", good + b"{nope}\n"), "line 2: not valid JSON"),
        "random bytes as parquet": (write("noise.parquet", os.urandom(4096)), "cannot read it as parquet"),
        "100k-deep JSON": (write("deep.json", b"[" * 100_000 + b"]" * 100_000), "nested too deeply"),
        "100k-deep JSONL": (write("deep.jsonl", deep_object), "nested too deeply"),
        "a number as text": (write("number.jsonl", good.replace(b'"Hello there."', b"42")), "the text is 42, not a"),
        "unclosed CSV quote": (write("quote.csv", unclosed), "the quote that opens the text 'Hello'... never closes"),
        "a folder": (folder, "is a folder: pass a corpus file"),
    }


def test_each_bad_corpus_file_is_named_with_its_problem(tmp_path, model, capsys):
    folder = tmp_path / "corpora"
    folder.mkdir()
    for name, (corpus, message) in _bad_corpora(folder).items():
        db = tmp_path / f"{name.replace(' ', '_')}.duckdb"
        err = _fails(capsys, trace_argv(db, model, corpus))
        assert message in err, (name, err)
        assert not db.exists(), name  # the new store was removed again


def test_corpus_show_names_the_same_problems(tmp_path, capsys):
    for name, (corpus, message) in _bad_corpora(tmp_path).items():
        assert message in _fails(capsys, ["corpus", "show", str(corpus)]), name


# --- models and store paths ----------------------------------------------------------------------


def test_a_truncated_checkpoint_and_a_file_as_model_are_named(tmp_path, model, corpus_file, capsys):
    cut = tmp_path / "cut"
    cut.mkdir()
    for part in model.iterdir():
        (cut / part.name).write_bytes(part.read_bytes())
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    db = tmp_path / "s.duckdb"
    assert "checkpoint is complete" in _fails(capsys, trace_argv(db, cut, corpus_file))
    assert "is a file, not a model folder" in _fails(capsys, trace_argv(db, corpus_file, corpus_file))
    assert "trace needs --model" in _fails(capsys, ["trace", "--db", str(db), "--corpus", "x"])
    assert not db.exists()


def test_a_failed_command_keeps_an_existing_store_byte_for_byte(tmp_path, model, corpus_file, capsys):
    db = tmp_path / "s.duckdb"
    assert main(trace_argv(db, model, corpus_file, "eng_Latn", "--limit", "2")) == 0
    before = snapshot(db)
    _fails(capsys, trace_argv(db, model, tmp_path / "missing.jsonl"))
    assert snapshot(db) == before


def test_a_store_under_a_file_says_so(tmp_path, model, corpus_file, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    err = _fails(capsys, trace_argv(blocker / "s.duckdb", model, corpus_file))
    assert "a file stands where its folder should be" in err and "pass --db another path" in err
    assert blocker.read_text() == "not a folder"
    for argv in (trace_argv(tmp_path, model, corpus_file), ["runs", "--db", str(tmp_path)]):
        assert f"{tmp_path} is a folder, not a store file" in _fails(capsys, argv)


@pytest.mark.slow
def test_a_new_store_in_a_read_only_folder_says_so(tmp_path, model, corpus_file):
    """A real permission error: root may write anywhere, so as root the command runs without the
    capabilities that override file permissions (setpriv)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    prefix: list[str] = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("needs setpriv (util-linux) to drop root's permission override")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
    command = [*prefix, sys.executable, "-m", "polyroute.cli", *trace_argv(folder / "s.duckdb", model, corpus_file)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Permission denied" in result.stderr, result.stderr
    assert (
        f"store {folder / 's.duckdb'} cannot be written" in result.stderr and "a folder you may write" in result.stderr
    )
    assert list(folder.iterdir()) == []


# --- a full disk (a small tmpfs, mounted for the test) --------------------------------------------


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here ({mounted.stderr.decode().strip()}); needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def _grow(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=64m", str(path)], check=True)


@pytest.mark.slow
@pytest.mark.parametrize("size", ["1024k", "1200k", "2m"])
def test_a_new_store_on_a_full_disk_is_whole_or_absent_and_says_how(tmp_path, model, corpus_file, capsys, size):
    with tmpfs(tmp_path / "disk", size) as disk:
        db = disk / "s.duckdb"
        capsys.readouterr()
        if main(trace_argv(db, model, corpus_file, "eng_Latn,deu_Latn,rus_Cyrl")) != 0:
            err = capsys.readouterr().err.strip().splitlines()[-1]
            assert err.startswith("polyroute: error: the disk of store") and "free some space" in err, err
        assert sorted(p.name for p in disk.iterdir()) in ([], ["s.duckdb"], ["s.duckdb", "s.duckdb.wal"])
        _grow(disk)
        if db.exists():  # whole: it opens, and whatever run it holds finishes
            assert main(["runs", "--db", str(db), "--format", "json"]) == 0
            for run in json.loads(capsys.readouterr().out):
                assert main(["trace", "--resume", str(run["run_id"]), "--db", str(db)]) == 0
        assert main(trace_argv(db, model, corpus_file, "eng_Latn")) == 0


@pytest.mark.slow
def test_an_existing_store_on_a_full_disk_keeps_its_runs_and_resumes(tmp_path, model, corpus_file, capsys):
    with tmpfs(tmp_path / "disk", "16m") as disk:
        db = disk / "s.duckdb"
        assert main(trace_argv(db, model, corpus_file, "eng_Latn", "--limit", "2")) == 0
        before = snapshot(db)
        filler = disk / "filler"
        with filler.open("wb") as out, pytest.raises(OSError):
            while True:
                out.write(b"\0" * (1 << 16))
        err = _fails(capsys, trace_argv(db, model, corpus_file, "eng_Latn,deu_Latn,rus_Cyrl"), after_progress=True)
        assert "is full" in err and "free some space" in err
        filler.unlink()
        assert snapshot(db) == before or main(["trace", "--resume", "2", "--db", str(db)]) == 0
        with duckdb.connect(str(db), read_only=True) as con:
            assert con.execute("SELECT run_id, status FROM runs ORDER BY 1").fetchall()[0] == (1, "complete")
            assert con.execute("SELECT count(*) FROM sequences WHERE run_id = 1").fetchone() == (2,)


# --- corrupt stores -------------------------------------------------------------------------------


@pytest.mark.slow
def test_damage_anywhere_in_a_store_is_refused_as_corrupt_or_shown_harmless(tmp_path, model, corpus_file, capsys):
    """4 KiB of garbage written over each 256 KiB block in turn, then every row of every table read
    through the console: either each reads exactly as before (the damage was in unused space), or
    the command refuses the store as damaged. DuckDB checksums every block it reads."""
    clean = tmp_path / "clean.duckdb"
    assert main(trace_argv(clean, model, corpus_file, "eng_Latn,deu_Latn,rus_Cyrl")) == 0
    every_row = " UNION ALL ".join(f"SELECT '{t}', count(*), sum(hash(x)) FROM {t} AS x" for t in TABLES)
    capsys.readouterr()
    assert main(["sql", every_row, "--db", str(clean), "--format", "json"]) == 0
    expected, data = capsys.readouterr().out, clean.read_bytes()
    outcomes = {"refused": 0, "harmless": 0}
    for offset in range(4096, len(data) - 4096, 256 * 1024):
        damaged = tmp_path / "damaged.duckdb"
        damaged.write_bytes(data[:offset] + os.urandom(4096) + data[offset + 4096 :])
        capsys.readouterr()
        if main(["sql", every_row, "--db", str(damaged), "--format", "json"]) == 0:
            assert capsys.readouterr().out == expected, offset
            outcomes["harmless"] += 1
        else:
            err = capsys.readouterr().err.strip()
            assert err.startswith("polyroute: error: store") and "is damaged" in err and "move it aside" in err, err
            outcomes["refused"] += 1
    assert outcomes["refused"] >= 1 and sum(outcomes.values()) >= 3, outcomes


# --- interrupted runs -----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_trace_shows_as_interrupted_with_the_resume_command(tmp_path, model, capsys):
    from tests.helpers import PROGRESS, repeated_corpus

    corpus = repeated_corpus(tmp_path / "corpus.jsonl", copies=20)
    db = tmp_path / "s.duckdb"
    command = [sys.executable, "-m", "polyroute.cli", *trace_argv(db, model, corpus, "eng_Latn,deu_Latn,rus_Cyrl")]
    process = subprocess.Popen([*command, "--batch-size", "1"], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert process.stderr is not None
    os.set_blocking(process.stderr.fileno(), False)
    seen, deadline = b"", time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        seen += process.stderr.read() or b""
        counts = PROGRESS.findall(seen)
        if counts and 0 < int(counts[-1][0]) < int(counts[-1][1]):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert process.wait(timeout=30) == -signal.SIGKILL, seen[-300:]

    capsys.readouterr()
    assert main(["runs", "--db", str(db), "--format", "json"]) == 0
    captured = capsys.readouterr()
    [run] = json.loads(captured.out)
    assert run["status"] == "interrupted"
    assert f"process {process.pid} on" in captured.err
    assert f"finish it with `polyroute trace --resume 1 --db {db}`" in captured.err
    assert main(["trace", "--resume", "1", "--db", str(db)]) == 0
    capsys.readouterr()
    assert main(["runs", "--db", str(db), "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)[0]["status"] == "complete" and "resume" not in captured.err


def test_a_run_this_process_writes_shows_as_running(tmp_path, model, corpus_file):
    """As the app sees a collection it runs itself: the run in progress is running, not interrupted."""
    from polyroute.run_status import shown_status
    from polyroute.workflows.trace import TraceRequest, start_trace
    from store import open_store
    from store.queries import get_run

    seen: list[str] = []
    with open_store(tmp_path / "s.duckdb") as store:

        def progress(run_id: int, n_sequences: int, n_tokens: int):
            run = get_run(store, run_id)
            assert run is not None
            seen.append(shown_status(run))
            return lambda sequences, tokens: None

        request = TraceRequest(db=store.path, model=model, corpus=corpus_file, langs=["eng_Latn"])
        run_id = start_trace(request, progress, store=store).run_id
        finished = get_run(store, run_id)
    assert seen == ["running"] and finished is not None and shown_status(finished) == "complete"


# --- the unexpected -------------------------------------------------------------------------------


def test_an_unexpected_error_says_it_is_a_bug_and_where_to_report_it(tmp_path, monkeypatch, capsys):
    import polyroute.cli.runs as runs_command

    def broken(args):
        raise KeyError("surprise")

    monkeypatch.setattr(runs_command, "run", broken)
    assert main(["runs", "--db", str(tmp_path / "s.duckdb")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("polyroute: internal error: KeyError") and "report it" in err and "\n" not in err
    assert not (tmp_path / "s.duckdb").exists()


# --- the SQL console ------------------------------------------------------------------------------

BOMBS = [
    "SELECT length(repeat('x', 2000000000))",
    "SELECT length(regexp_replace(repeat('a', 100000000), 'a', 'bb', 'g'))",
    "SELECT length(string_agg(repeat('x', 1000000), '')) FROM range(5000)",
    "SELECT length(list_sort(range(1, 200000000)))",
    "SELECT length(repeat(repeat('x', 1000), 1000))",
    "SELECT length(rpad(text, 100000000, 'x')) FROM texts",
]
PATH_LEAKS = [
    "SELECT current_setting('temp_directory')",
    "SUMMARIZE SELECT current_setting('temp_directory')",
    "SELECT * FROM duckdb_settings()",
    "FROM duckdb_settings",
    "SELECT * FROM pg_settings",
    "SELECT * FROM system.main.duckdb_databases",
    "PRAGMA database_list",
]


@pytest.fixture(scope="module")
def console_store(tmp_path_factory, tiny_model) -> Path:
    folder = tmp_path_factory.mktemp("console")
    corpus = folder / "corpus.jsonl"
    corpus.write_text('{"item_id": "1", "lang": "eng_Latn", "text": "Hello there."}\n')
    db = folder / "s.duckdb"
    assert main(trace_argv(db, tiny_model("qwen3_moe"), corpus)) == 0
    return db


@pytest.mark.parametrize("kind", ["path", "shared"])
@pytest.mark.parametrize("query", BOMBS + PATH_LEAKS)
def test_console_bombs_and_path_readers_are_refused_before_they_run(console_store, kind, query):
    from store import SqlRefused
    from store.sandbox import run_sql
    from tests.helpers import opened

    before, started = file_digest(console_store), time.monotonic()
    with opened(kind, console_store) as source, pytest.raises(SqlRefused) as refused:
        run_sql(source, query)
    assert time.monotonic() - started < 10
    assert str(console_store.parent) not in str(refused.value)
    assert ("builds at most" if query in BOMBS else "settings hold this machine's paths") in str(refused.value) or (
        "is not available in the console" in str(refused.value)
    )
    assert file_digest(console_store) == before


def test_the_cli_console_kills_its_child_at_the_time_cap(console_store, monkeypatch):
    from store import SqlRefused, sandbox

    monkeypatch.setattr(sandbox, "_CHILD_GRACE_S", 0.0)  # the child cannot even start in 0.01 s
    with pytest.raises(SqlRefused, match=r"ran longer than 0\.01 s and was stopped"):
        sandbox.run_sql(console_store, "SELECT 1", timeout_s=0.01)
    monkeypatch.undo()
    assert sandbox.run_sql(console_store, "SELECT count(*) FROM runs").rows == [(1,)]


def test_console_json_is_strict_and_tables_show_control_characters(console_store, capsys):
    query = "SELECT 'nan'::DOUBLE AS a, '-inf'::DOUBLE AS b, ['inf'::DOUBLE] AS c, chr(27) || '[2J' || chr(7) AS d"
    capsys.readouterr()
    assert main(["sql", query, "--db", str(console_store), "--format", "json"]) == 0
    refuse = lambda name: pytest.fail(f"{name} in the JSON output")  # noqa: E731
    assert json.loads(capsys.readouterr().out, parse_constant=refuse) == [
        {"a": "NaN", "b": "-Infinity", "c": ["Infinity"], "d": "\x1b[2J\x07"}
    ]
    assert main(["sql", query, "--db", str(console_store)]) == 0
    table = capsys.readouterr().out
    assert "\\x1b[2J\\x07" in table and "\x1b" not in table and "\x07" not in table
