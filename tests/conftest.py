"""Shared fixtures: tiny random MoE models of every family, parallel corpus files, stores; and the
tier of every test file (`pytest -m unit`, `store`, `app`, `browser`, `vllm`, `gpu`)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One compute thread for torch, here and in the processes the tests start (they inherit it): tiny
# models gain nothing from a second, and on a busy two-core machine the second's spin-waiting made
# the model tests several times slower (the demo store took 112 s to build instead of 8).
os.environ.setdefault("OMP_NUM_THREADS", "1")

from moe_core.tiny import FAMILY_CONFIGS, build_tiny_model

FAMILIES = list(FAMILY_CONFIGS)

# Every test file's tier. unit: pure functions, tiny models in memory; store: real DuckDB files,
# the CLI, `polyroute serve`; app: Streamlit's AppTest; browser: the app in Chromium; vllm: a real
# vLLM engine (its own venv, `make vllm-test`); gpu: CUDA. `make test-fast` runs unit and store
# tests not marked slow; `make test` runs every tier and prints each one's time.
TIERS = {
    "unit": (
        "test_adapters test_analysis test_capture test_capture_matches_model test_evaluation_metrics "
        "test_languages test_layers test_steering test_vllm test_wire test_builtin_corpus test_corpus_files "
        "test_adapt test_reference_rules test_draw test_pipeline"
    ),
    "store": (
        "test_store test_analysis_store test_upgrade test_resume test_cli test_corpus_cli test_analyze_cli "
        "test_adapt_cli test_adapt_task test_steer_cli test_plans test_eval_store test_sandbox test_collect "
        "test_jobs test_remote test_bad_input test_fuzz test_demo test_evaluation_tasks test_benchmarks test_runs "
        "test_exchange test_reference_cli test_steered_trace test_compare_runs "
        "test_expert_browser test_api test_notebook test_typed_results"
    ),
    "app": (
        "test_app test_pages test_adapt_page test_evaluate_page test_sql_page test_steering_page "
        "test_remote_app test_token_paths test_first_user test_run_download_page test_source_choice "
        "test_compare_runs_page test_expert_browser_page"
    ),
    "browser": "test_browser",
    "vllm": "test_vllm_engine",
    "gpu": "test_gpu",
}
TIER_OF = {f"{name}.py": tier for tier, names in TIERS.items() for name in names.split()}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Each tier's tests and time (setup, call and teardown), so `make test` shows where time goes."""
    seconds: dict[str, float] = {}
    counts: dict[str, int] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            tier = TIER_OF.get(Path(str(getattr(report, "fspath", ""))).name)
            if tier is None or not hasattr(report, "duration"):
                continue
            seconds[tier] = seconds.get(tier, 0.0) + report.duration
            counts[tier] = counts.get(tier, 0) + (report.when == "call")
    if seconds:
        terminalreporter.section("time by tier")
        for tier in TIERS:
            if tier in seconds:
                terminalreporter.write_line(f"{tier:8s} {counts[tier]:4d} tests  {seconds[tier]:7.1f} s")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its file's tier; a file in no tier is an error, so none is left out."""
    for item in items:
        name = item.path.name
        if name not in TIER_OF:
            raise pytest.UsageError(f"{name} is in no test tier: add it to TIERS in tests/conftest.py")
        item.add_marker(TIER_OF[name])


