"""Runs that travel (`polyroute export`, `polyroute import`, `store.exchange`): a round trip gives a
run equal to the original row by row and in every analysis; two exports of one model traced on
different languages merge into a run that analyses as one run tracing both; bad input ends in one
line, exit code 2, and a store left as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from moe_core.errors import ParameterError
from polyroute import analyses
from polyroute.cli import main
from polyroute.run_data import RunData, Selection
from store import exchange as x
from store import open_store
from tests.conftest import PARALLEL, write_jsonl
from tests.helpers import assert_summaries_match_a_rebuild, snapshot, trace_argv

ANALYSES = {
    "divergence": lambda data: analyses.analyze_divergence(data),
    "entropy": lambda data: analyses.analyze_entropy(data),
    "consistency": lambda data: analyses.analyze_consistency(data),
    "all-pairs consistency": lambda data: analyses.analyze_consistency(data, max_pairs=1 << 20),
    "similarity": lambda data: analyses.analyze_similarity(data),
    "experts": lambda data: analyses.analyze_experts(data, tau=0.3),
    "shared": lambda data: analyses.analyze_shared(data, k=3, thr=0.3),
    "isolation": lambda data: analyses.analyze_isolation(data, high=5, low=5),
    "rise": lambda data: analyses.analyze_rise(data, target="deu_Latn", budget=4),
}
# Rows of a run, keyed by what a sequence is (item and language) rather than by its ids.
RUN_ROWS = {
    "sequences": "SELECT item_id, lang, n_tokens FROM sequences WHERE run_id = $run",
    "tokens": "SELECT s.item_id, s.lang, t.* EXCLUDE (run_id, seq_id) FROM tokens AS t JOIN sequences AS s "
    "USING (run_id, seq_id) WHERE run_id = $run",
    "routes": "SELECT s.item_id, s.lang, r.* EXCLUDE (run_id, seq_id) FROM routes AS r JOIN sequences AS s "
    "USING (run_id, seq_id) WHERE run_id = $run",
    "router_probs": "SELECT s.item_id, s.lang, p.layer, p.probs FROM router_probs AS p JOIN sequences AS s "
    "USING (run_id, seq_id) WHERE run_id = $run",
    "router_logits": "SELECT s.item_id, s.lang, g.pos, g.layer, g.logits FROM router_logits AS g "
    "JOIN sequences AS s USING (run_id, seq_id) WHERE run_id = $run",
    "eval_results": "SELECT * EXCLUDE (run_id) FROM eval_results WHERE run_id = $run",
    "generations": "SELECT * EXCLUDE (run_id) FROM generations WHERE run_id = $run",
    "adaptation_experts": "SELECT * EXCLUDE (run_id) FROM adaptation_experts WHERE run_id = $run",
    "runs": "SELECT * EXCLUDE (run_id, params) FROM runs WHERE run_id = $run",
    "models": "SELECT * EXCLUDE (added_at) FROM models WHERE model_id = "
    "(SELECT model_id FROM runs WHERE run_id = $run)",
    "corpora": "SELECT * EXCLUDE (added_at) FROM corpora WHERE corpus_id = "
    "(SELECT corpus_id FROM runs WHERE run_id = $run)",
    "texts": "SELECT * FROM texts WHERE corpus_id = (SELECT corpus_id FROM runs WHERE run_id = $run)",
}


def _rows(db: Path, run_id: int, query: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(f"{query} ORDER BY ALL", {"run": run_id}).fetchall()


def _same(expected: object, got: object) -> bool:
    if isinstance(expected, float) or isinstance(got, float):  # sums in another order: equal to rounding
        return expected is not None and got is not None and got == pytest.approx(expected, rel=1e-9, abs=1e-12)
    return expected == got


def _assert_same_analyses(db: Path, run_id: int, other_db: Path, other_run: int, skip: tuple[str, ...] = ()) -> None:
    """Every analysis of the run but `skip`, over each distribution, all layers and the whole layer
    range as the band (the tiny model's middle zone holds no MoE layer), equal in both stores."""
    with open_store(db, read_only=True) as store, open_store(other_db, read_only=True) as other:
        layers = RunData(store, run_id, Selection()).layout.layers
        for source in ("soft", "weight", "hard"):
            for band in (None, (int(layers.min()), int(layers.max()))):
                data = RunData(store, run_id, Selection(source=source, layers=band))
                again = RunData(other, other_run, Selection(source=source, layers=band))
                for name, analyse in ANALYSES.items():
                    if name in skip or (name == "similarity" and band is None):
                        continue
                    tables, found = analyse(data).tables, analyse(again).tables
                    assert [t.columns for t in tables] == [t.columns for t in found], name
                    for table, other_table in zip(tables, found, strict=True):
                        assert len(table.rows) == len(other_table.rows), (source, name, table.name)
                        for row, other_row in zip(table.rows, other_table.rows, strict=True):
                            assert all(_same(a, b) for a, b in zip(row, other_row, strict=True)), (source, name, row)


def _export(db: Path, run_id: int, out: Path) -> x.Manifest:
    with open_store(db, read_only=True) as store:
        return x.export_run(store, run_id, out)


def _import(db: Path, folder: Path, merge_into: int | None = None) -> int:
    with open_store(db) as store:
        return x.import_run(store, folder, merge_into=merge_into)


# Round trip ------------------------------------------------------------------------------------


def test_a_run_exported_and_imported_equals_the_original_row_by_row_and_in_every_analysis(tiny_store, tmp_path):
    manifest = _export(tiny_store, 1, tmp_path / "run1")
    assert (tmp_path / "run1" / x.MANIFEST).is_file()
    assert {file.table for file in manifest.files} == set(x.TABLES)
    assert manifest.run["n_decisions"] == _rows(tiny_store, 1, "SELECT count(*) FROM routes WHERE run_id = $run")[0][0]
    db = tmp_path / "other.duckdb"
    open_store(db).close()
    with open_store(db) as store:  # the other store holds runs of its own: the import gets a new id
        store.con.execute(
            "INSERT INTO runs (kind, model_id, backend, params, status, n_planned, weight_unit) "
            "VALUES ('trace', 'm', 'hf', '{}', 'complete', 0, 1)"
        )
    run_id = _import(db, tmp_path / "run1")
    assert run_id == 2
    for table, query in RUN_ROWS.items():
        assert _rows(db, run_id, query) == _rows(tiny_store, 1, query), table
    [(params,)] = _rows(db, run_id, "SELECT params FROM runs WHERE run_id = $run")
    [(original,)] = _rows(tiny_store, 1, "SELECT params FROM runs WHERE run_id = $run")
    imported = json.loads(params)
    assert imported.pop("imported_from")["run_id"] == 1 and imported == json.loads(original)
    assert_summaries_match_a_rebuild(db, run_id, tmp_path)  # an independent recomputation from the rows
    _assert_same_analyses(tiny_store, 1, db, run_id)


def test_evaluation_and_adaptation_runs_travel_with_their_scores_answers_and_experts(tiny_store, tmp_path):
    db = tmp_path / "other.duckdb"
    for run_id in (2, 3):  # the evaluation and adaptation runs of tiny_store
        _export(tiny_store, run_id, tmp_path / f"run{run_id}")
        new = _import(db, tmp_path / f"run{run_id}")
        for table in ("eval_results", "generations", "adaptation_experts", "runs", "models"):
            assert _rows(db, new, RUN_ROWS[table]) == _rows(tiny_store, run_id, RUN_ROWS[table]), (run_id, table)
    assert _rows(db, 2, RUN_ROWS["adaptation_experts"])  # the adaptation's experts came along


def test_summaries_that_do_not_describe_the_exported_sequences_are_rebuilt(tiny_store, tmp_path):
    source = tmp_path / "edited.duckdb"
    shutil.copy(tiny_store, source)
    with duckdb.connect(str(source)) as con:  # summaries left behind by a hand edit
        con.execute("DELETE FROM language_routing WHERE run_id = 1 AND lang = 'deu_Latn'")
    _export(source, 1, tmp_path / "run1")
    db = tmp_path / "other.duckdb"
    run_id = _import(db, tmp_path / "run1")
    assert _rows(db, run_id, "SELECT count(DISTINCT lang) FROM language_routing WHERE run_id = $run") == [(2,)]
    assert_summaries_match_a_rebuild(db, run_id, tmp_path)
    _assert_same_analyses(tiny_store, 1, db, run_id)


# Merge -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def traced_apart(tmp_path_factory: pytest.TempPathFactory, tiny_model) -> dict[str, Path]:
    """The tiny model over three languages: one store tracing all of them, and two stores (two
    machines) tracing English and German, and Russian. One sequence a batch, so that a sequence's
    routing does not depend on the batch it came in."""
    root = tmp_path_factory.mktemp("apart")
    rows = [{"item_id": f"item{i}", "lang": lang, "text": t} for lang, ts in PARALLEL.items() for i, t in enumerate(ts)]
    corpus = write_jsonl(root / "parallel.jsonl", rows)
    stores = {}
    for name, langs in (("all", "eng_Latn,deu_Latn,rus_Cyrl"), ("west", "eng_Latn,deu_Latn"), ("east", "rus_Cyrl")):
        stores[name] = root / f"{name}.duckdb"
        argv = trace_argv(stores[name], tiny_model("qwen3_moe"), corpus, langs, "--limit", "4", "--batch-size", "1")
        assert main(argv) == 0
    return stores


def test_two_exports_of_other_languages_merge_into_a_run_that_analyses_as_one_run_tracing_both(traced_apart, tmp_path):
    _export(traced_apart["west"], 1, tmp_path / "west")
    _export(traced_apart["east"], 1, tmp_path / "east")
    db = tmp_path / "merged.duckdb"
    run_id = _import(db, tmp_path / "west")
    assert _import(db, tmp_path / "east", merge_into=run_id) == run_id
    one = traced_apart["all"]
    for table in ("sequences", "tokens", "routes", "router_probs", "texts", "corpora", "models"):
        assert _rows(db, run_id, RUN_ROWS[table]) == _rows(one, 1, RUN_ROWS[table]), table
    seq_ids = _rows(db, run_id, "SELECT lang, seq_id FROM sequences WHERE run_id = $run")
    assert sorted(seq for lang, seq in seq_ids if lang == "rus_Cyrl") == list(range(8, 12))  # after the run's own
    [(n_planned, params)] = _rows(db, run_id, "SELECT n_planned, params FROM runs WHERE run_id = $run")
    assert n_planned == 12 and json.loads(params)["langs"] == ["eng_Latn", "deu_Latn", "rus_Cyrl"]
    assert_summaries_match_a_rebuild(db, run_id, tmp_path)
    # Consistency at the default 128 token pairs samples each sequence's pairs by its seq_id, which
    # differs between the runs: it is compared over every pair, where no sampling is left.
    _assert_same_analyses(one, 1, db, run_id, skip=("consistency",))


def test_merge_through_the_command_line(traced_apart, tmp_path, capsys):
    db = tmp_path / "merged.duckdb"
    for name in ("west", "east"):
        assert main(["export", "--run", "1", "--out", str(tmp_path / name), "--db", str(traced_apart[name])]) == 0
    assert main(["import", str(tmp_path / "west"), "--db", str(db)]) == 0
    assert main(["import", str(tmp_path / "east"), "--db", str(db), "--merge-into", "1"]) == 0
    out = capsys.readouterr().out
    assert "exported run 1 (8 sequences" in out and "merged 4 sequences" in out
    _assert_same_analyses(traced_apart["all"], 1, db, 1, skip=("consistency",))


# Bad input: one line, exit code 2, nothing written ---------------------------------------------


def _fails(argv: list[str], capsys, *needles: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("polyroute: error: ") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err


@pytest.fixture(scope="module")
def exported(tiny_store, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("exported") / "run1"
    _export(tiny_store, 1, folder)
    return folder


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def test_a_missing_folder_or_one_without_a_manifest_is_refused(exported, tmp_path, capsys):
    db = tmp_path / "new.duckdb"
    _fails(["import", str(tmp_path / "nowhere"), "--db", str(db)], capsys, "no export folder")
    partial = _copy(exported, tmp_path)
    (partial / x.MANIFEST).unlink()
    _fails(["import", str(partial), "--db", str(db)], capsys, "no manifest.json", "did not finish")
    assert not db.exists()


def test_a_partial_export_a_changed_file_and_a_newer_schema_are_refused(exported, tiny_store, tmp_path, capsys):
    db = tmp_path / "s.duckdb"
    shutil.copy(tiny_store, db)
    before = snapshot(db)
    folder = _copy(exported, tmp_path)
    (folder / "tokens.parquet").rename(tmp_path / "tokens.parquet")
    _fails(["import", str(folder), "--db", str(db)], capsys, "partial", "tokens.parquet is missing")
    (tmp_path / "tokens.parquet").rename(folder / "tokens.parquet")
    data = bytearray((folder / "route_lists.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other content
    (folder / "route_lists.parquet").write_bytes(bytes(data))
    _fails(["import", str(folder), "--db", str(db)], capsys, "checksum mismatch", "route_lists.parquet")
    shutil.copy(exported / "route_lists.parquet", folder / "route_lists.parquet")
    manifest = json.loads((folder / x.MANIFEST).read_text())
    (folder / x.MANIFEST).write_text(json.dumps({**manifest, "schema_version": 999}))
    _fails(["import", str(folder), "--db", str(db)], capsys, "newer Polyroute", "upgrade Polyroute")
    assert snapshot(db) == before


def test_an_unknown_run_and_a_used_folder_are_refused_and_nothing_is_written(tiny_store, tmp_path, capsys):
    out = tmp_path / "out"
    _fails(
        ["export", "--run", "99", "--out", str(out), "--db", str(tiny_store)],
        capsys,
        "there is no run 99 in",
        "give --run",
    )
    assert not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _fails(["export", "--run", "1", "--out", str(out), "--db", str(tiny_store)], capsys, "not empty")
    assert [path.name for path in out.iterdir()] == ["notes.txt"]
    with open_store(tiny_store, read_only=True) as store, pytest.raises(ParameterError, match="there is no run 7 in"):
        x.export_run(store, 7, tmp_path / "other")


def test_merging_a_run_of_another_model_or_the_same_sequences_is_refused(
    exported, tiny_store, planted_store, tmp_path, capsys
):
    db = tmp_path / "s.duckdb"
    shutil.copy(tiny_store, db)
    before = snapshot(db)
    planted = tmp_path / "planted"
    _export(planted_store, 1, planted)
    _fails(
        ["import", str(planted), "--db", str(db), "--merge-into", "1"],
        capsys,
        "run 1 traced model",
        "the exported run 1 model synthetic",
    )
    _fails(["import", str(exported), "--db", str(db), "--merge-into", "1"], capsys, "already holds 4 of the exported")
    _fails(
        ["import", str(exported), "--db", str(db), "--merge-into", "2"],
        capsys,
        "only trace runs merge",
        "without --merge-into",
    )
    _fails(
        ["import", str(exported), "--db", str(db), "--merge-into", "9"], capsys, "there is no run 9 in", "--merge-into"
    )
    assert snapshot(db) == before  # the planted model and corpus, inserted first, were rolled back


def test_a_model_whose_name_is_taken_by_another_model_is_refused(exported, tmp_path, capsys):
    db = tmp_path / "s.duckdb"
    open_store(db).close()
    model = json.loads((exported / x.MANIFEST).read_text())["run"]["model_id"]
    with duckdb.connect(str(db)) as con:
        con.execute(
            "INSERT INTO models SELECT * REPLACE ('other' AS config_hash) FROM read_parquet(?)",
            [str(exported / "models.parquet")],
        )
    before = snapshot(db)
    _fails(["import", str(exported), "--db", str(db)], capsys, f"another model named {model}")
    assert snapshot(db) == before
