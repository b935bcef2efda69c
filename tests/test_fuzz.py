"""Bounded fuzzing of the two front doors: `polyroute serve` (a real server on 127.0.0.1, with a
token) and the `polyroute` command. Inputs come from the hostile cases found by hand and from a
seeded generator around them; each loop stops at a count and a time limit.

What must hold: the server answers every request with a status below 500 and a JSON message, and
`/health` after each one; the command exits 0, or 2 with one `polyroute: error:` line, never a
traceback or an internal error, and never changes a store it failed on.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from polyroute.cli import main
from tests.helpers import Served, serving, snapshot, trace_argv

pytestmark = pytest.mark.slow
TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SEED = 20
SERVER_REQUESTS, SERVER_SECONDS = 200, 90.0
CLI_RUNS, CLI_SECONDS = 60, 120.0


def _generate(params: str, plan: str = "null") -> bytes:
    """A /generate body with a short answer and these raw params (JSON text, NaN and all)."""
    return f'{{"prompts": ["Hi"], "params": {{"max_new_tokens": 2, {params}}}, "plan": {plan}}}'.encode()


ODD_PLAN = json.dumps(
    {
        "method": "soft",
        "band": [0, 1],
        "strength": 1,
        "experts": [{"layer": 0, "experts": [1], "coefficients": ["nan"]}],
    }
)

# The requests that once got a 500 (and a few more): raw body, status, part of the message.
KNOWN = [
    ("/count_tokens", b'{"texts": ["a\\ud800b"]}', 422, "lone surrogate"),
    ("/trace", b'{"batches": [["ok", "\\udfff"]]}', 422, "lone surrogate"),
    ("/trace", b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
    ("/count_tokens", b'{"texts": ["a"], "x": ' + b"7" * 5000 + b"}", 400, "thousands of digits"),
    ("/generate", _generate('"seed": 100000000000000000000000'), 422, "seed must be"),
    ("/generate", _generate('"do_sample": true, "temperature": NaN'), 400, "NaN"),
    ("/generate", _generate('"do_sample": true, "temperature": 0'), 422, "temperature"),
    ("/generate", _generate('"do_sample": true, "temperature": -1'), 422, "temperature"),
    ("/generate", _generate('"top_p": 1e999'), 422, "top_p must lie in (0, 1], not inf"),
    ("/generate", _generate('"top_p": 0'), 422, "top_p"),
    ("/generate", _generate('"seed": 1', ODD_PLAN), 422, "finite"),
    ("/trace", b'{"batches": [["a"]], "extra": 1}', 422, "unknown field 'extra'"),
    ("/trace", b"\xff\xfe not utf-8", 400, "not JSON"),
    ("/count_tokens", b"", 400, "not JSON"),
]


@pytest.fixture(scope="module")
def guarded(tiny_model) -> Iterator[Served]:
    with serving(tiny_model("qwen3_moe"), "--token", TOKEN, "--max-texts", "16", "--max-new-tokens", "4") as served:
        yield served


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(url, content=body, headers={"content-type": "application/json", **(headers or {})}, timeout=60)


def test_the_requests_that_once_failed_get_a_4xx_with_the_fix(guarded):
    for path, body, status, message in KNOWN:
        answer = _post(guarded.url + path, body, AUTH)
        assert (answer.status_code, message in answer.json()["error"]) == (status, True), (path, answer.text)
        assert httpx.get(f"{guarded.url}/health").status_code == 200


def _value(rng: random.Random, depth: int = 0) -> Any:
    """A JSON value of any kind, hostile ones favoured."""
    leaves: list[Any] = [
        None, True, False, 0, -1, 1 << 70, -(1 << 63) - 1, 0.5, 1e308, -0.0, "", "ok", "\x00", "\u202e evil",
        "x" * rng.randint(0, 3000), "\ud800", "🙂" * 50, [], {},
    ]  # fmt: skip
    if depth > 3 or rng.random() < 0.5:
        return rng.choice(leaves)
    if rng.random() < 0.5:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["texts", "batches", "prompts", "params", "plan", "save_logits", "seed", "temperature", "zzz"]
    return {rng.choice(keys): _value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def _body(rng: random.Random, path: str) -> bytes:
    """A valid request body bent one way, or a stranger."""
    valid: dict[str, dict[str, Any]] = {
        "/count_tokens": {"texts": ["Hello there.", "Hallo."]},
        "/trace": {"batches": [["Hello there."], ["Hallo."]], "save_logits": False},
        "/generate": {"prompts": ["Hi"], "params": {"max_new_tokens": 2, "do_sample": True, "seed": 1}},
    }
    body = json.loads(json.dumps(valid[path]))
    roll = rng.random()
    if (
        roll < 0.15
    ):  # well formed, with odd texts: control characters, right-to-left marks, emoji, long, a lone surrogate
        odd = rng.choice(["\x00\x1b[2J", "\u202e evil", "🙂" * 50, "x" * rng.randint(1, 3000), "a\r\nb", "a\ud800b"])
        texts = body["batches"][0] if path == "/trace" else body["texts" if path == "/count_tokens" else "prompts"]
        texts[0] = odd
        return json.dumps(body).encode()
    if roll < 0.6:  # one field replaced, nested ones too
        target = body["params"] if path == "/generate" and rng.random() < 0.5 else body
        target[rng.choice([*target, "extra"])] = _value(rng)
    elif roll < 0.75:
        body = _value(rng)
    elif roll < 0.85:
        return rng.randbytes(rng.randint(0, 200))
    elif roll < 0.95:
        text = json.dumps(body)
        cut = rng.randint(0, len(text))
        return text[:cut].encode() + rng.choice([b"NaN", b"Infinity", b"[" * 5000, b"\\ud800", b"1" * 4400, b""])
    else:
        depth = rng.randint(500, 200_000)
        return b'{"texts": ' + b"[" * depth + b"]" * depth + b"}"
    return json.dumps(body, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")


def test_random_requests_never_get_a_500_and_the_server_keeps_serving(guarded):
    rng = random.Random(SEED)
    started, sent, statuses = time.monotonic(), 0, set()
    while sent < SERVER_REQUESTS and time.monotonic() - started < SERVER_SECONDS:
        path = rng.choice(["/count_tokens", "/trace", "/generate"])
        body = _body(rng, path)
        headers = AUTH if rng.random() < 0.9 else rng.choice([{}, {"Authorization": "Bearer wrong"}])
        answer = _post(guarded.url + path, body, headers)
        if headers != AUTH:
            assert answer.status_code == 401, (path, body[:200])
        assert answer.status_code < 500, (path, body[:300], answer.text)
        if answer.status_code >= 400:
            assert answer.json()["error"], (path, body[:300])
        assert httpx.get(f"{guarded.url}/health").status_code == 200
        sent, statuses = sent + 1, statuses | {answer.status_code}
    assert sent >= 50, f"only {sent} requests in {SERVER_SECONDS} s"
    assert {200, 400, 401, 422} <= statuses, statuses  # the generator reaches the model and every refusal


# --- the command ----------------------------------------------------------------------------------

HOSTILE_VALUES = ["-5", "0", "1", "99999", "1e999", "nan", "", "tpu9", "cuda:x", "\x1b[31mred", "../..", "é" * 40]


def _argv(rng: random.Random, paths: dict[str, Path], db: Path) -> list[str]:
    """A command line near a real one: the right command, flags with hostile or real values."""
    files = [str(path) for path in paths.values()]
    value = lambda: rng.choice([*HOSTILE_VALUES, *files])  # noqa: E731
    command = rng.choice(["trace", "sql", "runs", "corpus show", "languages", "analyze entropy", "serve"])
    if command == "trace":
        argv = trace_argv(db, paths["model"], paths["corpus"], rng.choice(["eng_Latn", "deu_Latn,xx_Yyyy", "", "é"]))
        flags = ["--max-tokens", "--batch-size", "--limit", "--device", "--template", "--resume", "--split"]
        argv += [part for flag in rng.sample(flags, rng.randint(1, 3)) for part in (flag, value())]
        if rng.random() < 0.3:
            argv[argv.index("--corpus") + 1] = value()
        if rng.random() < 0.3:
            argv[argv.index("--model") + 1] = value()
        return argv
    if command == "sql":
        query = rng.choice(["SELECT 1", "SELECT 'nan'::DOUBLE", "SELECT chr(27)", "DROP TABLE runs", value()])
        return ["sql", query, "--db", str(db), "--max-rows", value(), "--format", rng.choice(["json", "csv", "table"])]
    if command == "serve":  # never the model: the command must fail before it would serve
        model = rng.choice([*HOSTILE_VALUES, str(paths["corpus"]), str(paths["folder"])])
        return ["serve", "--model", model, "--port", value(), rng.choice(["--max-request-mb", "--max-texts"]), value()]
    if command == "corpus show":
        return ["corpus", "show", value(), "--limit", value(), "--langs", rng.choice(["eng_Latn", "x", value()])]
    if command == "analyze entropy":
        return ["analyze", "entropy", "--run", value(), "--db", str(db), "--layers", value()]
    if command == "languages":
        return ["languages", "--family", value(), "--resource-class", value()]
    return ["runs", "--db", rng.choice([str(db), value()])]


def test_random_command_lines_end_in_one_clear_line(tmp_path, tiny_model, corpus_file, capsys):
    rng = random.Random(SEED)
    db = tmp_path / "s.duckdb"
    assert main(trace_argv(db, tiny_model("qwen3_moe"), corpus_file, "eng_Latn", "--limit", "2")) == 0
    noise = tmp_path / "noise.parquet"
    noise.write_bytes(rng.randbytes(2048))
    folder = tmp_path / "folder"
    folder.mkdir()
    paths = {"model": tiny_model("qwen3_moe"), "corpus": corpus_file, "noise": noise, "folder": folder, "db": db}
    started, runs, codes = time.monotonic(), 0, []
    while runs < CLI_RUNS and time.monotonic() - started < CLI_SECONDS:
        argv = _argv(rng, paths, db)
        before = snapshot(db)
        capsys.readouterr()
        code = main(argv)
        err = capsys.readouterr().err
        assert code in (0, 2), (argv, err)
        assert "Traceback" not in err and "internal error" not in err, (argv, err)
        if code == 2:
            assert err.strip().splitlines()[-1].startswith("polyroute: error: "), (argv, err)
            assert snapshot(db) == before, argv
        runs, codes = runs + 1, [*codes, code]
    assert runs >= 20, f"only {runs} command lines in {CLI_SECONDS} s"
    assert codes.count(0) >= 3 and codes.count(2) >= 10, codes  # both kinds of ending were exercised
