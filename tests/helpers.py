"""The one support module of the tests (no test imports another test module): store snapshots and
digests, a process that holds a store's lock, the routing summaries checked against a rebuild, each
sequence's distributions from its raw rows, id-only runs made from full ones,
benchmark copies (MGSM, Belebele) and corpora, `polyroute serve` processes, a gated synthetic
backend, and the form steps of the Steering and Evaluate pages. Model and UI libraries load only
in the helpers that need them."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import httpx
import numpy as np

from moe_core.demo import DEMO_MODEL_DIR
from moe_core.records import RoutingBatch
from moe_core.steering import LayerExperts, SteeringPlan
from moe_core.synthetic import SyntheticBackend
from polyroute.cli import main
from store import SharedStore, Store, open_store, upgrades
from store import queries as q
from tests.apptest import wait_for_job
from tests.conftest import PARALLEL, write_jsonl

if TYPE_CHECKING:
    from streamlit.testing.v1 import AppTest

TABLES = ("models", "languages", "corpora", "texts", "runs", "sequences", "tokens", "route_lists", "router_probs")


def snapshot(db: Path) -> dict[str, object]:
    """Row counts and a content digest of every table: equal snapshots = nothing changed."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        digest = {}
        for table in TABLES:
            rows = con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
            digest[table] = (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest())
        return digest
    finally:
        con.close()


SUMMARY_ORDER = {
    "sequence_routing": "seq_id, layer",
    "language_routing": "lang, layer",
    "language_expert_routing": "lang, layer, expert",
    "language_pair_divergence": "source, lang_a, lang_b, layer",
}


def assert_summaries_match_a_rebuild(db: Path, run_id: int, scratch: Path) -> None:
    """The summaries the writer kept for run `run_id` equal those rebuilt from its stored rows (on a
    copy in `scratch`), sums to rounding."""
    import shutil

    import pytest

    from store import open_store, upgrades

    rebuilt = scratch / f"rebuilt-{db.name}"
    shutil.copy(db, rebuilt)
    wal = Path(f"{db}.wal")  # a killed writer's last batches may be there still
    if wal.exists():
        shutil.copy(wal, f"{rebuilt}.wal")
    with open_store(rebuilt) as store:
        upgrades.rebuild_summaries(store, run_id)
    for table, order in SUMMARY_ORDER.items():
        query = f"SELECT * FROM {table} WHERE run_id = {run_id} ORDER BY {order}"
        with duckdb.connect(str(db), read_only=True) as kept, duckdb.connect(str(rebuilt), read_only=True) as again:
            written, expected = kept.execute(query).fetchall(), again.execute(query).fetchall()
        assert len(written) == len(expected), table
        assert written or table == "language_pair_divergence", table  # no pair yet: one language of each item
        for row, want in zip(written, expected, strict=True):
            for value, wanted in zip(row, want, strict=True):  # sums in another order: equal to rounding
                assert value == (pytest.approx(wanted, rel=1e-9, abs=1e-12) if isinstance(wanted, float) else wanted)
    rebuilt.unlink()
    Path(f"{rebuilt}.wal").unlink(missing_ok=True)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextmanager
