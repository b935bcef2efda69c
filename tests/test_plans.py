"""Plan builders (`polyroute.plans`, `polyroute plan`) against brute-force numpy recomputations
from the raw routes of planted synthetic stores."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pytest

from moe_core.errors import ParameterError, PolyrouteError
from moe_core.steering.plan import SteeringPlan
from polyroute import plans
from polyroute.cli import flag, main
from store import open_store
from store import queries as q
from tests.conftest import planted_routing, write_jsonl

TASK_EXPERTS = {(3, 6), (4, 13)}


@pytest.fixture(scope="module")
def task_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run 1: generic text; run 2: task text routed to TASK_EXPERTS; one synthetic model traces both."""
    from moe_core.synthetic import SyntheticBackend, synthetic_corpus
    from polyroute.workflows.trace import TraceRequest, start_trace

    root = tmp_path_factory.mktemp("task_plans")
    plan = planted_routing(n_items=16, task_items=8, task_experts=tuple(sorted(TASK_EXPERTS)))
    backend = SyntheticBackend(plan)
    rows = synthetic_corpus(plan)
    db = root / "task.duckdb"
    for run_id, (name, task) in enumerate((("generic", False), ("math", True)), start=1):
        chosen = [{"item_id": i, "lang": lang, "text": text} for i, lang, text in rows if (int(i[4:]) >= 8) == task]
        corpus = write_jsonl(root / f"{name}.jsonl", chosen)
        langs = ["eng_Latn", "deu_Latn"]
        assert start_trace(TraceRequest(db=db, model=backend, corpus=corpus, langs=langs)).run_id == run_id
    return db


# brute force ----------------------------------------------------------------------------------


class Raw:
    """One run's routes read straight from the tables: per-sequence hit counts [S, n_layers, E]."""

    def __init__(self, db: Path, run_id: int) -> None:
        with duckdb.connect(str(db), read_only=True) as con:
            self.n_layers, self.n_experts = con.execute(
                "SELECT m.n_layers, m.n_experts FROM runs JOIN models AS m USING (model_id) WHERE run_id = ?", [run_id]
            ).fetchone()
            seqs = con.execute("SELECT seq_id, lang, n_tokens FROM sequences WHERE run_id = ?", [run_id]).fetchall()
            routes = con.execute("SELECT seq_id, layer, expert FROM routes WHERE run_id = ?", [run_id]).fetchall()
        row = {seq_id: i for i, (seq_id, _, _) in enumerate(seqs)}
        self.lang = np.array([lang for _, lang, _ in seqs])
        self.tokens = np.array([n for _, _, n in seqs], dtype=np.float64)
        self.hits = np.zeros((len(seqs), self.n_layers, self.n_experts))
        for seq_id, layer, expert in routes:
            self.hits[row[seq_id], layer, expert] += 1

    def mean_sequence_frequency(self, lang: str) -> np.ndarray:
        chosen = self.lang == lang
        return (self.hits[chosen] / self.tokens[chosen, None, None]).mean(axis=0)

    def shares(self, langs: list[str], k: int) -> np.ndarray:
        """[L, n_layers, E]: keep each language's k most used experts per layer, then share."""
        kept = np.zeros((len(langs), self.n_layers, self.n_experts))
        for i, lang in enumerate(langs):
            chosen = self.lang == lang
            freq = self.hits[chosen].sum(axis=0) / self.tokens[chosen].sum()
            for layer in range(self.n_layers):
                top = sorted(range(self.n_experts), key=lambda e: (-freq[layer, e], e))[:k]
                kept[i, layer, top] = freq[layer, top]
        return kept / (kept.sum(axis=0) + 1e-10)


def _pairs(plan: SteeringPlan) -> set[tuple[int, int]]:
    return {(entry.layer, e) for entry in plan.experts for e in entry.experts}


def _mask_pairs(mask: np.ndarray, band: tuple[int, int]) -> set[tuple[int, int]]:
    return {(int(y), int(e)) for y, e in zip(*np.nonzero(mask), strict=True) if band[0] <= y <= band[1]}


def _check_shape(db: Path, run_id: int, plan: SteeringPlan) -> None:
    with open_store(db, read_only=True) as store:
        layout = q.run_layout(store, run_id)
    assert layout is not None
    plan.check_against(
        n_layers=layout.n_layers, moe_layers=layout.layers.tolist(), n_experts=layout.n_experts, top_k=layout.top_k
    )


def _build(db: Path, builder, *args, **kwargs) -> SteeringPlan:
    with open_store(db, read_only=True) as store:
        return builder(store, *args, **kwargs)