@pytest.fixture(autouse=True)
def charts_checked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every chart a page draws in an AppTest is checked against Vega-Lite's schema, as Altair does by
    default: the app skips that check for speed (`polyroute.ui.draw`), the app tests keep it."""
    if request.node.get_closest_marker("app"):
        monkeypatch.setattr("polyroute.ui.draw.unchecked", lambda chart: chart)


PARALLEL = {
    "eng_Latn": [
        "The weather is lovely today.",
        "The children are playing in the park with their friends.",
        "Please enter a valid email address.",
        "Your password must contain at least eight characters.",
        "This field is required.",
        "We sent you a message to confirm your account.",
    ],
    "deu_Latn": [
        "Das Wetter ist heute schön.",
        "Die Kinder spielen mit ihren Freunden im Park.",
        "Bitte geben Sie eine gültige E-Mail-Adresse ein.",
        "Ihr Passwort muss mindestens acht Zeichen enthalten.",
        "Dieses Feld ist erforderlich.",
        "Wir haben Ihnen eine Nachricht zur Bestätigung Ihres Kontos gesendet.",
    ],
    "rus_Cyrl": [
        "Сегодня прекрасная погода.",
        "Дети играют в парке со своими друзьями.",
        "Пожалуйста, введите правильный адрес электронной почты.",
        "Ваш пароль должен содержать не менее восьми символов.",
        "Это поле обязательно.",
        "Мы отправили вам сообщение для подтверждения вашей учётной записи.",
    ],
}


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_model(model_root: Path):
    """`tiny_model(family)` -> folder of a random tiny model of that family (built once per session)."""

    def build(family: str) -> Path:
        folder = model_root / family
        if not (folder / "config.json").exists():
            build_tiny_model(family, folder)
        return folder

    return build


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    rows = [
        {"item_id": f"item{i}", "lang": lang, "text": text}
        for lang, texts in PARALLEL.items()
        for i, text in enumerate(texts)
    ]
    return write_jsonl(tmp_path / "parallel.jsonl", rows)


# A store traced by the synthetic backend, with a planted structure the analyses must find.
PLANTED_FAMILIES = {
    "Indo-European": ("eng_Latn", "deu_Latn", "fra_Latn"),
    "Dravidian": ("tam_Taml", "tel_Telu", "kan_Knda"),
    "Turkic": ("tur_Latn", "kaz_Cyrl", "uzn_Latn"),
}
PLANTED_EXCLUSIVE = {"tam_Taml": ((0, 5),), "kaz_Cyrl": ((7, 11),)}  # language -> (layer, expert)


def planted_routing(**overrides: object):
    from moe_core.synthetic import PlantedRouting

    langs = tuple(lang for members in PLANTED_FAMILIES.values() for lang in members)
    families = tuple(family for family, members in PLANTED_FAMILIES.items() for _ in members)
    settings = {"n_layers": 8, "n_experts": 16, "top_k": 2, "n_items": 12, "exclusive": PLANTED_EXCLUSIVE}
    return PlantedRouting(langs=langs, families=families, **{**settings, **overrides})


def trace_synthetic(db: Path, plan, corpus_dir: Path) -> int:
    """Trace the synthetic corpus of `plan` into `db` through the real pipeline; returns the run id."""
    from moe_core.synthetic import SyntheticBackend, synthetic_corpus
    from polyroute.workflows.trace import TraceRequest, start_trace

    corpus_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"item_id": item, "lang": lang, "text": text} for item, lang, text in synthetic_corpus(plan)]
    corpus = write_jsonl(corpus_dir / "synthetic.jsonl", rows)
    request = TraceRequest(db=db, model=SyntheticBackend(plan), corpus=corpus, langs=list(plan.langs), batch_size=16)
    return start_trace(request).run_id


@pytest.fixture(scope="session")
def planted_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store whose run 1 is the planted synthetic routing of `planted_routing()`."""
    root = tmp_path_factory.mktemp("planted")
    db = root / "planted.duckdb"
    assert trace_synthetic(db, planted_routing(), root) == 1
    return db


