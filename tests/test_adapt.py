"""RISE subnetwork training (moe_core.adapt, polyroute.workflows.adapt): only the selected expert slices
change, in memory and in the merged checkpoint on disk; on the demo model, adapting to a language
lowers its held-out loss more than it moves any other; the selection matches RISE computed
independently from the raw routing rows of the store."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from moe_core.adapt import TrainSettings
from moe_core.adapt.checkpoint import load_adapter, merge_adapter, save_adapter, slices_digest
from moe_core.adapt.subnetwork import ExpertSlice, SubnetworkMask, expert_slices, slice_values
from moe_core.adapt.training import language_losses, train_subnetwork
from moe_core.adapters import find_routers
from moe_core.analysis.rise import select_rise
from moe_core.backends.hf import HFBackend
from moe_core.demo import DEMO_MODEL_DIR
from moe_core.errors import ModelError, PolyrouteError
from moe_core.tiny import SAMPLE_TEXT, build_tiny_model
from polyroute.run_data import RunData, Selection
from polyroute.workflows.adapt import AdaptRequest, select, start_adaptation
from store import open_store
from store import queries as q
from tests.helpers import assert_only_experts_changed_on_disk

# Fused experts plain (qwen3_moe), beside a shared expert (qwen2_moe), after a dense layer with a
# correction-bias buffer (deepseek_v3), and with per-expert biases (gpt_oss).
FAMILIES = ["qwen3_moe", "qwen2_moe", "deepseek_v3", "gpt_oss"]
SETTINGS = TrainSettings(epochs=2, lr=1e-2, batch_size=4, weight_decay=0.1, seed=0)


def _load(folder: Path) -> nn.Module:
    model: nn.Module = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model


def _some_experts(model: nn.Module) -> list[tuple[int, int]]:
    layers = [site.layer for site in find_routers(model)]
    return [(layers[0], 1), (layers[-1], 5), (layers[-1], 2)]


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, copied."""
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def assert_only_slices_changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], slices) -> None:
    """Outside `slices` every tensor is bit-identical; every selected slice differs."""
    rows: dict[str, set[int] | None] = {}
    for piece in slices:
        rows[piece.tensor] = None if piece.index is None else {*(rows.get(piece.tensor) or ()), piece.index}
    assert before.keys() == after.keys()
    for name, old in before.items():
        new = after[name].to(old.dtype)
        if name not in rows:
            assert torch.equal(old, new), name
            continue
        chosen = rows[name]
        if chosen is None:
            assert not torch.equal(old, new), name
            continue
        others = [i for i in range(old.shape[0]) if i not in chosen]
        assert torch.equal(old[others], new[others]), name
        for index in chosen:
            assert not torch.equal(old[index], new[index]), (name, index)


@pytest.mark.parametrize("family", FAMILIES)
def test_training_changes_the_selected_slices_and_nothing_else(tiny_model, family):
    folder = tiny_model(family)
    model, tokenizer = _load(folder), AutoTokenizer.from_pretrained(folder)
    slices = expert_slices(model, _some_experts(model))
    assert {piece.index for piece in slices} == {1, 5, 2}
    before = _snapshot(model)
    log = train_subnetwork(model, tokenizer, slices, SAMPLE_TEXT, SETTINGS)
    assert log.steps == 6 and np.isfinite(log.last_loss)
    assert_only_slices_changed(before, _snapshot(model), slices)
    assert all(param.requires_grad for param in model.parameters())  # given back as loaded


def test_training_is_seeded(tiny_model):
    folder = tiny_model("qwen3_moe")
    runs = []
    for _ in range(2):
        model, tokenizer = _load(folder), AutoTokenizer.from_pretrained(folder)
        slices = expert_slices(model, _some_experts(model))
        train_subnetwork(model, tokenizer, slices, SAMPLE_TEXT, SETTINGS)
        runs.append(slice_values(model, slices))
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][key], runs[1][key]) for key in runs[0])


def test_a_nan_gradient_in_an_unselected_slice_does_not_leak(tiny_model):
    model = _load(tiny_model("qwen3_moe"))
    slices = expert_slices(model, [(1, 3)])
    mask = SubnetworkMask(model, slices)
    param = mask.params[slices[0].tensor]
    param.grad = torch.full_like(param, float("nan"))
    mask.mask_gradients()
    assert torch.isnan(param.grad[3]).all()
    assert torch.equal(param.grad[[0, 1, 2, 4, 5, 6, 7]], torch.zeros_like(param.grad[[0, 1, 2, 4, 5, 6, 7]]))
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {s.tensor for s in slices}
    mask.release()