# builders -------------------------------------------------------------------------------------


def test_task_experts_agree_with_delta_tau_against_the_generic_run(task_store):
    plan = _build(task_store, plans.task_experts, 2, 1, "eng_Latn", tau=0.4)
    generic, task = Raw(task_store, 1), Raw(task_store, 2)
    deltas = task.mean_sequence_frequency("eng_Latn") - generic.mean_sequence_frequency("eng_Latn")
    assert plan.band == (3, 4)  # the middle zone of 8 layers
    assert _pairs(plan) == _mask_pairs(deltas > 0.4, plan.band) == TASK_EXPERTS
    assert plan.method == "soft" and plan.strength == 0.5
    assert "run 2" in plan.source and "generic run 1" in plan.source and "tau 0.4" in plan.source
    _check_shape(task_store, 2, plan)
    # the generic run against the task run has no task expert: a clear error, not an empty plan
    # The message names the parameters (the page shows it so); the CLI says them as its flags.
    with pytest.raises(
        PolyrouteError, match=r"no expert passes tau 0\.4 in layers 3-4: lower the threshold tau or widen the band"
    ) as raised:
        _build(task_store, plans.task_experts, 1, 2, "eng_Latn", tau=0.4)
    assert isinstance(raised.value, ParameterError)
    assert raised.value.named(flag).endswith("lower the threshold --tau or widen the band (--layers)")


def test_language_experts_agree_with_delta_tau_against_english(planted_store):
    plan = _build(planted_store, plans.language_experts, 1, "tam_Taml", tau=0.3, layers=(0, 7))
    raw = Raw(planted_store, 1)
    deltas = raw.mean_sequence_frequency("tam_Taml") - raw.mean_sequence_frequency("eng_Latn")
    expected = _mask_pairs(deltas > 0.3, (0, 7))
    assert (0, 5) in expected
    assert _pairs(plan) == expected
    assert plan.band == (0, 7) and plan.method == "soft" and plan.strength == 0.5
    _check_shape(planted_store, 1, plan)
    narrow = _build(planted_store, plans.language_experts, 1, "tam_Taml", tau=0.3, layers=(0, 2))
    assert _pairs(narrow) == _mask_pairs(deltas > 0.3, (0, 2)) and narrow.band == (0, 2)


def test_shared_experts_carry_the_source_language_shares(planted_store):
    langs = ["tam_Taml", "tel_Telu", "kan_Knda"]
    plan = _build(planted_store, plans.shared_experts, 1, langs, k=4, thr=0.4, layers=(0, 7))
    shares = Raw(planted_store, 1).shares(langs, k=4)
    expected = (shares > 0).any(axis=0) & (shares < 0.4).all(axis=0) & (shares[0] > 0)
    assert expected.any()
    assert _pairs(plan) == _mask_pairs(expected, (0, 7))
    for entry in plan.experts:
        assert entry.coefficients is not None
        assert entry.coefficients == pytest.approx([shares[0, entry.layer, e] for e in entry.experts], abs=1e-9)
    assert plan.method == "adaptive" and plan.strength == 0.02 and "source tam_Taml" in plan.source
    _check_shape(planted_store, 1, plan)


@pytest.mark.parametrize(
    ("lang", "window", "band", "planted"),
    [("tam_Taml", "early", (0, 2), (0, 5)), ("kaz_Cyrl", "late", (5, 7), (7, 11))],
)
def test_exclusive_experts_are_ablated_in_their_window(planted_store, lang, window, band, planted):
    plan = _build(planted_store, plans.exclusive_experts, 1, lang, window=window)
    raw = Raw(planted_store, 1)
    langs = sorted(set(raw.lang))
    shares = raw.shares(langs, k=15)
    assert plan.band == band and plan.method == "ablate"
    assert planted in _pairs(plan)
    assert _pairs(plan) == _mask_pairs(shares[langs.index(lang)] > 0.4, band)
    _check_shape(planted_store, 1, plan)


