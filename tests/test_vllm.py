"""The vLLM backend: everything that runs without a GPU, and the GPU checks that skip cleanly here.

Without vLLM: importing the package loads no vLLM; a plan becomes the buffers' arrays; the
steering hook re-scores router logits exactly as the hf backend's Steering does (for every
steerable family and mode, with the experts then chosen by the family's own rule, as vLLM's router
would choose them); the hook changes nothing without a plan; vLLM's routed-experts arrays decode
into a RoutingBatch; the plugin registers one steerable class per architecture; options are checked.
With vLLM and CUDA (marked gpu): a real engine on a tiny model traces as the hf backend does and
steers generation.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from moe_core.adapters import find_routers, resolve_adapter
from moe_core.backends.base import GenerationParams
from moe_core.backends.hf import HFBackend
from moe_core.backends.options import HFOptions
from moe_core.backends.vllm import VLLMOptions, load_vllm_backend
from moe_core.backends.vllm.describe import describe
from moe_core.backends.vllm.plan_tensors import MODE_CODES, MODE_OFF, cache_salt, plan_arrays
from moe_core.backends.vllm.registry import MODELS_MODULE, STEERABLE, register_steerable, steerable
from moe_core.backends.vllm.routes import SequenceRouting, routing_batch
from moe_core.backends.vllm.steer import apply_arrays, find_states, install_steering, steer_logits, steered_bias
from moe_core.backends.vllm.worker import EXTENSION
from moe_core.errors import ModelError, PolyrouteError
from moe_core.records import ModelInfo
from moe_core.steering import LayerExperts, PlanError, SteeringPlan
from moe_core.steering.hooks import Steering
from moe_core.steering.scoring import SIGMOID_BIAS_GROUP_TOPK, rule_for, score
from tests.conftest import PARALLEL

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


def test_each_plan_has_its_own_prefix_cache_and_unsteered_requests_share_one():
    assert cache_salt(None) is None
    plan = _plan("soft", 1, strength=0.5)
    assert cache_salt(plan) == cache_salt(SteeringPlan.from_json(plan.to_json()))
    others = [_plan("soft", 1, strength=0.6), _plan("soft", 2, strength=0.5), _plan("hard", 1), _plan("ablate", 1)]
    salts = {cache_salt(p) for p in [plan, *others]}
    assert len(salts) == 5 and all(salt.startswith("polyroute-plan-") for salt in salts)


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


# routed experts -> RoutingBatch ------------------------------------------------------------------


def _info(n_layers: int = 4, moe_layers: tuple[int, ...] = (1, 3), top_k: int = 2) -> ModelInfo:
    return ModelInfo(
        model_id="m", arch="Qwen3MoeForCausalLM", family="qwen3_moe", source="/m", n_layers=n_layers,
        moe_layers=moe_layers, n_experts=8, top_k=top_k, n_shared_experts=0, scoring="softmax->topk",
        soft_rule="softmax", weight_bound=1.0, config_hash="x",
    )  # fmt: skip


def _routed(rows: int, n_layers: int = 4, top_k: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 8, size=(rows, n_layers, top_k)).astype(np.uint8)


def test_routed_experts_decode_into_a_routing_batch_of_the_moe_layers():
    prompt, generated = _routed(3, seed=1), _routed(5, seed=2)
    sequences = [
        SequenceRouting(token_ids=[1, 7, 9], pieces=["<s>", "a", "b"], special=[True, False, False], n_generated=0,
                        routed=prompt),
        SequenceRouting(token_ids=[1, 4, 5, 6, 2], pieces=["<s>", "c", " d", "e", "</s>"],
                        special=[True, False, False, False, True], n_generated=2, routed=generated),
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
    np.testing.assert_array_equal(batch.expert_ids[:3], prompt[:, [1, 3]])
    np.testing.assert_array_equal(batch.expert_ids[3:], generated[:, [1, 3]])
    assert batch.expert_weights is None and batch.router_probs is None and batch.router_logits is None


@pytest.mark.parametrize(
    ("routed", "message"),
    [
        (_routed(4), "routing for 4 tokens of sequence 0, which read 3"),
        (_routed(3, n_layers=2), "expected \\[tokens, 4 layers, top-k 2\\]"),
        (_routed(3, top_k=3), "expected \\[tokens, 4 layers, top-k 2\\]"),
    ],
    ids=["rows", "layers", "top-k"],
)
def test_routed_experts_of_the_wrong_shape_are_refused(routed, message):
    seq = SequenceRouting(
        token_ids=[1, 2, 3], pieces=["a", "b", "c"], special=[False] * 3, n_generated=0, routed=routed
    )
    with pytest.raises(ModelError, match=message):
        routing_batch([seq], _info())


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
    with pytest.raises(ModelError, match="--backend hf"):
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
    ],
)
def test_bad_options_are_refused_with_the_fix(change, message):
    with pytest.raises(PolyrouteError, match=message):
        VLLMOptions(**change)


def test_options_become_engine_arguments():
    args = VLLMOptions(tensor_parallel_size=2, dtype="bfloat16", max_model_len=4096).engine_args()
    assert args == {
        "tensor_parallel_size": 2, "dtype": "bfloat16", "gpu_memory_utilization": 0.9, "enforce_eager": False,
        "seed": 0, "max_model_len": 4096,
    }  # fmt: skip
    assert "max_model_len" not in VLLMOptions().engine_args()


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
    with pytest.raises(PolyrouteError, match=r"requirements-gpu\.txt"):
        load_vllm_backend(tiny_model("qwen3_moe"))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_model_is_described_as_the_hf_backend_describes_it(family, tiny_model):
    config, info = describe(tiny_model(family), model_id="tiny")
    assert config.architectures == [FAMILIES[family]]
    assert info == HFBackend(tiny_model(family), HFOptions(model_id="tiny")).info()


# on a GPU, with vLLM -----------------------------------------------------------------------------

gpu = [
    pytest.mark.gpu,
    pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM (pip install -r requirements-gpu.txt); not installed here"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device; none is visible here"),
]
GPU_TEXTS = [text for texts in PARALLEL.values() for text in texts]
GPU_PROMPTS = [PARALLEL["eng_Latn"][1], PARALLEL["deu_Latn"][4], PARALLEL["rus_Cyrl"][0]]


@pytest.fixture(scope="module")
def engine(tiny_model):
    return load_vllm_backend(tiny_model("qwen3_moe"), dtype="float32", gpu_memory_utilization=0.3)


def _usage(batch, slot: int, n_experts: int) -> np.ndarray:
    return np.bincount(batch.expert_ids[:, slot].ravel(), minlength=n_experts)


class TestOnGPU:
    """A real vLLM engine on a tiny Qwen3-MoE (the plugin must be installed: pip install -e .)."""

    pytestmark = gpu

    def test_a_trace_routes_the_hf_backends_tokens_to_the_same_experts(self, engine, tiny_model):
        ours = engine.trace(GPU_TEXTS)
        theirs = HFBackend(tiny_model("qwen3_moe")).trace(GPU_TEXTS)
        assert engine.info().moe_layers == tuple(theirs.layers)
        np.testing.assert_array_equal(ours.token_ids, theirs.token_ids)
        np.testing.assert_array_equal(ours.seq_lengths, theirs.seq_lengths)
        assert ours.pieces == theirs.pieces
        assert ours.expert_weights is None and ours.router_probs is None
        same = (np.sort(ours.expert_ids, axis=-1) == np.sort(theirs.expert_ids, axis=-1)).all(axis=-1)
        assert same.mean() > 0.9, "different kernels may flip near-ties, never most choices"

    def test_steering_moves_the_routing_to_the_promoted_experts(self, engine):
        info = engine.info()
        params = GenerationParams(max_new_tokens=16)
        plain = engine.generate(GPU_PROMPTS, params)
        slot = len(info.moe_layers) // 2
        rare = tuple(int(e) for e in np.argsort(_usage(plain.routing, slot, info.n_experts))[:2])
        plan = _plan("soft", info.moe_layers[slot], rare, strength=8.0)
        steered = engine.generate(GPU_PROMPTS, params, plan)
        before = _usage(plain.routing, slot, info.n_experts)[list(rare)].sum() / plain.routing.n_tokens
        after = _usage(steered.routing, slot, info.n_experts)[list(rare)].sum() / steered.routing.n_tokens
        assert after > before + 0.5, (before, after)
        assert steered.texts != plain.texts or not np.array_equal(steered.routing.expert_ids, plain.routing.expert_ids)

    def test_unsteered_generation_after_a_steered_one_equals_the_plain_one(self, engine):
        info = engine.info()
        params = GenerationParams(max_new_tokens=16)
        plain = engine.generate(GPU_PROMPTS, params)
        engine.generate(GPU_PROMPTS, params, _plan("ablate", info.moe_layers[-1], (0, 1)))
        again = engine.generate(GPU_PROMPTS, params)
        assert again.texts == plain.texts
        np.testing.assert_array_equal(again.routing.expert_ids, plain.routing.expert_ids)
        # Each sequence is its prompt, then the generated tokens the model read (flagged as generated).
        n_fed = again.routing.seq_lengths - np.asarray(engine.count_tokens(GPU_PROMPTS))
        np.testing.assert_array_equal(
            n_fed, [int(g.sum()) for g in np.split(again.routing.generated, again.routing.offsets[1:-1])]
        )
