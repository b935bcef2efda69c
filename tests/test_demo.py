"""The demo model and store: the shipped checkpoint reproduces its recorded held-out loss offline;
`polyroute demo` stores every built-in language, where the trained model (and not an untrained
one) routes non-Latin scripts away from English; a second build changes nothing, and a failed
build leaves the store as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from moe_core.backends.hf import HFBackend
from moe_core.corpora import load_corpus
from moe_core.demo import DEMO_MODEL_DIR, TRAINING_RECORD
from moe_core.demo.lm import builtin_texts, heldout_loss
from moe_core.demo.train import epoch_batches
from moe_core.languages import language
from polyroute.analyses import analyze_divergence
from polyroute.cli import main
from polyroute.run_data import RunData, Selection
from polyroute.workflows.trace import TraceRequest, start_trace
from store import open_store
from tests.conftest import PARALLEL, write_jsonl
from tests.helpers import file_digest, trace_argv

REFERENCE = "eng_Latn"
SCRIPT_RATIO = 3.0  # non-Latin divergence from English over Latin, in at least one layer
DEMO_RUNS = "SELECT count(*) FROM runs WHERE model_id LIKE 'polyroute-demo%'"


def _sql(db: Path, query: str, *params: object) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(query, list(params)).fetchall()
    finally:
        con.close()


def _heldout() -> tuple[list[str], int]:
    corpus = load_corpus("builtin", split="heldout")
    return corpus.langs, len(corpus.items)


def _store_with_a_run(folder: Path, tiny_model) -> Path:
    """A store holding a small trace of another model: what a user's store looks like."""
    rows = [{"item_id": f"item{i}", "lang": lang, "text": text} for lang, texts in PARALLEL.items()
            for i, text in enumerate(texts)]  # fmt: skip
    corpus = write_jsonl(folder / "parallel.jsonl", rows)
    db = folder / "mine.duckdb"
    assert main(trace_argv(db, tiny_model("qwen3_moe"), corpus, "eng_Latn,deu_Latn", "--limit", "2")) == 0
    return db


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory, tiny_model) -> Path:
    """`polyroute demo` into a store that already holds another run (which must survive)."""
    db = _store_with_a_run(tmp_path_factory.mktemp("demo"), tiny_model)
    assert main(["demo", "--db", str(db)]) == 0
    return db


def _demo_run_id(db: Path) -> int:
    [(run_id,)] = _sql(db, "SELECT run_id FROM runs WHERE model_id LIKE 'polyroute-demo%'")
    return int(run_id)


