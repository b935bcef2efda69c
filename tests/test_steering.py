"""Steering plans and the steering context manager, for every family the engine can steer.

The re-scoring must reproduce each router's own output; lambda 0 must change no generated token;
soft steering raises a promoted expert's share with lambda; ablation removes an expert and hands
its weight on as the model's own rule does (checked against tests/reference_routing.py); hard
steering puts the expert in every token's top-k during generate(); routers outside the band are
never touched; bad plans are refused; no hook outlives the `with` block.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from moe_core.adapters import find_routers, resolve_adapter
from moe_core.backends.base import GenerationParams
from moe_core.backends.hf import HFBackend
from moe_core.errors import ModelError, PolyrouteError
from moe_core.records import RoutingBatch
from moe_core.steering import LayerExperts, PlanError, SteeringPlan
from moe_core.steering.hooks import Steering
from moe_core.steering.scoring import (
    SIGMOID_BIAS_GROUP_TOPK,
    SOFTMAX_GROUP_TOPK,
    SOFTMAX_TOPK,
    SPARSEMIXER,
    TOPK_SOFTMAX,
    RoutingRule,
    rule_for,
    score,
)
from tests.conftest import FAMILIES, PARALLEL
from tests.reference_routing import reference_route

STEERABLE = [family for family in FAMILIES if family != "flex_olmo"]  # flex_olmo: the generic adapter
TEXTS = [texts[i] for texts in PARALLEL.values() for i in (0, 2)]
PROMPTS = [PARALLEL["eng_Latn"][1], PARALLEL["deu_Latn"][4]]  # different lengths: left padding

_backends: dict[str, HFBackend] = {}


@pytest.fixture
def backend(request: pytest.FixtureRequest, tiny_model: Callable[[str], Path]) -> HFBackend:
    family: str = request.param
    if family not in _backends:
        _backends[family] = HFBackend(tiny_model(family))
    return _backends[family]


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _plan(method: str, experts: dict[int, list[int]], band: tuple[int, int], **extra: Any) -> SteeringPlan:
    entries = tuple(LayerExperts(layer=layer, experts=tuple(ids)) for layer, ids in experts.items())
    return SteeringPlan(method=method, band=band, experts=entries, **extra)


def _usage(batch: RoutingBatch, n_experts: int) -> np.ndarray:
    """[L, E] how many tokens chose each expert in each MoE layer."""
    counts = np.zeros((batch.expert_ids.shape[1], n_experts), dtype=np.int64)
    for slot in range(batch.expert_ids.shape[1]):
        counts[slot] = np.bincount(batch.expert_ids[:, slot].ravel(), minlength=n_experts)
    return counts


def _share(batch: RoutingBatch, slot: int, expert: int) -> float:
    return float((batch.expert_ids[:, slot] == expert).any(axis=-1).mean())


# the re-scoring ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", STEERABLE, indirect=True)
def test_rescoring_reproduces_each_routers_own_output(backend):
    model = backend.model
    rule = rule_for(resolve_adapter(model.config), model.config)
    outputs: dict[int, tuple[torch.Tensor, ...]] = {}
    handles = [
        site.module.register_forward_hook(lambda m, a, out, layer=site.layer: outputs.__setitem__(layer, (m, *out)))
        for site in find_routers(model)
    ]
    try:
        with torch.inference_mode():
            model(torch.tensor([list(range(3, 60))]))
    finally:
        for handle in handles:
            handle.remove()
    assert outputs
    for layer, (module, logits, weights, ids) in outputs.items():
        bias = getattr(module, "e_score_correction_bias", None)
        new_weights, new_ids = score(rule, logits.float(), bias=bias)
        assert torch.equal(new_ids, ids), f"layer {layer}"
        assert torch.equal(new_weights.to(weights.dtype), weights), f"layer {layer}"


# Every routing rule, on 8 experts (two groups of 4 where the rule has groups), top-2.
RULES = [
    RoutingRule(name=SOFTMAX_TOPK, top_k=2, renorm=True),
    RoutingRule(name=SOFTMAX_GROUP_TOPK, top_k=2, n_group=2, topk_group=1, scale=2.0),
    RoutingRule(name=SIGMOID_BIAS_GROUP_TOPK, top_k=2, n_group=2, topk_group=1, renorm=True),
    RoutingRule(name=TOPK_SOFTMAX, top_k=2),
    RoutingRule(name=SPARSEMIXER, top_k=2, jitter_eps=0.01),
]


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.name)
def test_an_ablated_logit_is_never_selected_even_where_it_would_tie(rule):
    # Expert 6 is ablated. The others sit so far below expert 0 that their probabilities underflow
    # to the ablated expert's 0 (where torch.topk breaks the tie for expert 6), and expert 6's
    # correction bias alone would win the biased choice.
    logits = torch.tensor([[0.0, -200.0, -200.0, -200.0, -200.0, -200.0, float("-inf"), -200.0]])
    bias = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 10.0, 0.0])
    excluded = torch.isneginf(logits[0])
    weights, ids = score(rule, logits, bias=bias, excluded=excluded)
    assert 6 not in ids.tolist()[0] and 0 in ids.tolist()[0]
    assert torch.isfinite(weights).all()


# PhiMoE's sparsemixer picks the largest float32 logits themselves, where the one-step lift already wins.
@pytest.mark.parametrize("rule", [rule for rule in RULES if rule.name != SPARSEMIXER], ids=lambda rule: rule.name)
def test_forced_experts_win_a_tie_with_the_best_expert(rule):
    # Hard steering lifts experts 5 and 7 to one float32 step above the best logit (experts 0 and 1);
    # in a bf16 router that step rounds away and all four tie, and torch.topk breaks ties its own way
    # (the group rules, whose groups tie too, keep the first group).
    logits = torch.tensor([[3.0, 3.0, -1.0, -1.0, -1.0, 3.0, -1.0, 3.0]])
    forced = torch.zeros(8, dtype=torch.bool)
    forced[[5, 7]] = True
    weights, ids = score(rule, logits, bias=torch.zeros(8), forced=forced)
    assert sorted(ids.tolist()[0]) == [5, 7]
    unforced = score(rule, logits, bias=torch.zeros(8))[1]
    assert sorted(unforced.tolist()[0]) != [5, 7]  # without `forced` a tie drops one: the case is real
    assert torch.isfinite(weights).all()


def test_a_model_defined_rule_is_refused(tiny_model):
    backend = HFBackend(tiny_model("flex_olmo"))
    layer = backend.info().moe_layers[0]
    with pytest.raises(ModelError, match=r"cannot steer generic:flex_olmo.*model-defined"):
        Steering(backend.model, _plan("soft", {layer: [0]}, (layer, layer), strength=1.0))


# lambda 0 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", STEERABLE, indirect=True)
def test_lambda_zero_reproduces_the_unsteered_greedy_generation(backend):
    info = backend.info()
    params = GenerationParams(max_new_tokens=8)
    plain = backend.generate(PROMPTS, params)
    assert plain.routing.generated.sum() >= 2 * 4
    every_layer = {layer: [0, info.n_experts - 1] for layer in info.moe_layers}
    band = (info.moe_layers[0], info.moe_layers[-1])
    coefficients = tuple(
        LayerExperts(layer=layer, experts=tuple(ids), coefficients=(0.7, 0.3)) for layer, ids in every_layer.items()
    )
    plans = [
        _plan("soft", every_layer, band, strength=0.0),
        SteeringPlan(method="adaptive", band=band, experts=coefficients, strength=0.0),
    ]
    before = _hook_count(backend.model)
    for plan in plans:
        with Steering(backend.model, plan) as steering:
            assert _hook_count(backend.model) == before + len(info.moe_layers) == before + len(steering.layers)
            steered = backend.generate(PROMPTS, params)
        assert steered.texts == plain.texts, plan.method
        np.testing.assert_array_equal(steered.routing.token_ids, plain.routing.token_ids)
        np.testing.assert_array_equal(steered.routing.expert_ids, plain.routing.expert_ids)
        np.testing.assert_array_equal(steered.routing.expert_weights, plain.routing.expert_weights)
    assert _hook_count(backend.model) == before


# soft and adaptive: monotone in lambda ----------------------------------------------------------


@pytest.mark.parametrize("method", ["soft", "adaptive"])
@pytest.mark.parametrize("backend", STEERABLE, indirect=True)
def test_the_share_of_a_promoted_expert_rises_with_lambda(backend, method):
    info = backend.info()
    plain = backend.trace(TEXTS)
    usage = _usage(plain, info.n_experts)
    # Promote each layer's least used expert, so its share has room to rise.
    targets = {layer: int(usage[slot].argmin()) for slot, layer in enumerate(info.moe_layers)}
    band = (info.moe_layers[0], info.moe_layers[-1])
    strengths = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 16.0] if method == "soft" else [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 32.0]
    shares, chosen_first = [], []
    for strength in strengths:
        with Steering(backend.model, _plan(method, {k: [v] for k, v in targets.items()}, band, strength=strength)):
            batch = backend.trace(TEXTS)
        shares.append([_share(batch, slot, targets[layer]) for slot, layer in enumerate(info.moe_layers)])
        chosen_first.append((batch.expert_ids[:, 0] == targets[band[0]]).any(axis=-1))
    shares_by_layer = np.array(shares)  # [strengths, layers]
    # The band's first layer sees the same hidden states at every lambda: there a token that chose
    # the expert keeps choosing it as lambda grows.
    for weaker, stronger in itertools.pairwise(chosen_first):
        assert np.all(stronger[weaker])
    mean = shares_by_layer.mean(axis=1)
    assert np.all(np.diff(mean) >= 0), mean
    assert mean[-1] > mean[0] + 0.3, mean
    np.testing.assert_array_equal(
        mean[0], np.mean([_share(plain, s, targets[layer]) for s, layer in enumerate(info.moe_layers)])
    )


def test_negative_soft_steering_suppresses(tiny_model):
    backend = HFBackend(tiny_model("qwen3_moe"))
    info = backend.info()
    plain = backend.trace(TEXTS)
    top = int(_usage(plain, info.n_experts)[0].argmax())
    layer = info.moe_layers[0]
    with Steering(backend.model, _plan("soft", {layer: [top]}, (layer, layer), strength=-2.0)):
        steered = backend.trace(TEXTS)
    assert _share(steered, 0, top) < _share(plain, 0, top) / 2


# ablation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", STEERABLE, indirect=True)
def test_an_ablated_expert_is_never_chosen_and_its_weight_moves_as_the_model_scores(backend):
    info = backend.info()
    config = json.loads((Path(info.source) / "config.json").read_text())
    plain = backend.trace(TEXTS)
    usage = _usage(plain, info.n_experts)
    ablated = {layer: int(usage[slot].argmax()) for slot, layer in enumerate(info.moe_layers)}
    band = (info.moe_layers[0], info.moe_layers[-1])
    routers = {site.layer: site.module for site in find_routers(backend.model)}
    with Steering(backend.model, _plan("ablate", {k: [v] for k, v in ablated.items()}, band)):
        batch = backend.trace(TEXTS, save_logits=True)
    assert batch.router_logits is not None
    for slot, layer in enumerate(info.moe_layers):
        expert = ablated[layer]
        assert usage[slot, expert] > 0, "the ablated expert was chosen before"
        assert not (batch.expert_ids[:, slot] == expert).any()
        logits = batch.router_logits[:, slot].astype(np.float64)
        assert np.all(np.isneginf(logits[:, expert])) and np.isfinite(np.delete(logits, expert, axis=1)).all()
        bias = getattr(routers[layer], "e_score_correction_bias", None)
        if bias is not None:
            bias = bias.detach().double().numpy().copy()
            bias[expert] = -np.inf  # the reference must not choose it on its bias alone
        for token in range(batch.n_tokens):
            with np.errstate(invalid="ignore"):  # sparsemixer's inf / inf distance of the ablated expert
                ids, weights = reference_route(info.family, logits[token], config, bias)
            got = batch.expert_ids[token, slot].astype(int)
            np.testing.assert_array_equal(np.sort(got), np.sort(ids), err_msg=f"layer {layer} token {token}")
            np.testing.assert_allclose(
                batch.expert_weights[token, slot][np.argsort(got)], weights[np.argsort(ids)], atol=1e-5, rtol=0
            )


# hard -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", STEERABLE, indirect=True)
def test_hard_steering_puts_the_experts_in_every_tokens_top_k_during_generation(backend):
    info = backend.info()
    plain = backend.trace(TEXTS)
    usage = _usage(plain, info.n_experts)
    band = (info.moe_layers[0], info.moe_layers[-1])
    one = {layer: [int(usage[slot].argmin())] for slot, layer in enumerate(info.moe_layers)}
    # More experts than top-k: every slot goes to one of them (eps breaks the tie).
    many = {
        layer: [int(e) for e in np.argsort(usage[slot])[: info.top_k + 1]] for slot, layer in enumerate(info.moe_layers)
    }
    params = GenerationParams(max_new_tokens=6)
    for experts in (one, many):
        plan = _plan("hard", experts, band, seed=7)
        runs = []
        for _ in range(2):
            with Steering(backend.model, plan):
                runs.append(backend.generate(PROMPTS, params).routing)
        routing = runs[0]
        assert routing.generated.sum() > 0
        for slot, layer in enumerate(info.moe_layers):
            hit = np.isin(routing.expert_ids[:, slot], experts[layer])
            if len(experts[layer]) == 1:
                assert hit.any(axis=-1).all(), f"layer {layer}"
            else:
                assert hit.all(), f"layer {layer}"
        # eps is drawn from a generator seeded by the plan: the same calls route the same way.
        np.testing.assert_array_equal(runs[0].expert_ids, runs[1].expert_ids)
        np.testing.assert_array_equal(runs[0].token_ids, runs[1].token_ids)


# the band -------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", STEERABLE, indirect=True)
def test_layers_outside_the_band_are_untouched(backend):
    info = backend.info()
    layers = list(info.moe_layers)
    middle = layers[len(layers) // 2]
    everywhere = {layer: [0, 1] for layer in layers}  # experts listed for every layer, applied in the band only
    plan = _plan("soft", everywhere, (middle, middle), strength=8.0)
    plain = backend.trace(TEXTS)
    raw: dict[int, Any] = {}
    final: dict[int, Any] = {}
    sites = find_routers(backend.model)
    with Steering(backend.model, plan) as steering:
        assert steering.layers == [middle]
        handles = []
        for site in sites:
            # One probe ahead of every hook (it sees the router's own output), one behind them all.
            handles.append(
                site.module.register_forward_hook(lambda m, a, o, s=site: raw.__setitem__(s.layer, o), prepend=True)
            )
            handles.append(site.module.register_forward_hook(lambda m, a, o, s=site: final.__setitem__(s.layer, o)))
        try:
            steered = backend.trace(TEXTS)
        finally:
            for handle in handles:
                handle.remove()
    for slot, layer in enumerate(layers):
        if layer == middle:
            assert final[layer] is not raw[layer]
            assert not torch.equal(final[layer][2], raw[layer][2]), "strong steering changes the band's routing"
        else:
            assert final[layer] is raw[layer], f"layer {layer} outside the band was changed"
        if layer < middle:  # before the band even the hidden states are the same
            np.testing.assert_array_equal(steered.expert_ids[:, slot], plain.expert_ids[:, slot])
            np.testing.assert_array_equal(steered.expert_weights[:, slot], plain.expert_weights[:, slot])


# plans ------------------------------------------------------------------------------------------


def test_a_plan_round_trips_through_json(tmp_path):
    plan = SteeringPlan(
        method="adaptive",
        band=(8, 35),
        experts=(
            LayerExperts(layer=8, experts=(3, 17), coefficients=(0.25, 0.125)),
            LayerExperts(layer=9, experts=(4,)),
        ),
        strength=0.03,
        seed=3,
        source="run 4: ben_Beng vs eng_Latn, tau 0.4",
    )
    assert SteeringPlan.from_json(plan.to_json()) == plan
    assert SteeringPlan.load(plan.save(tmp_path / "plan.json")) == plan
    assert json.loads(plan.to_json())["experts"][1] == {"layer": 9, "experts": [4]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"method": "boost"}, "unknown steering method 'boost'"),
        ({"band": (5, 2)}, "band 5-2 is empty"),
        ({"experts": ()}, "lists no expert"),
        ({"strength": float("nan")}, "finite"),
        ({"experts": (LayerExperts(layer=1, experts=(2,)), LayerExperts(layer=1, experts=(3,)))}, "more than once"),
    ],
)
def test_a_malformed_plan_is_refused(change, message):
    fields = {"method": "soft", "band": (0, 3), "experts": (LayerExperts(layer=1, experts=(2,)),)}
    with pytest.raises(PlanError, match=message):
        SteeringPlan(**{**fields, **change})


def test_malformed_layer_entries_and_json_are_refused():
    with pytest.raises(PlanError, match="twice"):
        LayerExperts(layer=1, experts=(2, 2))
    with pytest.raises(PlanError, match="2 experts but 1 coefficients"):
        LayerExperts(layer=1, experts=(2, 3), coefficients=(0.5,))
    with pytest.raises(PlanError, match="negative"):
        LayerExperts(layer=1, experts=(-1,))
    with pytest.raises(PlanError, match="not valid JSON"):
        SteeringPlan.from_json("{")
    with pytest.raises(PlanError, match=r"not a steering plan.*expected an integer"):
        SteeringPlan.from_json('{"method": "soft", "band": [0, 1], "experts": [{"layer": 1.5, "experts": [0]}]}')
    with pytest.raises(PlanError, match="not a steering plan"):
        SteeringPlan.from_json('{"method": "soft", "band": [0, 1]}')


@pytest.mark.parametrize(
    ("method", "experts", "band", "message"),
    [
        ("soft", {7: [0]}, (1, 2), r"layer 7 does not exist: the model has layers 0-2"),
        ("soft", {0: [0]}, (0, 2), r"layer 0 is a dense layer with no router: the MoE layers are 1-2"),
        ("soft", {1: [8]}, (1, 2), r"expert 8 of layer 1 does not exist: experts are 0-7"),
        ("soft", {1: [0]}, (1, 5), r"band 1-5 ends past the model's last layer: layers are 0-2"),
        ("soft", {1: [0]}, (0, 0), r"band 0-0 holds no MoE layer: the MoE layers are 1-2"),
        ("soft", {1: [0]}, (2, 2), r"no expert in the band 2-2 \(it lists layers 1\)"),
        ("ablate", {1: list(range(7))}, (1, 2), r"leaves fewer than the 2 every token must choose: ablate at most 6"),
    ],
)
def test_a_plan_the_model_cannot_carry_is_refused(tiny_model, method, experts, band, message):
    model = HFBackend(tiny_model("deepseek_v3")).model  # layer 0 is dense, layers 1-2 route over 8 experts
    before = _hook_count(model)
    with pytest.raises(PolyrouteError, match=message):
        Steering(model, _plan(method, experts, band, strength=1.0))
    assert _hook_count(model) == before


# hooks ------------------------------------------------------------------------------------------


def test_no_steering_hook_survives_the_block_even_when_it_raises(tiny_model):
    backend = HFBackend(tiny_model("phimoe"))
    model = backend.model
    info = backend.info()
    plan = _plan("hard", {layer: [1] for layer in info.moe_layers}, (0, info.n_layers - 1))
    before = _hook_count(model)
    with pytest.raises(RuntimeError, match="boom"), Steering(model, plan):
        assert _hook_count(model) == before + len(info.moe_layers)
        raise RuntimeError("boom")
    assert _hook_count(model) == before

    # A hook that raises inside the forward pass: sparsemixer samples in training mode.
    model.train()
    try:
        with pytest.raises(ModelError, match="training mode"), Steering(model, plan):
            model(torch.tensor([[1, 5, 9]]))
    finally:
        model.eval()
    assert _hook_count(model) == before


def test_steering_runs_ahead_of_an_earlier_capture_the_recorder_and_the_experts(tiny_model):
    backend = HFBackend(tiny_model("qwen3_moe"))
    model = backend.model
    site = find_routers(model)[0]
    experts = model.get_submodule(site.name.rsplit(".", 1)[0] + ".experts")
    seen: list[torch.Tensor] = []
    probe = experts.register_forward_pre_hook(lambda m, args: seen.append(args[1].clone()))
    plan = _plan("ablate", {site.layer: [3]}, (site.layer, site.layer))
    ids = torch.tensor([list(range(3, 60))])
    try:
        with torch.inference_mode():
            plain = model(ids, output_router_logits=True)
            assert (plain.router_logits[0].argmax(dim=-1) == 3).any(), "expert 3 leads some token unsteered"
            seen.clear()
            # The capture's hooks are registered first; steering still runs ahead of them.
            with backend.capture(save_logits=True) as capture, Steering(model, plan):
                out = model(ids, output_router_logits=True)
    finally:
        probe.remove()
    assert torch.isneginf(out.router_logits[0][:, 3]).all()
    routing = capture.collect()
    assert routing.router_logits is not None and np.isneginf(routing.router_logits[:, 0, 3]).all()
    assert not (routing.expert_ids[:, 0] == 3).any()
    assert len(seen) == 1 and not (seen[0] == 3).any()
