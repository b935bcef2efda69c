"""The vLLM backend's parts that run without vLLM (a real engine: tests/test_vllm_engine.py).

Importing the package loads no vLLM; a plan becomes the buffers' arrays; the steering hook
re-scores router logits exactly as the hf backend's Steering does (for every steerable family and
mode, with the experts then chosen by the family's own rule, as vLLM's router would choose them);
the hook changes nothing without a plan; a gate's recorder records what the hf router returns,
and the worker's ledger files each step's rows under their requests and positions; the captured
routing and vLLM's routed-experts arrays decode into a RoutingBatch; the plugin registers one
steerable class per architecture; options are checked.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from moe_core.adapters import find_routers, resolve_adapter
from moe_core.backends.hf import HFBackend
from moe_core.backends.options import HFOptions
from moe_core.backends.vllm import VLLMOptions, load_vllm_backend
from moe_core.backends.vllm.capture import (
    GateRecorder,
    RequestRouting,
    RoutingLedger,
    StepLayout,
    pack,
    scored,
    unpack,
)
from moe_core.backends.vllm.describe import describe
from moe_core.backends.vllm.plan_tensors import MODE_CODES, MODE_OFF, plan_arrays
from moe_core.backends.vllm.registry import MODELS_MODULE, STEERABLE, register_steerable, steerable
from moe_core.backends.vllm.routes import SequenceRouting, id_agreement, routed_expert_ids, routing_batch
from moe_core.backends.vllm.steer import apply_arrays, find_states, install_steering, steer_logits, steered_bias
from moe_core.backends.vllm.worker import EXTENSION, SteeringWorkerExtension, internal_ids
from moe_core.errors import ModelError, PolyrouteError, flag
from moe_core.records import ModelInfo
from moe_core.steering import LayerExperts, PlanError, SteeringPlan
from moe_core.steering.hooks import Steering
from moe_core.steering.scoring import SIGMOID_BIAS_GROUP_TOPK, RoutingRule, rule_for, score

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "moe_core" / "backends" / "vllm"
FAMILIES = {  # tiny-model family -> architecture
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "olmoe": "OlmoeForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "gpt_oss": "GptOssForCausalLM",
    "deepseek_v2": "DeepseekV2ForCausalLM",
    "deepseek_v3": "DeepseekV3ForCausalLM",
}
HAS_VLLM = importlib.util.find_spec("vllm") is not None
METHOD_SETTINGS = {"soft": {"strength": 2.0}, "adaptive": {"strength": 0.5}, "hard": {}, "ablate": {}}


def _plan(method: str, layer: int, experts: tuple[int, ...] = (0, 1), **extra) -> SteeringPlan:
    coefficients = (0.5, 2.0)[: len(experts)] if method == "adaptive" else None
    entry = LayerExperts(layer=layer, experts=experts, coefficients=coefficients)
    return SteeringPlan(method=method, band=(layer, layer), experts=(entry,), seed=3, **extra)


def _buffers(arrays, layer: int) -> dict[str, torch.Tensor]:
    layer_arrays = arrays.layers[layer]
    return {
        "mode": torch.tensor(arrays.mode),
        "strength": torch.tensor(arrays.strength, dtype=torch.float32),
        "mask": torch.from_numpy(layer_arrays.mask),
        "coefficients": torch.from_numpy(layer_arrays.coefficients),
        "eps": torch.from_numpy(layer_arrays.eps),
    }


# importing ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_importing_the_package_and_its_pure_modules_loads_no_vllm():
    pure = ["", ".options", ".plan_tensors", ".routes", ".registry", ".steer", ".worker", ".describe"]
    code = (
        "import sys\n"
        + "".join(f"import moe_core.backends.vllm{name}\n" for name in pure)
        + "print(sorted(m for m in sys.modules if m == 'vllm' or m.startswith('vllm.')))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_package_itself_loads_no_torch_either():
    code = "import sys, moe_core.backends.vllm; print('torch' in sys.modules, 'transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


# plan -> arrays ----------------------------------------------------------------------------------


def test_a_plan_becomes_per_layer_arrays():
    plan = SteeringPlan(
        method="adaptive",
        band=(1, 2),
        strength=0.03,
        experts=(
            LayerExperts(layer=1, experts=(4, 0), coefficients=(0.25, 0.75)),
            LayerExperts(layer=3, experts=(5,)),  # outside the band: listed, not applied
        ),
    )
    arrays = plan_arrays(plan, n_layers=4, moe_layers=[1, 2, 3], n_experts=6, top_k=2)
    assert arrays.mode == MODE_CODES["adaptive"] and arrays.strength == pytest.approx(0.03)
    assert sorted(arrays.layers) == [1, 2, 3] and arrays.steered_layers == [1]
    np.testing.assert_array_equal(arrays.layers[1].mask, [True, False, False, False, True, False])
    np.testing.assert_array_equal(arrays.layers[1].coefficients, np.float32([0.75, 1, 1, 1, 0.25, 1]))
    for layer in (2, 3):
        assert not arrays.layers[layer].mask.any()
    eps = arrays.layers[1].eps
    assert (eps[[0, 4]] >= np.float32(1e-6)).all() and (eps[[0, 4]] < 1e-5).all() and (eps[[1, 2, 3, 5]] == 0).all()


def test_no_plan_steers_nothing_and_eps_follows_the_seed():
    off = plan_arrays(None, n_layers=3, moe_layers=[0, 2], n_experts=4, top_k=2)
    assert off.mode == MODE_OFF and off.steered_layers == [] and sorted(off.layers) == [0, 2]
    first, again = (plan_arrays(_plan("hard", 1), n_layers=3, moe_layers=[1], n_experts=4, top_k=2) for _ in "ab")
    np.testing.assert_array_equal(first.layers[1].eps, again.layers[1].eps)
    reseeded = SteeringPlan(method="hard", band=(1, 1), experts=(LayerExperts(layer=1, experts=(0, 1)),), seed=4)
    changed = plan_arrays(reseeded, n_layers=3, moe_layers=[1], n_experts=4, top_k=2)
    assert not np.array_equal(first.layers[1].eps, changed.layers[1].eps)


def test_a_plan_the_model_cannot_carry_is_refused():
    with pytest.raises(PlanError, match="dense layer"):
        plan_arrays(_plan("soft", 0, strength=1.0), n_layers=3, moe_layers=[1, 2], n_experts=4, top_k=2)
    with pytest.raises(PlanError, match="expert 9"):
        plan_arrays(_plan("soft", 1, (9,), strength=1.0), n_layers=3, moe_layers=[1, 2], n_experts=4, top_k=2)


# re-scoring: the same z' and the same choice as the hf backend -----------------------------------


def _hf_steering(family: str, tiny_model, method: str):
    """(router logits, hf's steered logits, hf's weights and ids, the bias, the rule, the plan's arrays)."""
    model = HFBackend(tiny_model(family)).model
    sites = find_routers(model)
    site = sites[len(sites) // 2]
    plan = _plan(method, site.layer, **METHOD_SETTINGS[method])
    raw, final = {}, {}
    with Steering(model, plan):
        handles = [
            site.module.register_forward_hook(lambda m, a, o: raw.setdefault("out", o), prepend=True),
            site.module.register_forward_hook(lambda m, a, o: final.setdefault("out", o)),
        ]
        try:
            with torch.inference_mode():
                model(torch.tensor([list(range(3, 60))]))
        finally:
            for handle in handles:
                handle.remove()
    config = model.config
    adapter = resolve_adapter(config)
    arrays = plan_arrays(
        plan,
        n_layers=config.num_hidden_layers,
        moe_layers=[s.layer for s in sites],
        n_experts=adapter.n_experts(config),
        top_k=adapter.top_k(config),
    )
    bias = getattr(site.module, "e_score_correction_bias", None)
    logits = raw["out"][0].reshape(-1, raw["out"][0].shape[-1]).float()
    steered, weights, ids = (t.reshape(logits.shape[0], -1) for t in final["out"][:3])
    return logits, steered.float(), weights, ids, bias, rule_for(adapter, config), _buffers(arrays, site.layer)


@pytest.mark.parametrize("method", list(METHOD_SETTINGS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_hook_rescores_logits_and_the_router_then_chooses_as_the_hf_backend_does(family, method, tiny_model):
    logits, hf_steered, hf_weights, hf_ids, bias, rule, buffers = _hf_steering(family, tiny_model, method)
    ours = steer_logits(logits, **buffers)
    if method == "hard":  # eps: at least 1e-6 and drawn per expert here, any size and per token there
        torch.testing.assert_close(ours, hf_steered, rtol=0, atol=2e-5)
    else:
        assert torch.equal(ours, hf_steered)
    # vLLM's router sees only the logits (and, for biased-sigmoid routers, the layer's bias).
    if rule.name == SIGMOID_BIAS_GROUP_TOPK:
        bias = steered_bias(bias, mode=int(buffers["mode"]), mask=buffers["mask"])
    weights, ids = score(rule, ours, bias=bias)
    marked = buffers["mask"].nonzero().flatten()
    chosen, hf_chosen = torch.isin(ids, marked).sum(dim=-1), torch.isin(hf_ids, marked).sum(dim=-1)
    # Where a tiny per-token eps tied an hf hard-steered expert with the maximum in the softmax, hf
    # lost it; those tokens are compared by the rule (every steered expert chosen), not with hf.
    same = hf_chosen == len(marked) if method == "hard" else torch.ones_like(chosen, dtype=torch.bool)
    assert same.float().mean() > 0.9
    order, hf_order = ids.argsort(dim=-1), hf_ids.argsort(dim=-1)
    assert torch.equal(ids.gather(1, order)[same], hf_ids.gather(1, hf_order)[same])
    torch.testing.assert_close(
        weights.gather(1, order)[same], hf_weights.float().gather(1, hf_order)[same], rtol=1e-5, atol=1e-5
    )
    if method == "hard":
        assert (chosen == len(marked)).all(), "hard steering puts every steered expert in every token's top-k"
    if method == "ablate":
        assert (chosen == 0).all(), "an ablated expert is never chosen"


def test_hard_steering_stays_above_the_maximum_in_bfloat16():
    logits = (torch.randn(64, 16) * 4).to(torch.bfloat16)
    arrays = plan_arrays(_plan("hard", 0, (3, 7)), n_layers=1, moe_layers=[0], n_experts=16, top_k=2)
    steered = steer_logits(logits, **_buffers(arrays, 0))
    assert steered.dtype == torch.bfloat16
    others = steered[:, [e for e in range(16) if e not in (3, 7)]].amax(dim=-1)
    assert (steered[:, 3] > others).all() and (steered[:, 7] > others).all()


def test_the_biased_router_bias_lifts_forced_experts_and_sinks_ablated_ones():
    base = torch.tensor([0.3, -0.2, 0.1, 0.0])
    mask = torch.tensor([False, True, False, False])
    lifted = steered_bias(base, mode=MODE_CODES["hard"], mask=mask)
    assert lifted[1] - 1.0 > base.max() and torch.equal(lifted[~mask], base[~mask])
    sunk = steered_bias(base, mode=MODE_CODES["ablate"], mask=mask)
    assert sunk[1] < -1e6 and torch.equal(sunk[~mask], base[~mask])
    assert torch.equal(steered_bias(base, mode=MODE_CODES["soft"], mask=mask), base)


# the buffers on a model --------------------------------------------------------------------------


class _Gate(nn.Linear):
    """Returns (logits, None), as vLLM's GateLinear does with return_bias."""

    def forward(self, x):
        return super().forward(x), None


class _ToyModel(nn.Module):
    """A decoder whose layers 1 and 3 route through `mlp.gate` (the others are dense), vLLM's naming."""

    def __init__(self, experts: int = 6, hidden: int = 8, biased: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        for index in range(4):
            layer = nn.Module()
            layer.mlp = nn.Module()
            if index in (1, 3):
                layer.mlp.gate = _Gate(hidden, experts, bias=False)
                if biased:
                    layer.mlp.gate.e_score_correction_bias = nn.Parameter(torch.randn(experts), requires_grad=False)
            else:
                layer.mlp.up = nn.Linear(hidden, hidden)
            self.layers.append(layer)

    def logits(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        return {index: self.layers[index].mlp.gate(x)[0] for index in (1, 3)}


def test_installed_buffers_change_nothing_until_a_plan_is_loaded_and_nothing_after_it_is_unloaded():
    torch.manual_seed(0)
    model = _ToyModel()
    x = torch.randn(5, 8)
    plain = model.logits(x)
    parameters = {name for name, _ in model.named_parameters()}
    states = install_steering(model, "mlp.gate")
    assert sorted(states) == [1, 3] and sorted(find_states(model)) == [1, 3]
    assert {name for name, _ in model.named_parameters()} == parameters, "the buffers are not weights to load"
    assert not any("polyroute" in key for key in model.state_dict()), "checkpoints never carry them"
    for layer, logits in model.logits(x).items():
        assert torch.equal(logits, plain[layer])

    arrays = plan_arrays(_plan("soft", 3, strength=1.5), n_layers=4, moe_layers=[1, 3], n_experts=6, top_k=2)
    apply_arrays(model, arrays)
    steered = model.logits(x)
    assert torch.equal(steered[1], plain[1]), "a layer the plan does not steer is untouched"
    assert torch.equal(steered[3], steer_logits(plain[3], **_buffers(arrays, 3)))
    assert not torch.equal(steered[3], plain[3])

    apply_arrays(model, plan_arrays(None, n_layers=4, moe_layers=[1, 3], n_experts=6, top_k=2))
    for layer, logits in model.logits(x).items():
        assert torch.equal(logits, plain[layer])


def test_a_biased_routers_bias_is_shifted_by_the_plan_and_restored_without_one():
    model = _ToyModel(biased=True)
    gate = model.layers[3].mlp.gate
    base = gate.e_score_correction_bias.detach().clone()
    parameters = {name for name, _ in model.named_parameters()}
    install_steering(model, "mlp.gate")
    assert {name for name, _ in model.named_parameters()} == parameters, "the bias is not adopted twice"
    arrays = plan_arrays(_plan("ablate", 3), n_layers=4, moe_layers=[1, 3], n_experts=6, top_k=2)
    apply_arrays(model, arrays)
    assert (gate.e_score_correction_bias[:2] < -1e6).all()
    assert torch.equal(gate.e_score_correction_bias[2:], base[2:])
    apply_arrays(model, plan_arrays(None, n_layers=4, moe_layers=[1, 3], n_experts=6, top_k=2))
    assert torch.equal(gate.e_score_correction_bias, base)


def test_a_model_without_the_named_gates_or_buffers_is_refused():
    with pytest.raises(ModelError, match="no router gate named"):
        install_steering(_ToyModel(), "block_sparse_moe.gate")
    arrays = plan_arrays(_plan("soft", 3, strength=1.0), n_layers=4, moe_layers=[1, 3], n_experts=6, top_k=2)
    with pytest.raises(ModelError, match="plugin"):
        apply_arrays(_ToyModel(), arrays)


# captured routing -> RoutingBatch -----------------------------------------------------------------


def _info(n_layers: int = 4, moe_layers: tuple[int, ...] = (1, 3), top_k: int = 2) -> ModelInfo:
    return ModelInfo(
        model_id="m", arch="Qwen3MoeForCausalLM", family="qwen3_moe", source="/m", n_layers=n_layers,
        moe_layers=moe_layers, n_experts=8, top_k=top_k, n_shared_experts=0, scoring="softmax->topk",
        soft_rule="softmax", weight_bound=1.0, config_hash="x",
    )  # fmt: skip


def _captured(rows: int, layers: int = 2, top_k: int = 2, seed: int = 0, logits: bool = False) -> RequestRouting:
    rng = np.random.default_rng(seed)
    return RequestRouting(
        expert_ids=rng.integers(0, 8, size=(rows, layers, top_k)).astype(np.int16),
        expert_weights=rng.random((rows, layers, top_k), dtype=np.float32),
        prob_sum=rng.random((layers, 8)) * rows,
        router_logits=rng.random((rows, layers, 8), dtype=np.float32) if logits else None,
    )


def test_captured_routing_becomes_a_routing_batch_like_the_hf_backends():
    prompt, generated = _captured(3, seed=1, logits=True), _captured(5, seed=2, logits=True)
    sequences = [
        SequenceRouting(token_ids=[1, 7, 9], pieces=["<s>", "a", "b"], special=[True, False, False], n_generated=0,
                        routing=unpack(pack([prompt, generated]))[0]),
        SequenceRouting(token_ids=[1, 4, 5, 6, 2], pieces=["<s>", "c", " d", "e", "</s>"],
                        special=[True, False, False, False, True], n_generated=2, routing=generated),
    ]  # fmt: skip
    batch = routing_batch(sequences, _info())
    np.testing.assert_array_equal(batch.layers, [1, 3])
    np.testing.assert_array_equal(batch.seq_lengths, [3, 5])
    np.testing.assert_array_equal(batch.offsets, [0, 3, 8])
    np.testing.assert_array_equal(batch.token_ids, [1, 7, 9, 1, 4, 5, 6, 2])
    assert batch.pieces[3:] == ["<s>", "c", " d", "e", "</s>"]
    np.testing.assert_array_equal(batch.special, [1, 0, 0, 1, 0, 0, 0, 1])
    np.testing.assert_array_equal(batch.generated, [0, 0, 0, 0, 0, 0, 1, 1])
    assert batch.expert_ids.shape == (8, 2, 2) and batch.expert_ids.dtype == np.int16
    np.testing.assert_array_equal(batch.expert_ids[:3], prompt.expert_ids)
    np.testing.assert_array_equal(batch.expert_weights[3:], generated.expert_weights)
    np.testing.assert_allclose(batch.router_probs[1], generated.prob_sum / 5, rtol=1e-6)
    np.testing.assert_array_equal(batch.router_logits[:3], prompt.router_logits)
    without_logits = routing_batch([dataclasses.replace(sequences[0], routing=_captured(3))], _info())
    assert without_logits.router_logits is None


@pytest.mark.parametrize(
    ("routing", "message"),
    [
        (_captured(4), "routing for 4 tokens of sequence 0, which read 3"),
        (_captured(3, layers=3), "expected \\[tokens, 2 MoE layers, top-k 2\\]"),
        (_captured(3, top_k=3), "expected \\[tokens, 2 MoE layers, top-k 2\\]"),
    ],
    ids=["rows", "layers", "top-k"],
)
def test_captured_routing_of_the_wrong_shape_is_refused(routing, message):
    seq = SequenceRouting(
        token_ids=[1, 2, 3], pieces=["a", "b", "c"], special=[False] * 3, n_generated=0, routing=routing
    )
    with pytest.raises(ModelError, match=message):
        routing_batch([seq], _info())


def test_vllms_routed_experts_are_read_at_the_moe_layers_and_compared_with_the_capture():
    routed = np.random.default_rng(0).integers(0, 8, size=(3, 4, 2)).astype(np.uint8)
    ids = routed_expert_ids(routed, _info(), 3)
    np.testing.assert_array_equal(ids, routed[:, [1, 3]])
    assert id_agreement(ids[..., ::-1], ids) == 1.0
    flipped = ids.copy()
    flipped[0, 0] = (flipped[0, 0] + 1) % 8
    assert id_agreement(flipped, ids) == pytest.approx(5 / 6)
    with pytest.raises(ModelError, match="lays them out differently"):
        routed_expert_ids(routed, _info(), 4)


# the capture in the gates and the ledger on the worker -------------------------------------------


def _recorded_model(family: str, tiny_model, capacity: int = 64):
    """The hf model of `family` with a GateRecorder fed by each router's own input (vLLM's gate role)."""
    model = HFBackend(tiny_model(family)).model
    config = model.config
    adapter = resolve_adapter(config)
    rule = rule_for(adapter, config)
    recorders = []
    for site in find_routers(model):
        bias = getattr(site.module, "e_score_correction_bias", None)
        recorders.append(GateRecorder(site.layer, rule, adapter.n_experts(config), capacity, bias))
    return model, recorders, adapter


@pytest.mark.parametrize("family", list(FAMILIES))
def test_gate_recorders_score_the_ids_and_weights_the_hf_router_returns(family, tiny_model):
    model, recorders, _ = _recorded_model(family, tiny_model)
    outputs = {}
    handles = [
        site.module.register_forward_hook(lambda m, a, o, slot=slot: outputs.setdefault(slot, o))
        for slot, site in enumerate(find_routers(model))
    ]
    try:
        with torch.inference_mode():
            model(torch.tensor([list(range(3, 40))]))
    finally:
        for handle in handles:
            handle.remove()
    for slot, recorder in enumerate(recorders):
        recorder(outputs[slot][0].reshape(37, -1))
    logits, weights, ids = scored(recorders, 37)
    for slot in range(len(recorders)):
        their_logits, their_weights, their_ids = (t.reshape(37, -1) for t in outputs[slot][:3])
        assert torch.equal(logits[:, slot], their_logits.float())
        assert torch.equal(ids[:, slot], their_ids.long())
        torch.testing.assert_close(weights[:, slot], their_weights.float(), rtol=0, atol=1e-6)


def test_a_batch_larger_than_the_recorders_buffers_is_refused():
    rule = RoutingRule(name="softmax->topk", top_k=2, renorm=True)
    with pytest.raises(ModelError, match="max_num_batched_tokens"):
        GateRecorder(0, rule, 4, 8, None)(torch.randn(9, 4))


def _ledger_step(ledger, recorders, layout, logits):
    for recorder, layer_logits in zip(recorders, logits, strict=True):
        recorder(layer_logits)
    ledger.add_step(recorders, layout)


def test_the_ledger_files_each_step_under_its_requests_and_positions():
    torch.manual_seed(0)
    rule = RoutingRule(name="softmax->topk", top_k=2, renorm=True)
    recorders = [GateRecorder(layer, rule, 6, 16, None) for layer in (1, 3)]
    ledger = RoutingLedger(soft_rule="softmax", save_logits=True)
    a, b = torch.randn(2, 7, 6), torch.randn(2, 3, 6)  # [layers, tokens, experts] of requests a and b
    # Step 1: a's first 4 tokens and b's 3; step 2: a's next 2 tokens; step 3: a's last token.
    _ledger_step(
        ledger, recorders, StepLayout(req_ids=["a", "b"], counts=[4, 3], starts=[0, 0]), torch.cat([a[:, :4], b], dim=1)
    )
    _ledger_step(ledger, recorders, StepLayout(req_ids=["a"], counts=[2], starts=[4]), a[:, 4:6])
    _ledger_step(ledger, recorders, StepLayout(req_ids=["a"], counts=[1], starts=[6]), a[:, 6:])  # fmt: skip
    assert sorted(ledger.pending()) == ["a", "b"]
    for name, logits in (("a", a), ("b", b)):
        got = ledger.take(name)
        weights, ids = score(rule, logits.reshape(-1, 6))
        np.testing.assert_array_equal(got.expert_ids, ids.reshape(2, -1, 2).transpose(0, 1).numpy())
        np.testing.assert_allclose(got.expert_weights, weights.reshape(2, -1, 2).transpose(0, 1).numpy())
        np.testing.assert_allclose(got.prob_sum, logits.softmax(-1).sum(dim=1).double().numpy(), rtol=1e-6)
        np.testing.assert_array_equal(got.router_logits, logits.transpose(0, 1).numpy())
    assert ledger.pending() == []


def test_a_request_recomputed_after_preemption_keeps_its_last_routing():
    rule = RoutingRule(name="softmax->topk", top_k=1)
    recorders = [GateRecorder(0, rule, 4, 8, None)]
    ledger = RoutingLedger(soft_rule="softmax")
    first, again = torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    _ledger_step(ledger, recorders, StepLayout(req_ids=["r"], counts=[3], starts=[0]), first)
    _ledger_step(ledger, recorders, StepLayout(req_ids=["r"], counts=[3], starts=[0]), again)
    np.testing.assert_array_equal(ledger.take("r").expert_ids[:, 0, 0], again[0].argmax(-1).numpy())


def test_routing_that_misses_a_requests_first_tokens_is_refused():
    recorders = [GateRecorder(0, RoutingRule(name="softmax->topk", top_k=1), 4, 8, None)]
    ledger = RoutingLedger(soft_rule="softmax")
    _ledger_step(ledger, recorders, StepLayout(req_ids=["r"], counts=[2], starts=[16]), torch.randn(1, 2, 4))
    with pytest.raises(ModelError, match="prefix-cache hit"):
        ledger.take("r")
    with pytest.raises(ModelError, match="no routing was captured for request r"):
        ledger.take("r")


def test_the_engines_request_ids_are_found_from_the_ones_the_caller_knows():
    held = ["7-0a1b2c3d", "17-ffffffff", "1-12345678"]
    assert internal_ids(["1", "17"], held) == ["1-12345678", "17-ffffffff"]
    assert internal_ids(["9"], ["9"]) == ["9"]


# the plugin's registration -----------------------------------------------------------------------


def _models_module() -> ast.Module:
    return ast.parse((PACKAGE / "models.py").read_text(encoding="utf-8"))


def test_every_steerable_architecture_names_a_subclass_of_its_in_tree_model():
    tree = _models_module()
    imported = {
        alias.name: node.module for node in tree.body if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    assert set(STEERABLE) == set(FAMILIES.values())
    for arch, model in STEERABLE.items():
        module, name = model.class_path.split(":")
        assert module == MODELS_MODULE and name in classes, arch
        node = classes[name]
        assert model.vllm_class in {base.id for base in node.bases if isinstance(base, ast.Name)}, arch
        assert imported[model.vllm_class] == model.vllm_module, arch
        declared = [
            stmt.value.value
            for stmt in node.body
            if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant)
            and stmt.targets[0].id == "polyroute_arch"
        ]  # fmt: skip
        assert declared == [arch]


class _RecordingRegistry:
    """Stands in for vLLM's ModelRegistry, which needs vLLM: it records what it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def register_model(self, model_arch: str, model_cls: str) -> None:
        self.calls.append((model_arch, model_cls))


def test_registration_gives_the_registry_one_lazy_class_path_per_architecture():
    registry = _RecordingRegistry()
    assert register_steerable(registry) == list(STEERABLE)
    assert registry.calls == [(arch, STEERABLE[arch].class_path) for arch in STEERABLE]
    assert all(path.count(":") == 1 for _, path in registry.calls)
    only = _RecordingRegistry()
    register_steerable(only, ("MixtralForCausalLM",))
    assert only.calls == [("MixtralForCausalLM", f"{MODELS_MODULE}:SteerableMixtralForCausalLM")]


def test_an_unknown_architecture_is_refused_by_name_and_registers_nothing():
    registry = _RecordingRegistry()
    with pytest.raises(ModelError, match="cannot steer Qwen2MoeForCausalLM: steerable architectures are Qwen3Moe"):
        register_steerable(registry, ("MixtralForCausalLM", "Qwen2MoeForCausalLM"))
    assert registry.calls == []
    with pytest.raises(ModelError, match="; use backend hf for other MoE models"):
        steerable("LlamaForCausalLM")


def test_the_entry_point_names_the_plugins_register_function():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    plugins = project["project"]["entry-points"]["vllm.general_plugins"]
    module, function = plugins["polyroute_steering"].split(":")
    assert module == "moe_core.backends.vllm.registry" and function == "register"
    assert callable(getattr(importlib.import_module(module), function))


def test_the_worker_extension_is_named_as_vllm_resolves_it():
    module, name = EXTENSION.rsplit(".", 1)  # vLLM's resolve_obj_by_qualname
    extension = getattr(importlib.import_module(module), name)
    assert all(attr.startswith(("polyroute_", "_polyroute_")) for attr in vars(extension) if not attr.startswith("__"))


# options and tokenizing --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tensor_parallel_size": 0}, "tensor_parallel_size must be at least 1"),
        ({"dtype": "fp8"}, "unknown dtype 'fp8'"),
        ({"gpu_memory_utilization": 1.5}, "share of GPU memory"),
        ({"max_tokens": 0}, "max_tokens must be at least 1"),
        ({"max_model_len": 256}, "leaves no room to generate"),
        ({"template": "alpaca"}, "unknown template 'alpaca'"),
        ({"kv_cache_memory_bytes": 4096}, "a size in bytes, at least 1 MiB"),
    ],
)
def test_bad_options_are_refused_with_the_fix(change, message):
    with pytest.raises(PolyrouteError, match=message):
        VLLMOptions(**change)


def test_options_become_engine_arguments():
    args = VLLMOptions(tensor_parallel_size=2, dtype="bfloat16", max_model_len=4096).engine_args()
    assert args == {
        "tensor_parallel_size": 2, "dtype": "bfloat16", "gpu_memory_utilization": 0.9, "enforce_eager": False,
        "seed": 0, "max_model_len": 4096, "enable_prefix_caching": False, "enable_return_routed_experts": False,
        "additional_config": {"polyroute_capture": True},
    }  # fmt: skip
    assert "max_model_len" not in VLLMOptions().engine_args()
    assert VLLMOptions(kv_cache_memory_bytes=64 << 20).engine_args()["kv_cache_memory_bytes"] == 64 << 20
    checked = VLLMOptions(check_routed_experts=True).engine_args()
    assert checked["enable_prefix_caching"] and checked["enable_return_routed_experts"]
    assert VLLMOptions().engine_args(capture=False)["additional_config"] == {"polyroute_capture": False}


# vLLM's own data parallelism: one server, several engine cores (options checked before vLLM starts)

_TWO_NODES = {"data_parallel_size": 4, "data_parallel_size_local": 2, "data_parallel_address": "10.0.0.1"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data_parallel_size": 0}, "data_parallel_size must be at least 1, not 0"),
        ({"data_parallel_size_local": 1}, "--data-parallel-size-local: these spread vLLM's data parallelism"),
        (
            {"data_parallel_address": "10.0.0.1", "data_parallel_rpc_port": 13345},
            "--data-parallel-address, --data-parallel-rpc-port: these spread",
        ),
        ({"headless": True}, "--headless: these spread"),
        ({"data_parallel_size": 2, "data_parallel_size_local": 3}, "between 1 and data_parallel_size \\(2\\), not 3"),
        ({"data_parallel_size": 2, "data_parallel_size_local": 0}, "between 1 and data_parallel_size"),
        ({"data_parallel_size": 2, "data_parallel_rpc_port": 70000}, "a port in 1-65535, not 70000"),
        ({"data_parallel_size": 4, "data_parallel_size_local": 2}, "need the head node's --data-parallel-address"),
        ({**_TWO_NODES, "data_parallel_start_rank": 2}, "--data-parallel-start-rank is for --headless nodes"),
        ({**_TWO_NODES, "headless": True}, "--headless runs this node's share"),
        ({**_TWO_NODES, "headless": True, "data_parallel_start_rank": 0}, "ranks 0-1 of a headless node lie outside"),
        ({**_TWO_NODES, "headless": True, "data_parallel_start_rank": 3}, "ranks 3-4 of a headless node lie outside"),
    ],
)
def test_bad_data_parallel_options_are_refused_with_the_fix(change, message):
    with pytest.raises(PolyrouteError) as refused:
        VLLMOptions(**change)
    # The options name their parameters; the CLI (`polyroute serve`) says them as its flags.
    assert re.search(message, refused.value.named(flag)), refused.value.named(flag)
    assert "\n" not in str(refused.value) and "--" not in str(refused.value)


def test_data_parallel_options_become_vllms_engine_arguments():
    assert "data_parallel_size" not in VLLMOptions().engine_args()
    one_node = VLLMOptions(tensor_parallel_size=2, data_parallel_size=4).engine_args()
    assert (one_node["tensor_parallel_size"], one_node["data_parallel_size"]) == (2, 4)
    assert not any(key.startswith("data_parallel_") and key != "data_parallel_size" for key in one_node)
    head = VLLMOptions(**_TWO_NODES, data_parallel_rpc_port=13345).engine_args()
    assert {key: value for key, value in head.items() if key.startswith("data_parallel")} == {
        **_TWO_NODES,
        "data_parallel_rpc_port": 13345,
    }
    # A headless node names its first rank as vLLM's --data-parallel-start-rank (not --data-parallel-rank,
    # which would make it an externally balanced engine of its own).
    other = VLLMOptions(**_TWO_NODES, headless=True, data_parallel_start_rank=2).engine_args()
    assert other["data_parallel_start_rank"] == 2 and "data_parallel_rank" not in other


@pytest.mark.parametrize(
    ("settings", "visible", "refused"),
    [
        ({"tensor_parallel_size": 2, "data_parallel_size": 4}, 4, True),
        ({"tensor_parallel_size": 2, "data_parallel_size": 4}, 8, False),
        ({"tensor_parallel_size": 2, **_TWO_NODES}, 4, False),  # 2 engines of 2 GPUs here, 2 on the other node
        ({"tensor_parallel_size": 4, **_TWO_NODES}, 4, True),
        ({"tensor_parallel_size": 8, "data_parallel_size": 8}, None, False),  # not known: vLLM's CPU backend
    ],
)
def test_more_engines_than_visible_gpus_are_refused(settings, visible, refused):
    options = VLLMOptions(**settings)
    if refused:
        with pytest.raises(PolyrouteError, match=f"need {options.local_devices} GPUs; {visible} are visible"):
            options.check_devices(visible)
    else:
        options.check_devices(visible)


def _serve_args(*flags: str):
    import argparse

    from moe_core.backends.vllm.options import add_parallel_arguments

    parser = argparse.ArgumentParser()
    add_parallel_arguments(parser)
    return parser.parse_args(list(flags))


def test_serves_data_parallel_flags_become_options_and_only_for_vllm():
    from moe_core.backends.vllm.options import parallel_settings

    assert parallel_settings(_serve_args(), "hf") == {}
    args = _serve_args("--data-parallel-size", "4", "--data-parallel-size-local", "2", "--data-parallel-address", "h")
    settings = parallel_settings(args, "vllm")
    assert settings == {"data_parallel_size": 4, "data_parallel_size_local": 2, "data_parallel_address": "h"}
    VLLMOptions(**settings)
    headless = parallel_settings(_serve_args("--data-parallel-size", "2", "--headless"), "vllm")
    assert headless == {"data_parallel_size": 2, "headless": True}
    with pytest.raises(PolyrouteError, match="--data-parallel-size: data parallelism is vLLM's \\(--backend vllm\\)"):
        parallel_settings(_serve_args("--data-parallel-size", "2"), "hf")


def test_an_engine_core_that_ran_none_of_the_requests_packs_nothing():
    assert pack([]) == b"" and unpack(b"") == []


def test_each_engine_core_hands_back_only_the_requests_it_ran_in_the_callers_order():
    rule = RoutingRule(name="softmax->topk", top_k=1)
    recorders = [GateRecorder(0, rule, 4, 8, None)]
    worker = SteeringWorkerExtension()
    worker._polyroute_ledger = ledger = RoutingLedger(soft_rule="softmax")
    _ledger_step(ledger, recorders, StepLayout(req_ids=["b-12345678", "x-87654321"], counts=[2, 1], starts=[0, 0]),
                 torch.randn(1, 3, 4))  # fmt: skip
    held, packed = worker.polyroute_capture_take_held(["a", "b", "c"])
    assert held == ["b"] and [r.n_tokens for r in unpack(packed)] == [2]
    assert ledger.pending() == []  # x, which nobody asked for, is forgotten too
    assert worker.polyroute_capture_take_held(["a"]) == ([], b"")


def test_a_bad_setting_is_refused_before_vllm_is_imported():
    code = (
        "import sys\n"
        "from moe_core.backends.vllm import load_vllm_backend\n"
        "from moe_core.errors import PolyrouteError\n"
        "try:\n"
        "    load_vllm_backend('/nowhere', tensor_parallel=2)\n"
        "except PolyrouteError as error:\n"
        "    print(error)\n"
        "print('vllm' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    message, imported = result.stdout.strip().splitlines()
    assert "not a vLLM backend option" in message and "tensor_parallel_size" in message
    assert imported == "False"


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here")
def test_without_vllm_the_backend_says_how_to_get_it(tiny_model):
    with pytest.raises(PolyrouteError, match=r"requirements-gpu\.txt.*make vllm-venv"):
        load_vllm_backend(tiny_model("qwen3_moe"))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_model_is_described_as_the_hf_backend_describes_it(family, tiny_model):
    config, info = describe(tiny_model(family), model_id="tiny")
    assert config.architectures == [FAMILIES[family]]
    assert info == HFBackend(tiny_model(family), HFOptions(model_id="tiny")).info()


def test_each_backend_names_its_capture_and_the_server_tells_its_clients(tiny_model):
    from starlette.testclient import TestClient

    from moe_core.server import Server

    hf = HFBackend(tiny_model("qwen3_moe"))
    assert hf.capture_name == "hf-hooks"
    with TestClient(Server(hf).app()) as client:
        assert client.get("/info").json()["capture"] == "hf-hooks"
    source = (PACKAGE / "backend.py").read_text(encoding="utf-8")
    assert 'GATE_CAPTURE = "polyroute-router-gate"' in source
    assert 'CHECKED_CAPTURE = "polyroute-router-gate+vllm-routed-experts"' in source


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--data-parallel-size", "2"], "--data-parallel-size: data parallelism is vLLM's (--backend vllm)"),
        (["--backend", "vllm", "--data-parallel-size", "0"], "data_parallel_size must be at least 1, not 0"),
        (["--backend", "vllm", "--headless"], "--headless: these spread vLLM's data parallelism"),
        (["--backend", "vllm", "--data-parallel-size", "2", "--headless"], "--headless runs this node's share"),
        (["--backend", "vllm", "--data-parallel-size", "x"], "invalid int value: 'x'"),
    ],
)
def test_serves_data_parallel_flags_are_checked_before_any_model_loads(flags, message, tmp_path, capsys):
    from polyroute.cli import main

    assert main(["serve", "--model", str(tmp_path / "nowhere"), "--port", "18764", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