def script_ratios(db: Path, run_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per layer: mean entropy-normalised JS from English of the non-Latin-script languages, of the
    Latin-script ones (English excluded), and their ratio; as `polyroute analyze divergence` finds it."""
    with open_store(db, read_only=True) as store:
        result = analyze_divergence(RunData(store, run_id, Selection(ref=REFERENCE)))
    rows = result.table("by_layer").rows
    layers = sorted({layer for _, layer, *_ in rows})
    curves: dict[str, list[float]] = {}
    for lang, _, value, _, _ in sorted(rows, key=lambda row: (row[0], row[1])):
        curves.setdefault(lang, []).append(value)
    latin = [curves[code] for code in curves if language(code).script == "Latn" and code != REFERENCE]
    other = [curves[code] for code in curves if language(code).script != "Latn"]
    non_latin, latin_mean = np.mean(other, axis=0), np.mean(latin, axis=0)
    assert len(non_latin) == len(layers)
    return non_latin, latin_mean, non_latin / latin_mean


@pytest.mark.slow
def test_the_shipped_checkpoint_reproduces_its_heldout_loss_offline():
    record = json.loads((DEMO_MODEL_DIR / TRAINING_RECORD).read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(DEMO_MODEL_DIR, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(DEMO_MODEL_DIR, dtype=torch.float32, local_files_only=True)
    loss = heldout_loss(model, tokenizer, builtin_texts("heldout"))
    assert loss == pytest.approx(record["heldout_loss"], rel=0.01)
    assert record["heldout_loss"] < record["curve"][0]["heldout_loss"] - 2  # it learned
    assert record["corpus"]["content_hash"] == load_corpus("builtin").content_hash  # a changed corpus is caught
    assert sum(path.stat().st_size for path in DEMO_MODEL_DIR.iterdir()) <= 10_000_000
    assert next(iter(model.parameters())).dtype == torch.float32
    assert json.loads((DEMO_MODEL_DIR / "config.json").read_text())["dtype"] == "bfloat16"


def test_training_batches_are_seeded_cover_every_text_once_and_group_similar_lengths():
    lengths = [(i * 37) % 101 + 1 for i in range(1000)]

    def batches(seed: int) -> list[list[int]]:
        return list(epoch_batches(lengths, 16, torch.Generator().manual_seed(seed)))

    first = batches(0)
    assert first == batches(0) and first != batches(1)
    assert sorted(i for batch in first for i in batch) == list(range(1000))
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first])
    assert spread < 10  # a random batch would span most of 1..101


@pytest.mark.slow
def test_the_demo_store_holds_every_builtin_language(demo_store):
    langs, n_items = _heldout()
    run_id = _demo_run_id(demo_store)
    assert len(langs) == 34
    assert _sql(demo_store, "SELECT status, n_planned FROM runs WHERE run_id = ?", run_id) == [
        ("complete", len(langs) * n_items)
    ]
    counts = _sql(demo_store, "SELECT lang, count(*) FROM sequences WHERE run_id = ? GROUP BY lang", run_id)
    assert dict(counts) == dict.fromkeys(langs, n_items)
    layers = _sql(demo_store, "SELECT count(DISTINCT layer) FROM router_probs WHERE run_id = ?", run_id)
    assert layers == [(AutoConfig.from_pretrained(DEMO_MODEL_DIR).num_hidden_layers,)]
    assert _sql(demo_store, "SELECT count(*) FROM runs") == [(2,)]  # the run that was there is kept


@pytest.mark.slow
def test_the_trained_model_routes_non_latin_scripts_away_from_english(demo_store):
    non_latin, latin, ratio = script_ratios(demo_store, _demo_run_id(demo_store))
    assert np.all(np.isfinite(ratio)), (non_latin, latin)
    assert ratio.max() >= SCRIPT_RATIO, (non_latin, latin, ratio)


@pytest.mark.slow
def test_an_untrained_model_of_the_same_shape_does_not(tmp_path):
    random_dir = tmp_path / "untrained"
    shutil.copytree(DEMO_MODEL_DIR, random_dir, ignore=shutil.ignore_patterns("*.safetensors", TRAINING_RECORD))
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(random_dir)).save_pretrained(random_dir)
    langs, _ = _heldout()
    db = tmp_path / "untrained.duckdb"
    outcome = start_trace(TraceRequest(db=db, model=random_dir, corpus="builtin", langs=langs, split="heldout"))
    non_latin, latin, ratio = script_ratios(db, outcome.run_id)
    assert np.all(ratio < SCRIPT_RATIO), (non_latin, latin, ratio)


@pytest.mark.slow
def test_a_second_demo_changes_nothing(demo_store, capsys):
    before = file_digest(demo_store)
    capsys.readouterr()
    assert main(["demo", "--db", str(demo_store)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert _sql(demo_store, DEMO_RUNS) == [(1,)]
    assert file_digest(demo_store) == before


def _crash_on_second_batch(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on the model raises on its second batch, as a crash mid-trace would; returns its calls."""
    original = HFBackend.trace
    calls: list[int] = []

    def failing(self, texts, **kwargs):
        calls.append(len(texts))
        if len(calls) > 1:
            raise RuntimeError("simulated crash mid-trace")
        return original(self, texts, **kwargs)

    monkeypatch.setattr(HFBackend, "trace", failing)
    return calls


@pytest.mark.slow
def test_a_failed_build_leaves_no_store_behind(tmp_path, monkeypatch, capsys):
    db = tmp_path / "data" / "demo.duckdb"
    calls = _crash_on_second_batch(monkeypatch)
    assert main(["demo", "--db", str(db)]) == 1  # an unexpected error: one line that says it is a bug
    assert "polyroute: internal error: RuntimeError: simulated crash" in capsys.readouterr().err
    assert len(calls) == 2
    assert not db.exists()
    assert list(db.parent.iterdir()) == []


@pytest.mark.slow
def test_a_failed_build_leaves_an_existing_store_as_it_was(tmp_path, tiny_model, monkeypatch, capsys):
    db = _store_with_a_run(tmp_path, tiny_model)
    before, files = file_digest(db), sorted(tmp_path.iterdir())
    calls = _crash_on_second_batch(monkeypatch)
    assert main(["demo", "--db", str(db)]) == 1
    assert "polyroute: internal error: RuntimeError: simulated crash" in capsys.readouterr().err
    assert len(calls) == 2
    assert file_digest(db) == before
    assert sorted(tmp_path.iterdir()) == files


@pytest.mark.slow
def test_the_analyses_find_the_demo_models_script_clusters(demo_store):
    from polyroute.analyses import analyze_similarity

    with open_store(demo_store, read_only=True) as store:
        data = RunData(store, _demo_run_id(demo_store), Selection(layers=(0, 3)))
        scripts = {language(code).script for code in data.langs}
        result = analyze_similarity(data, clusters=len(scripts))
    # The model groups languages by script (it learned 9 of them from 250 sentences); families come second.
    assert result.summary["ari_clusters_vs_scripts"] > 0.8, result.summary