def test_per_expert_modules_are_trained_whole(tiny_model):
    # transformers 5 fuses every supported family; a family with one module per expert is frozen by module.
    model = _load(tiny_model("qwen3_moe"))
    block = model.model.layers[1].mlp
    block.experts = nn.ModuleList(nn.Linear(4, 4) for _ in range(8))
    slices = expert_slices(model, [(1, 6)])
    assert [(s.tensor, s.index) for s in slices] == [
        ("model.layers.1.mlp.experts.6.weight", None),
        ("model.layers.1.mlp.experts.6.bias", None),
    ]
    SubnetworkMask(model, slices)
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {s.tensor for s in slices}


def test_experts_that_cannot_be_told_apart_are_refused(tiny_model):
    model = _load(tiny_model("qwen3_moe"))
    with pytest.raises(PolyrouteError, match="expert 8 does not exist"):
        expert_slices(model, [(1, 8)])
    with pytest.raises(PolyrouteError, match="layer 7 has no router"):
        expert_slices(model, [(7, 0)])
    model.model.layers[1].mlp.experts.odd = nn.Parameter(torch.zeros(3, 2))
    with pytest.raises(ModelError, match=r"cannot tell the experts apart .* odd"):
        expert_slices(model, [(1, 0)])
    del model.model.layers[0].mlp.experts
    with pytest.raises(ModelError, match=r"no experts module model\.layers\.0\.mlp\.experts"):
        expert_slices(model, [(0, 0)])


def test_the_merged_checkpoint_is_the_base_but_the_slices(tiny_model, tmp_path):
    folder = tiny_model("qwen3_moe")
    model, tokenizer = _load(folder), AutoTokenizer.from_pretrained(folder)
    slices = expert_slices(model, _some_experts(model))
    digest = slices_digest(slice_values(model, slices))
    train_subnetwork(model, tokenizer, slices, SAMPLE_TEXT, SETTINGS)
    record = {"base_model": str(folder), "config_hash": HFBackend(folder).info().config_hash}
    adapter = save_adapter(tmp_path / "adapter", model, slices, record, digest)
    assert {p.name for p in adapter.iterdir()} == {"adapter.json", "slices.safetensors"}
    merged = merge_adapter(adapter, tmp_path / "merged")
    assert_only_experts_changed_on_disk(folder, merged, _some_experts(model))
    trained = load_adapter(adapter).values
    # ... and it loads like any checkpoint, with the trained weights in place.
    loaded = HFBackend(merged).model
    assert_only_slices_changed(_snapshot(_load(folder)), _snapshot(loaded), slices)
    assert all(torch.equal(value, slice_values(loaded, slices)[key]) for key, value in trained.items())