def test_the_nearest_settings_are_where_experts_begin(planted_store):
    """Each builder finds experts just on the working side of its `*_nearest` threshold and none on it;
    the smallest k is the brute-force smallest k at which the language holds more than thr of an expert."""
    raw = Raw(planted_store, 1)
    langs = sorted(set(raw.lang))
    band = (3, 4)
    with open_store(planted_store, read_only=True) as store:
        near = plans.language_nearest(store, 1, "tam_Taml", layers=band)
        deltas = raw.mean_sequence_frequency("tam_Taml") - raw.mean_sequence_frequency("eng_Latn")
        assert near.threshold == pytest.approx(deltas[3:5].max()) and not near.above
        assert plans.language_experts(store, 1, "tam_Taml", tau=near.threshold - 1e-6, layers=band).experts
        with pytest.raises(plans.NoExpertsError):
            plans.language_experts(store, 1, "tam_Taml", tau=near.threshold, layers=band)

        thr = 0.6
        near = plans.exclusive_nearest(store, 1, "tam_Taml", window=band, k=15, thr=thr)
        assert near.threshold == pytest.approx(raw.shares(langs, k=15)[langs.index("tam_Taml"), 3:5].max())
        assert plans.exclusive_experts(store, 1, "tam_Taml", window=band, k=15, thr=near.threshold - 1e-6).experts
        with pytest.raises(plans.NoExpertsError):
            plans.exclusive_experts(store, 1, "tam_Taml", window=band, k=15, thr=near.threshold)
        smallest = next(
            k for k in range(1, raw.n_experts + 1) if raw.shares(langs, k)[langs.index("tam_Taml"), 3:5].max() > thr
        )
        assert near.k == smallest
        assert plans.exclusive_experts(store, 1, "tam_Taml", window=band, k=smallest, thr=thr).experts

        pool = ["tam_Taml", "tel_Telu", "kan_Knda"]
        near = plans.shared_nearest(store, 1, pool, k=4, layers=band)
        assert near.above
        assert plans.shared_experts(store, 1, pool, k=4, thr=near.threshold + 1e-6, layers=band).experts
        with pytest.raises(plans.NoExpertsError):
            plans.shared_experts(store, 1, pool, k=4, thr=near.threshold, layers=band)


def test_k_past_the_expert_count_is_said_as_the_expert_count(planted_store):
    raw = Raw(planted_store, 1)
    expected = rf"at k {raw.n_experts}, thr 0\.99 in layers 3-4"
    with open_store(planted_store, read_only=True) as store, pytest.raises(plans.NoExpertsError, match=expected):
        plans.exclusive_experts(store, 1, "tam_Taml", window=(3, 4), k=raw.n_experts + 50, thr=0.99)


# CLI ------------------------------------------------------------------------------------------


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "method"),
    [
        (["language-experts", "--lang", "ta", "--tau", "0.3", "--layers", "0-7"], "soft"),
        (["shared", "--langs", "tam_Taml,tel_Telu,kan_Knda", "--k", "4", "--layers", "0-7"], "adaptive"),
        (["exclusive", "--lang", "kaz_Cyrl", "--window", "late"], "ablate"),
    ],
)
def test_cli_writes_a_plan_that_loads_back(planted_store, tmp_path, capsys, argv, method):
    target = tmp_path / "plan.json"
    code, out, err = _run(capsys, "plan", *argv, "--run", "1", "--db", str(planted_store), "-o", str(target))
    assert code == 0, err
    plan = SteeringPlan.load(target)
    assert plan.method == method and out == ""
    assert err.count("\n") == 1 and f"{method} plan" in err and "layer:count" in err
    _check_shape(planted_store, 1, plan)
    code, out, _ = _run(capsys, "plan", *argv, "--run", "1", "--db", str(planted_store))
    assert code == 0 and SteeringPlan.from_json(out) == plan


def test_cli_task_experts_with_a_reference_run(task_store, capsys):
    code, out, err = _run(
        capsys, "plan", "task-experts", "--run", "2", "--ref-run", "1", "--lang", "en", "--db", str(task_store)
    )
    assert code == 0, err
    plan = SteeringPlan.from_dict(json.loads(out))
    assert _pairs(plan) == TASK_EXPERTS and plan.strength == 0.5
    assert "3:1, 4:1" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["exclusive", "--run", "99", "--lang", "ta", "--window", "early"], "no traced sequences for run 99"),
        (["language-experts", "--run", "1", "--lang", "zho_Hans"], "run 1 has no zho_Hans"),
        (["exclusive", "--run", "1", "--lang", "zho_Hans", "--window", "early"], "run 1 has no zho_Hans"),
        (["language-experts", "--run", "1", "--lang", "ta", "--tau", "0.99"], "no expert passes tau 0.99"),
        (["shared", "--run", "1", "--langs", "eng_Latn,deu_Latn"], "no expert is shared"),
        (["exclusive", "--run", "1", "--lang", "ta", "--window", "sideways"], "--window takes early"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(planted_store, capsys, argv, message):
    code, out, err = _run(capsys, "plan", *argv, "--db", str(planted_store))
    assert code == 2 and out == ""
    assert err.startswith("polyroute: error:") and err.count("\n") == 1
    assert message in err
