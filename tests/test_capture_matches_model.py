"""For every supported family: what `polyroute trace` stores equals the model's own routing.

The reference is independent of Polyroute's capture: the model is loaded afresh, run on each
stored sequence alone with `output_router_logits=True`, and its logits are routed by the numpy
re-implementations in `reference_routing.py`.
"""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from polyroute.workflows.trace import TraceRequest, start_trace
from tests.conftest import FAMILIES
from tests.reference_routing import expected_moe_layers, reference_route, reference_soft


def _bias(model: torch.nn.Module, n_moe: int) -> list[np.ndarray | None]:
    biases = [b.detach().double().numpy() for n, b in model.named_buffers() if n.endswith("e_score_correction_bias")]
    return biases or [None] * n_moe


@pytest.mark.parametrize("family", FAMILIES)
def test_stored_routing_equals_the_models_own(family, tiny_model, corpus_file, tmp_path):
    folder = tiny_model(family)
    db = tmp_path / "store.duckdb"
    outcome = start_trace(
        TraceRequest(db=db, model=folder, corpus=corpus_file, langs=["eng_Latn", "rus_Cyrl"], limit=3, batch_size=4)
    )
    config = json.loads((folder / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    layers = expected_moe_layers(config)
    biases = _bias(model, len(layers))
    con = duckdb.connect(str(db), read_only=True)
    unit = con.execute("SELECT weight_unit FROM runs WHERE run_id = ?", [outcome.run_id]).fetchone()[0]
    assert con.execute("SELECT moe_layers FROM models").fetchone()[0] == layers
    seq_ids = [r[0] for r in con.execute("SELECT seq_id FROM sequences ORDER BY seq_id").fetchall()]
    assert len(seq_ids) == 6
    for seq_id in seq_ids:
        token_ids = [
            r[0] for r in con.execute("SELECT token_id FROM tokens WHERE seq_id = ? ORDER BY pos", [seq_id]).fetchall()
        ]
        with torch.no_grad():
            out = model(torch.tensor([token_ids]), output_router_logits=True)
        logits = np.stack([t.double().numpy() for t in out.router_logits], axis=1)  # [tokens, layers, experts]
        n_tokens, n_layers, _ = logits.shape
        k = config["num_experts_per_tok"]
        routes = con.execute(
            "SELECT pos, layer, rank, expert, weight FROM routes WHERE seq_id = ? ORDER BY pos, layer, rank", [seq_id]
        ).fetchnumpy()
        assert len(routes["pos"]) == n_tokens * n_layers * k
        assert list(np.unique(routes["layer"])) == layers
        experts = routes["expert"].reshape(n_tokens, n_layers, k).astype(int)
        weights = routes["weight"].reshape(n_tokens, n_layers, k).astype(float)
        for t in range(n_tokens):
            for layer in range(n_layers):
                ids, w = reference_route(family, logits[t, layer], config, biases[layer])
                order = np.argsort(ids)
                got = np.argsort(experts[t, layer])
                np.testing.assert_array_equal(experts[t, layer][got], ids[order], err_msg=f"{family} t={t} l={layer}")
                np.testing.assert_allclose(weights[t, layer][got], w[order], atol=unit + 1e-6, rtol=0)
        probs = con.execute("SELECT probs FROM router_probs WHERE seq_id = ? ORDER BY layer", [seq_id]).fetchall()
        expected = reference_soft(family, logits).mean(axis=0)  # [L, E]
        np.testing.assert_allclose(np.array([p[0] for p in probs]), expected, atol=1e-6)