def test_a_merge_onto_other_weights_or_into_a_full_folder_is_refused(tiny_model, tmp_path):
    folder = tiny_model("qwen3_moe")
    model = _load(folder)
    slices = expert_slices(model, [(2, 0)])
    record = {"base_model": str(folder), "config_hash": HFBackend(folder).info().config_hash}
    adapter = save_adapter(tmp_path / "adapter", model, slices, record, "0" * 16)  # started from other weights
    with pytest.raises(PolyrouteError, match="differ from those the adapter started from"):
        merge_adapter(adapter, tmp_path / "merged")
    assert not (tmp_path / "merged").exists() and not list(tmp_path.glob(".merged*"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(PolyrouteError, match="already exists and is not empty"):
        merge_adapter(adapter, tmp_path / "full")
    other = build_tiny_model("qwen3_moe", tmp_path / "other", layers=2)
    with pytest.raises(PolyrouteError, match="not the model this adapter was trained on"):
        merge_adapter(adapter, tmp_path / "merged", base=other)


# The demo model: real text, real routing. ------------------------------------------------------

TARGET = "kor_Hang"
OTHERS = ["eng_Latn", "jpn_Jpan", "deu_Latn", "zho_Hans", "rus_Cyrl"]


@pytest.mark.slow
def test_adapting_the_demo_model_lowers_the_target_loss_most(built_demo_store, tmp_path):
    db = tmp_path / "demo.duckdb"
    shutil.copyfile(built_demo_store, db)
    request = AdaptRequest(
        db=db,
        model=DEMO_MODEL_DIR,
        run_id=1,
        target=TARGET,
        budget=8,
        eval_langs=OTHERS,
        settings=TrainSettings(lr=2e-3, max_steps=30),
        out=tmp_path / "adapter",
    )
    stages: list[str] = []
    outcome = start_adaptation(request, lambda step: stages.append(step.stage))
    assert list(dict.fromkeys(stages)) == ["loading", "before", "training", "after"]
    change = {b.lang: a.loss - b.loss for b, a in zip(outcome.before, outcome.after, strict=True)}
    print({b.lang: (round(b.loss, 4), round(a.loss, 4)) for b, a in zip(outcome.before, outcome.after, strict=True)})
    assert list(change) == [TARGET, *OTHERS]
    assert change[TARGET] < -0.05
    assert max(abs(change[lang]) for lang in OTHERS) < abs(change[TARGET]) / 3
    with open_store(db, read_only=True) as store:
        (run,) = q.adaptation_runs(store)
        assert (run.run_id, run.status, run.target, run.n_experts) == (outcome.run_id, "complete", TARGET, 8)
        experts = q.adaptation_experts(store, run.run_id)
        assert [(e.layer, e.expert) for e in experts] == outcome.subnetwork.pairs
        scores = {(s.lang, s.metric): s for s in q.adaptation_scores(store, run.run_id)}
    assert scores[(TARGET, "loss")].change == pytest.approx(change[TARGET])
    assert scores[(TARGET, "perplexity")].after == pytest.approx(np.exp(outcome.after[0].loss))


def _brute_force_selection(db: Path, target: str, budget: int, ratios: tuple[float, float, float]):
    """RISE from the raw routing rows, written out again from docs/methods.md: [(layer, expert, score)]."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        routes = con.execute(
            "SELECT s.lang, r.layer, r.expert FROM routes AS r JOIN sequences AS s USING (run_id, seq_id) "
            "WHERE r.run_id = 1"
        ).fetchnumpy()
        tokens = dict(
            con.execute("SELECT lang, sum(n_tokens) FROM sequences WHERE run_id = 1 GROUP BY lang").fetchall()
        )
        n_layers, n_experts = con.execute("SELECT n_layers, n_experts FROM models").fetchone()
    finally:
        con.close()
    lang, layer, expert = (np.asarray(routes[column]) for column in ("lang", "layer", "expert"))
    langs, layers = sorted(tokens), sorted(set(layer.tolist()))
    freq = np.zeros((len(langs), len(layers), n_experts))
    for i, code in enumerate(langs):
        in_lang = lang == code  # once per language: comparing the strings is what takes time here
        for y, decoder_layer in enumerate(layers):
            hits = expert[in_lang & (layer == decoder_layer)]
            freq[i, y] = np.bincount(hits, minlength=n_experts) / tokens[code]
    a_t, mean = freq[langs.index(target)], freq.mean(axis=0)
    spec = a_t / mean * (1 + 10 * a_t)
    ovlp = 1 / (1 + freq.std(axis=0) / mean) * (1 + 10 * mean)
    zone_of = ["shallow" if d < 0.375 else "middle" if d < 0.625 else "deep" for d in np.array(layers) / n_layers]
    ranked = {
        zone: sorted(
            (-(ovlp if zone == "middle" else spec)[y, e], layers[y], e)
            for y in range(len(layers))
            if zone_of[y] == zone
            for e in range(n_experts)
        )
        for zone in ("shallow", "middle", "deep")
    }
    wanted = {"shallow": int(budget * ratios[0]), "middle": int(budget * ratios[1])}
    wanted["deep"] = budget - wanted["shallow"] - wanted["middle"]
    spill = sum(max(0, wanted[z] - len(ranked[z])) for z in ranked)
    wanted = {z: min(wanted[z], len(ranked[z])) for z in ranked}
    for zone, _ in sorted(zip(ranked, ratios, strict=True), key=lambda pair: -pair[1]):
        extra = min(spill, len(ranked[zone]) - wanted[zone])
        wanted[zone], spill = wanted[zone] + extra, spill - extra
    return [(lay, e, -score) for zone in ranked for score, lay, e in ranked[zone][: wanted[zone]]]


@pytest.mark.parametrize(
    ("target", "budget", "ratios"),
    [
        ("kor_Hang", 10, (0.35, 0.25, 0.40)),
        ("heb_Hebr", 30, (0.35, 0.25, 0.40)),  # the deep zone's share (13) overflows its 8 experts
        ("eng_Latn", 5, (0.2, 0.6, 0.2)),
    ],
)
def test_the_selection_agrees_with_rise_from_the_raw_routes(built_demo_store, target, budget, ratios):
    expected = _brute_force_selection(built_demo_store, target, budget, ratios)
    with open_store(built_demo_store, read_only=True) as store:
        chosen = select(store, 1, target, budget, ratios, zones="fraction")  # the rules written out above
    assert [(e.layer, e.expert) for e in chosen.experts] == [(lay, e) for lay, e, _ in expected]
    assert [e.score for e in chosen.experts] == pytest.approx([score for _, _, score in expected], abs=1e-6)
    assert [e.rank for e in chosen.experts] == list(range(1, budget + 1))
    assert chosen.zones == ["shallow", "shallow", "middle", "deep"] and chosen.layers == [0, 1, 2, 3]


def test_the_demo_losses_match_the_demo_training_record():
    # language_losses feeds texts exactly as the demo model was trained and scored (moe_core.demo.lm).
    from moe_core.demo.lm import builtin_texts, heldout_loss

    model, tokenizer = _load(DEMO_MODEL_DIR), AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)
    texts = builtin_texts("heldout")[:100]
    (ours,) = language_losses(model, tokenizer, {"mixed": texts})
    assert ours.loss == pytest.approx(heldout_loss(model, tokenizer, texts), rel=1e-6)


def test_a_slice_key_names_its_expert():
    assert ExpertSlice(layer=1, expert=3, tensor="m.experts.down_proj", index=3).key == "m.experts.down_proj#3"
    assert ExpertSlice(layer=1, expert=3, tensor="m.experts.3.w1.weight", index=None).key == "m.experts.3.w1.weight"


@pytest.mark.parametrize("zones", ["reference", "fraction"])
def test_the_zone_rule_passes_through_to_select_rise(built_demo_store, zones):
    with open_store(built_demo_store, read_only=True) as store:
        data = RunData(store, 1, Selection())
        expected = select_rise(
            data.frequencies, data.langs.index("heb_Hebr"), layers=data.layers, n_layers=data.layout.n_layers,
            budget=12, zones=zones,
        )  # fmt: skip
        chosen = select(store, 1, "heb_Hebr", 12, zones=zones)
    assert chosen.pairs == [(data.layers[y], e) for y, e in expected.experts]
    assert chosen.zone_rule == zones
    # The demo model's 4 layers: the reference rule cuts at round(1.5) = round(2.5) = 2, so it has no middle zone.
    third = "deep" if zones == "reference" else "middle"
    assert chosen.zones == ["shallow", "shallow", third, "deep"]


@pytest.mark.slow
def test_a_second_adaptation_reuses_the_stored_before_losses(built_demo_store, tmp_path):
    db = tmp_path / "demo.duckdb"
    shutil.copyfile(built_demo_store, db)

    def adapt(name: str, langs: list[str] | None) -> tuple[object, list[int]]:
        request = AdaptRequest(
            db=db, model=DEMO_MODEL_DIR, run_id=1, target=TARGET, budget=4, eval_langs=langs,
            settings=TrainSettings(max_steps=2), out=tmp_path / name,
        )  # fmt: skip
        batches: list[int] = []  # the "before" held-out batches this run computed
        outcome = start_adaptation(request, lambda step: batches.append(step.done) if step.stage == "before" else None)
        return outcome, batches

    first, first_measured = adapt("first", None)
    assert [loss.lang for loss in first.before] == [TARGET, "eng_Latn"] and first_measured and first.reused == []
    second, measured = adapt("second", None)
    assert measured == [] and second.reused == sorted([TARGET, "eng_Latn"])  # nothing computed again
    assert [(b.lang, b.loss, b.n_tokens) for b in second.before] == [(b.lang, b.loss, b.n_tokens) for b in first.before]
    two_languages = len(first_measured)
    third, measured = adapt("third", ["jpn_Jpan", "eng_Latn"])
    # Only Japanese is measured (the built-in languages share their items: as many batches as one of two).
    assert third.reused == sorted([TARGET, "eng_Latn"]) and len(measured) == two_languages // 2
    with open_store(db, read_only=True) as store:
        runs = {run.run_id: run for run in q.adaptation_runs(store)}
    assert runs[third.run_id].params["before_reused"] == {TARGET: second.run_id, "eng_Latn": second.run_id}