def store_held_by_another_process(db: Path, *, read_only: bool = False) -> Iterator[int]:
    """Another process opens `db` (for writing, as the app would, or to read) until the block ends;
    yields its PID."""
    code = (
        "import duckdb, sys, time; con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == 'ro'); "
        "print('ready', flush=True); time.sleep(120)"
    )
    mode = "ro" if read_only else "rw"
    holder = subprocess.Popen([sys.executable, "-c", code, str(db), mode], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


# Soft steering of experts 0 and 1 in layer 1 of a tiny three-layer model: strong enough to move routing.
STEERED_LAYER = 1
STEERING_PLAN = SteeringPlan(
    method="soft",
    band=(STEERED_LAYER, STEERED_LAYER),
    experts=(LayerExperts(layer=STEERED_LAYER, experts=(0, 1)),),
    strength=8.0,
    source="test",
)


def trace_argv(db: Path, model: Path, corpus: Path, langs: str = "eng_Latn", *extra: str) -> list[str]:
    """`polyroute trace` arguments for a model, a corpus and languages, into the store `db`."""
    return ["trace", "--db", str(db), "--model", str(model), "--corpus", str(corpus), "--langs", langs, *extra]


_EXPERT_KEY = re.compile(r"\.layers\.(\d+)\..*\bexperts\.(\d+)\.")


def assert_only_experts_changed_on_disk(base: Path, merged: Path, selected: list[tuple[int, int]]) -> None:
    """Every tensor in the checkpoint files is bit-identical but those of the selected experts.

    transformers saves fused experts back in the family's own layout (one tensor per expert and
    projection for Qwen3-MoE), so a file's tensor belongs to the expert its name says."""
    import torch
    from safetensors.torch import load_file

    old, new = load_file(str(base / "model.safetensors")), load_file(str(merged / "model.safetensors"))
    assert old.keys() == new.keys()
    changed = set()
    for name, tensor in old.items():
        match = _EXPERT_KEY.search(name)
        if match and (int(match[1]), int(match[2])) in selected:
            assert not torch.equal(tensor, new[name]), name
            changed.add((int(match[1]), int(match[2])))
        else:
            assert torch.equal(tensor, new[name]), name
    assert changed == set(selected)


def store_digest(db: Path) -> dict[str, str]:
    """A digest of every table of the store: equal = nothing changed."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = [row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        return {
            t: hashlib.sha256(repr(con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()).encode()).hexdigest()
            for t in tables
        }
    finally:
        con.close()


def belebele_item(code: str, n: int) -> dict[str, object]:
    return {
        "link": f"https://en.wikibooks.org/wiki/page{n // 2}", "question_number": n % 2 + 1,
        "flores_passage": f"{code} passage {n} about the city.", "question": f"{code} question {n}?",
        "mc_answer1": "one", "mc_answer2": "two", "mc_answer3": "three", "mc_answer4": "four",
        "correct_answer_num": str(n % 4 + 1), "dialect": code, "ds": "2023-05-03",
    }  # fmt: skip


def mgsm_copy(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "mgsm_en.tsv").write_text(
        "Janet has 3 ducks and buys 4 more. How many ducks?\t7\nA farm has 2,000 eggs and sells 5. How many?\t1,995\n",
        encoding="utf-8",
    )
    (folder / "mgsm_de.tsv").write_text(
        "Janet hat 3 Enten und kauft 4 dazu. Wie viele Enten?\t7\n"
        "Ein Hof hat 2.000 Eier und verkauft 5. Wie viele?\t1995\n",
        encoding="utf-8",
    )
    return folder


def belebele_copy(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    for code in ("eng_Latn", "deu_Latn"):
        write_jsonl(folder / f"{code}.jsonl", [belebele_item(code, n) for n in range(3)])
    return folder


def run_id_of(out: str) -> int:
    match = re.search(r"^run (\d+):", out, re.MULTILINE)
    assert match, out
    return int(match.group(1))


PROGRESS = re.compile(rb"(\d+)/(\d+) \[")


def repeated_corpus(path, copies: int):
    rows = [
        {"item_id": f"{copy}-{i}", "lang": lang, "text": f"{text} ({copy})"}
        for copy in range(copies)
        for lang, texts in PARALLEL.items()
        for i, text in enumerate(texts)
    ]
    return write_jsonl(path, rows)


@contextmanager
def opened(kind: str, db: Path) -> Iterator[Path | SharedStore]:
    """The CLI's source (the file) or the app's (a shared store of it, closed when the block ends)."""
    if kind == "path":
        yield db
        return
    shared = SharedStore(db)
    try:
        yield shared
    finally:
        shared.close()


def steering_controls(
    at: AppTest, *, method: str = "soft", strength: float = 0.5, experts: list[int] | None = None
) -> AppTest:
    at.radio(key="steering_source").set_value("experts I choose").run()
    at.selectbox(key="steering_method").set_value(method).run()
    if method in ("soft", "adaptive"):  # the others have no strength: its slider is disabled
        at.slider(key="steering_strength").set_value(strength).run()
    at.multiselect(key="steering_experts").set_value(experts or [0]).run()
    assert not at.exception, at.exception
    return at


def generate(at: AppTest) -> tuple[str, str]:
    at.button(key="steering_generate").click().run()
    assert not at.exception, at.exception
    assert not at.warning, [w.value for w in at.warning]
    left, right = at.columns[-2:]
    return left.markdown[1].value, right.markdown[1].value


@dataclass
class Served:
    url: str
    process: subprocess.Popen[str]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(model: Path, *extra: str, host: str = "127.0.0.1", startup_s: float = 90) -> Iterator[Served]:
    """A real `polyroute serve` process; yields once /health answers (within `startup_s`)."""
    port = free_port()
    argv = [sys.executable, "-m", "polyroute.cli", "serve", "--model", str(model), "--host", host, "--port", str(port)]
    # A session of its own, so that teardown also ends what the server started (vLLM's engine processes).
    process = subprocess.Popen(
        [*argv, *extra], stderr=subprocess.PIPE, text=True, env={**os.environ}, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if process.poll() is not None:
                raise AssertionError(f"polyroute serve exited: {process.stderr.read() if process.stderr else ''}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"polyroute serve did not come up in {startup_s:.0f} s"
            time.sleep(0.2)
        yield Served(url=url, process=process)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def new_store(db: Path) -> Path:
    open_store(db).close()  # created and migrated, as the Collect page does for a new file
    return db


class Gated:
    """A backend (mixed in before its class) that traces one batch, then waits for the test to open
    the gate (a collection caught mid-run)."""

    # Seconds each batch after the gate takes at least: more than the writer's max_delay_s, so each is
    # stored as its own group and a cancel takes effect after one more batch, not after all the rest.
    pace_s = 0.0

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.batches = 0

    def trace(
        self, texts: Sequence[str], *, save_logits: bool = False, plan: SteeringPlan | None = None
    ) -> RoutingBatch:
        self.batches += 1
        if self.batches > 1:
            assert self.gate.wait(60)
        if self.batches > 2:
            time.sleep(self.pace_s)
        return super().trace(texts, save_logits=save_logits, plan=plan)  # type: ignore[misc]


class GatedBackend(Gated, SyntheticBackend):
    """The synthetic backend, gated after its first batch."""


# The demo model: 4 layers, all MoE, 8 experts. A 2-point sweep of a soft plan on expert 5 in the middle.
PLAN = SteeringPlan(method="soft", band=(1, 2), experts=(LayerExperts(layer=1, experts=(5,)),
                    LayerExperts(layer=2, experts=(5,))), strength=1.0, source="test")  # fmt: skip


SWEEP, TOKENS = "lambda=0,4", 8


def fill_in(at: AppTest, corpus: str, *, plan: str = PLAN.to_json(), sweep: str = SWEEP) -> AppTest:
    """The form of a new evaluation: MGSM on `corpus`, English and German, 2 items, a pasted plan."""
    from polyroute.ui.evaluate import PASTED_PLAN

    at.selectbox(key="widget_evaluate_task").set_value("mgsm").run()
    at.text_input(key="widget_evaluate_corpus").set_value(corpus).run()
    at.multiselect(key=f"evaluate_langs_{corpus}_None").set_value(["eng_Latn", "deu_Latn"]).run()
    at.number_input(key="widget_evaluate_limit").set_value(2).run()
    at.number_input(key="widget_evaluate_tokens").set_value(TOKENS).run()
    at.radio(key="widget_evaluate_plan").set_value(PASTED_PLAN).run()
    at.text_area(key="widget_evaluate_plan_json").set_value(plan).run()
    at.text_input(key="widget_evaluate_sweep").set_value(sweep).run()
    assert not at.exception, at.exception
    return at


def finish(at: AppTest) -> str:
    """Start the evaluation, poll the page until it says the run is complete; that message."""
    at.button(key="evaluate_start").click().run()
    return str(wait_for_job(at, timeout=180).success[0].value)


def stored_scores(store: Store, run_id: int) -> list[tuple[str, str, str, float, int]]:
    return sorted((r.lang, r.variant, r.metric, r.value, r.n) for r in q.eval_results(store, run_id))


def cli_scores(folder: Path, corpus: str) -> list[tuple[str, str, str, float, int]]:
    """What `polyroute eval` stores for the page's request, into a store of its own."""
    db, plan = folder / "cli.duckdb", PLAN.save(folder / "plan.json")
    args = ["eval", "--task", "mgsm", "--model", str(DEMO_MODEL_DIR), "--corpus", corpus, "--langs"]
    args += ["eng_Latn,deu_Latn", "--limit", "2", "--max-new-tokens", str(TOKENS), "--plan", str(plan)]
    assert main([*args, "--sweep", SWEEP, "--db", str(db)]) == 0
    with open_store(db, read_only=True) as store:
        (run,) = q.list_runs(store)
        return stored_scores(store, run.run_id)


def stored_rows(db: Path, sql: str) -> list[tuple]:
    """The rows of `sql` on a read-only connection of its own."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def sequence_distributions(db: Path, *, n_experts: int = 16, top_k: int = 2) -> dict[int, dict[str, object]]:
    """Every sequence of run 1: its language, item, tokens and, per layer, its three distributions
    (soft, weight, hard) and hits, computed from the raw `routes` and `router_probs` rows in Python
    loops (the defaults: the planted store's 16 experts, top-2)."""
    sequences = {
        seq: {"lang": lang, "item": item, "n": n, "hits": {}, "weight": {}, "soft": {}}
        for seq, lang, item, n in stored_rows(
            db, "SELECT seq_id, lang, item_id, n_tokens FROM sequences WHERE run_id = 1"
        )
    }
    tokens: dict[tuple[int, int, int], list[tuple[int, float]]] = {}
    for seq, pos, layer, expert, weight in stored_rows(
        db, "SELECT seq_id, pos, layer, expert, weight FROM routes WHERE run_id = 1"
    ):
        tokens.setdefault((seq, pos, layer), []).append((expert, weight))
    for (seq, _, layer), chosen in tokens.items():
        hits = sequences[seq]["hits"].setdefault(layer, np.zeros(n_experts))
        weight = sequences[seq]["weight"].setdefault(layer, np.zeros(n_experts))
        total = sum(w for _, w in chosen)
        for expert, w in chosen:
            hits[expert] += 1
            weight[expert] += w / total / sequences[seq]["n"]
    for seq, layer, probs in stored_rows(db, "SELECT seq_id, layer, probs FROM router_probs WHERE run_id = 1"):
        sequences[seq]["soft"][layer] = np.asarray(probs, dtype=np.float64)
    for seq in sequences.values():
        seq["hard"] = {layer: hits / (seq["n"] * top_k) for layer, hits in seq["hits"].items()}
    return sequences


def make_id_only(db: Path) -> None:
    """Make run 1 of `db` what an id-only backend (vLLM before it captured weights) stores: expert
    ids only, no routing weights, no router probabilities; its summaries rebuilt to match."""
    con = duckdb.connect(str(db))
    con.execute("DELETE FROM router_probs")
    con.execute("UPDATE route_lists SET weight_codes = NULL")
    con.close()
    with open_store(db) as store:
        upgrades.rebuild_summaries(store, 1)  # the rows were edited by hand