def _as_the_apps_store(source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of `source` as the app's default store (the app opens its stores for writing, so it
    never gets a session's shared file); the app's caches are emptied after."""
    import streamlit as st

    db = tmp_path / "app.duckdb"
    shutil.copyfile(source, db)
    monkeypatch.setenv("POLYROUTE_DB", str(db))
    yield db
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def app_db(planted_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The planted store, as the app's store."""
    yield from _as_the_apps_store(planted_store, tmp_path, monkeypatch)


@pytest.fixture(scope="session")
def built_demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`polyroute demo`'s store, built once (about 10 s): the shipped demo model over every built-in language."""
    from polyroute.workflows.demo import build_demo_store

    db = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    build_demo_store(db)
    return db


@pytest.fixture
def demo_app_db(built_demo_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The demo store, as the app's store."""
    yield from _as_the_apps_store(built_demo_store, tmp_path, monkeypatch)


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory, tiny_model) -> Path:
    """A store of a real tiny Qwen3-MoE over two languages with every table filled (router logits
    too). A test that lets the app open it (for writing) works on a copy of its own."""
    from polyroute.cli import main
    from tests.helpers import trace_argv

    root = tmp_path_factory.mktemp("tiny_store")
    rows = [{"item_id": f"item{i}", "lang": lang, "text": t} for lang, ts in PARALLEL.items() for i, t in enumerate(ts)]
    corpus = write_jsonl(root / "parallel.jsonl", rows)
    db = root / "s.duckdb"
    argv = trace_argv(db, tiny_model("qwen3_moe"), corpus, "eng_Latn,deu_Latn", "--limit", "2", "--save-logits")
    assert main(argv) == 0
    _add_an_evaluation(db)
    _add_an_adaptation(db)
    return db


@pytest.fixture(scope="session")
def compare_store(tmp_path_factory: pytest.TempPathFactory, tiny_model) -> Path:
    """Three runs to compare: 1, a tiny Qwen3-MoE (3 layers) over eng/deu/rus; 2, the same steered by
    `STEERING_PLAN`; 3, the planted synthetic routing (8 layers, other languages besides eng/deu)."""
    from polyroute.cli import main
    from tests.helpers import STEERING_PLAN, trace_argv

    root = tmp_path_factory.mktemp("compare_store")
    rows = [{"item_id": f"item{i}", "lang": lang, "text": t} for lang, ts in PARALLEL.items() for i, t in enumerate(ts)]
    corpus = write_jsonl(root / "parallel.jsonl", rows)
    db = root / "s.duckdb"
    argv = trace_argv(db, tiny_model("qwen3_moe"), corpus, ",".join(PARALLEL))
    assert main(argv) == 0
    assert main([*argv, "--plan", str(STEERING_PLAN.save(root / "plan.json"))]) == 0
    assert trace_synthetic(db, planted_routing(), root) == 3
    return db


@pytest.fixture
def compare_app_db(compare_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The three-run comparison store, as the app's store."""
    yield from _as_the_apps_store(compare_store, tmp_path, monkeypatch)


def _add_an_evaluation(db: Path) -> None:
    """An evaluation run's rows (scores and answers), so that every table of the store has some."""
    from moe_core.records import GeneratedAnswer, TaskScore
    from store import open_store
    from store import queries as q
    from store import writer as w

    with open_store(db) as store:
        (trace,) = q.list_runs(store)
        run = w.create_run(
            store, kind="evaluation", model_id=trace.model_id, corpus_id=None, backend="hf", params={}, n_planned=0,
            weight_bound=1.0,
        )  # fmt: skip
        w.write_evaluation(
            store,
            run,
            [TaskScore(task="mgsm", lang="deu_Latn", variant="unsteered", metric="accuracy", value=0.5, n=2)],
            [GeneratedAnswer(variant="unsteered", item_id="1", lang="deu_Latn", prompt="1+1=", output="2")],
        )
        w.set_run_status(store, run, "complete")


def _add_an_adaptation(db: Path) -> None:
    """An adaptation run's rows (its trained experts, before/after losses and a benchmark's scores), so that
    every table has some."""
    from moe_core.records import TaskScore
    from store import open_store
    from store import queries as q
    from store import writer as w

    with open_store(db) as store:
        trace = next(run for run in q.list_runs(store) if run.kind == "trace")
        params = {"trace_run": trace.run_id, "target": "deu_Latn", "budget": 1, "adapter_dir": None}
        run = w.create_run(
            store, kind="adaptation", model_id=trace.model_id, corpus_id=None, backend="hf", params=params, n_planned=1,
            weight_bound=1.0,
        )  # fmt: skip
        expert = w.AdaptedExpert(
            rank=1, zone="shallow", layer=0, expert=3, score=2.5, specificity=1.5, overlap=0.8, target_freq=0.4,
            mean_freq=0.3,
        )  # fmt: skip
        scores = [
            TaskScore(task=task, lang="deu_Latn", variant=variant, metric=metric, value=value, n=n)
            for task, metric, n, values in (
                (q.ADAPTATION_TASK, "loss", 20, (3.0, 2.5)),
                ("belebele", "accuracy", 4, (0.25, 0.5)),
            )
            for variant, value in zip(("before", "after"), values, strict=True)
        ]
        w.write_adaptation(store, run, [expert], scores)
        w.set_run_status(store, run, "complete")
