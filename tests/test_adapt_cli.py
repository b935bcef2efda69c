"""`polyroute adapt` and `polyroute adapt merge` end to end on a tiny model and store: the adaptation
run and its rows exist, the merged checkpoint loads and equals the base but the trained experts,
and bad input exits 2 with one line that names the fix, leaving the store and the disk unchanged."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from transformers import AutoConfig

from moe_core.backends.hf import HFBackend
from moe_core.tiny import build_tiny_model
from polyroute.cli import main
from polyroute.workflows.adapt import select
from store import open_store
from store import queries as q
from tests.conftest import PARALLEL, write_jsonl
from tests.helpers import assert_only_experts_changed_on_disk, store_digest, trace_argv

TRAIN = ["--max-steps", "3", "--batch-size", "4", "--lr", "1e-2"]


@pytest.fixture(scope="module")
def adapted(tmp_path_factory: pytest.TempPathFactory, tiny_model) -> dict[str, Path]:
    """A store with a trace of a tiny Qwen3-MoE (run 1) and an adaptation of it to German (run 2)."""
    root = tmp_path_factory.mktemp("adapt_cli")
    rows = [{"item_id": f"item{i}", "lang": lang, "text": t} for lang, ts in PARALLEL.items() for i, t in enumerate(ts)]
    corpus = write_jsonl(root / "parallel.jsonl", rows)
    model, db = tiny_model("qwen3_moe"), root / "s.duckdb"
    assert main(trace_argv(db, model, corpus, "eng_Latn,deu_Latn")) == 0
    argv = _adapt_argv(db, model, corpus, root / "adapter", "--target", "deu_Latn", "--budget", "4")
    assert main(argv) == 0
    return {"root": root, "db": db, "model": model, "corpus": corpus, "adapter": root / "adapter"}


def _adapt_argv(db: Path, model: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        *("adapt", "--db", str(db), "--model", str(model), "--run", "1", "--out", str(out)),
        *("--train-corpus", str(corpus), "--eval-corpus", str(corpus), *TRAIN, *extra),
    ]


def test_the_adaptation_run_and_its_rows_are_stored(adapted):
    with open_store(adapted["db"], read_only=True) as store:
        (run,) = q.adaptation_runs(store)
        experts = q.adaptation_experts(store, run.run_id)
        scores = q.adaptation_scores(store, run.run_id)
        listed = {r.run_id: r for r in q.list_runs(store)}
    assert (run.run_id, run.status, run.trace_run, run.target, run.budget) == (2, "complete", 1, "deu_Latn", 4)
    assert listed[2].kind == "adaptation" and (listed[2].n_stored, listed[2].n_planned) == (4, 4)
    assert run.adapter_dir == str(adapted["adapter"]) and run.params["langs"] == ["deu_Latn", "eng_Latn"]
    assert [e.rank for e in experts] == [1, 2, 3, 4] and {e.zone for e in experts} <= {"shallow", "middle", "deep"}
    assert {(s.lang, s.metric) for s in scores} == {
        (lang, m) for lang in ("deu_Latn", "eng_Latn") for m in ("loss", "perplexity")
    }
    assert all(s.n > 0 and s.change == pytest.approx(s.after - s.before) for s in scores)
    manifest = json.loads((adapted["adapter"] / "adapter.json").read_text())
    assert manifest["adaptation_run"] == 2 and manifest["selected"] == [[e.layer, e.expert] for e in experts]
    assert set(manifest["loss_after"]) == {"deu_Latn", "eng_Latn"}


def test_the_merged_checkpoint_loads_and_differs_from_the_base_only_in_the_trained_experts(adapted, capsys):
    out = adapted["root"] / "merged"
    assert main(["adapt", "merge", "--adapter", str(adapted["adapter"]), "--out", str(out)]) == 0
    assert f"--model {out}" in capsys.readouterr().out
    selected = [tuple(pair) for pair in json.loads((adapted["adapter"] / "adapter.json").read_text())["selected"]]
    assert_only_experts_changed_on_disk(adapted["model"], out, selected)
    assert HFBackend(out).info().n_experts == 8
    # A second merge into the same folder is refused, and the folder is kept as it was.
    before = _digest_folder(out)
    assert main(["adapt", "merge", "--adapter", str(adapted["adapter"]), "--out", str(out)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err and _digest_folder(out) == before


def _digest_folder(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _dense_model(folder: Path) -> Path:
    sizes = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = AutoConfig.for_model("llama", vocab_size=64, architectures=["LlamaForCausalLM"], **sizes)
    config.save_pretrained(folder)
    return folder


def _bad_inputs(adapted: dict[str, Path]) -> dict[str, tuple[list[str], str]]:
    root, db, model, corpus = adapted["root"], adapted["db"], adapted["model"], adapted["corpus"]
    full = root / "full"
    full.mkdir(exist_ok=True)
    (full / "keep.txt").write_text("mine")
    other = root / "other_model"
    if not other.exists():
        build_tiny_model("qwen3_moe", other, layers=2)

    def argv(
        *extra: str, target: str = "deu_Latn", budget: str = "4", model: Path = model, run: str = "1"
    ) -> list[str]:
        args = _adapt_argv(db, model, corpus, root / "never", "--target", target, "--budget", budget, *extra)
        args[args.index("--run") + 1] = run
        return args

    return {
        "unknown run": (argv(run="99"), "no run 99 to select experts from: choose a trace run"),
        "not a trace run": (argv(run="2"), "run 2 is an adaptation run"),
        "unknown language": (argv(target="xx_Yyyy"), "unknown language code 'xx_Yyyy'"),
        "target not in the run": (argv(target="rus_Cyrl"), "--target rus_Cyrl is not among the analysed languages"),
        "budget 0": (argv(budget="0"), "--budget must be at least 1"),
        "budget above the experts": (argv(budget="25"), "--budget 25 is more than the 24 routed experts"),
        "two ratios": (argv("--ratios", "0.5,0.5"), "--ratios takes three shares"),
        "ratios not summing to 1": (argv("--ratios", "0.5,0.5,0.5"), "sum to 1"),
        "dense model": (argv(model=_dense_model(root / "dense")), "dense model"),
        "another model": (argv(model=other), "not the model at"),
        "missing model": (argv(model=root / "nope"), "does not exist"),
        "no eval text": (argv("--langs", "kor_Hang"), "has no text in kor_Hang"),
        "adapter folder taken": (
            [*argv()[: argv().index("--out") + 1], str(full), *argv()[argv().index("--out") + 2 :]],
            "already exists and is not empty",
        ),
        "zero epochs": (argv("--epochs", "0"), "--epochs, --batch-size and --max-steps must be at least 1"),
        "learning rate 0": (argv("--lr", "0"), "--lr must lie in (0, 1)"),
        "options missing": (["adapt", "--db", str(db), "--run", "1"], "adapt needs --model, --target, --budget"),
        "not an adapter": (["adapt", "merge", "--adapter", str(root), "--out", str(root / "m")], "is not an adapter"),
    }


def test_bad_input_exits_2_with_one_line_and_leaves_the_store_and_disk_unchanged(adapted, capsys):
    cases = _bad_inputs(adapted)
    before, files = store_digest(adapted["db"]), sorted(p.name for p in adapted["root"].iterdir())
    for name, (argv, message) in cases.items():
        capsys.readouterr()
        assert main(argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert err.startswith("polyroute: error: ") and message in err and "\n" not in err, (name, err)
        assert store_digest(adapted["db"]) == before, name
    assert sorted(p.name for p in adapted["root"].iterdir()) == files  # no adapter, no scratch folder left
    assert (adapted["root"] / "full" / "keep.txt").read_text() == "mine"


def test_the_zone_rule_reaches_the_selection(adapted, tmp_path):
    """`--zones fraction` selects and stores what `select(..., zones="fraction")` selects."""
    db = tmp_path / "zones.duckdb"
    shutil.copyfile(adapted["db"], db)
    argv = _adapt_argv(db, adapted["model"], adapted["corpus"], tmp_path / "adapter", "--target", "deu_Latn")
    assert main([*argv, "--budget", "4", "--zones", "fraction"]) == 0
    with open_store(db, read_only=True) as store:
        run = q.adaptation_runs(store)[-1]
        stored = [(e.layer, e.expert) for e in q.adaptation_experts(store, run.run_id)]
        expected = select(store, 1, "deu_Latn", 4, zones="fraction")
    assert run.params["zones"] == "fraction" and stored == expected.pairs
