"""The capture context manager: padding never recorded, batching changes nothing, generate() is
captured like a forward pass, and no hook outlives the `with` block."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moe_core.adapters import find_routers
from moe_core.backends.base import GenerationParams
from moe_core.backends.hf import HFBackend
from moe_core.capture import RoutingCapture
from moe_core.errors import ModelError
from tests.conftest import PARALLEL

TEXTS = [text for texts in PARALLEL.values() for text in texts[:3]]


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("family", ["qwen2_moe", "deepseek_v3", "gpt_oss", "phimoe"])
def test_batched_capture_equals_one_sequence_at_a_time(family, tiny_model):
    backend = HFBackend(tiny_model(family))
    batched = backend.trace(TEXTS)
    assert len(set(batched.seq_lengths.tolist())) > 1, "texts of different lengths, so the batch is padded"
    for index, text in enumerate(TEXTS):
        alone = backend.trace([text])
        rows = slice(batched.offsets[index], batched.offsets[index + 1])
        np.testing.assert_array_equal(alone.token_ids, batched.token_ids[rows])
        np.testing.assert_array_equal(alone.expert_ids, batched.expert_ids[rows])
        np.testing.assert_allclose(alone.expert_weights, batched.expert_weights[rows], atol=1e-5)
        np.testing.assert_allclose(alone.router_probs[0], batched.router_probs[index], atol=1e-5)


def test_special_tokens_are_flagged_and_pieces_are_text(tiny_model):
    backend = HFBackend(tiny_model("qwen3_moe"))
    batch = backend.trace(["Hello world"])
    assert batch.pieces[0] == "<s>" and batch.special[0]
    assert "".join(batch.pieces[1:]) == "Hello world"
    assert not batch.special[1:].any()


def test_a_character_split_over_byte_tokens_is_shown_once():
    from moe_core.demo import DEMO_MODEL_DIR

    texts = ["Hello world, 日本語のテキスト", "إذا لم تتلقَّ بريدًا", "ქართული"]  # 日 and ქ take 3 byte tokens each
    batch = HFBackend(DEMO_MODEL_DIR).trace(texts)
    for index, text in enumerate(texts):
        span = slice(batch.offsets[index], batch.offsets[index + 1])
        pieces = [p for p, s in zip(batch.pieces[span], batch.special[span], strict=True) if not s]
        assert "".join(pieces) == text
        assert "" in pieces  # the tokens that only complete a character add no text of their own


def test_chat_template_tokens_are_flagged(tiny_model):
    from moe_core.backends.options import HFOptions

    backend = HFBackend(tiny_model("qwen3_moe"), HFOptions(template="chat"))
    batch = backend.trace(["Hello world"])
    text_tokens = [p for p, s in zip(batch.pieces, batch.special, strict=True) if not s]
    assert "".join(text_tokens) == "Hello world"
    assert batch.special.sum() >= 3  # <|user|>, <|end|>, <|assistant|>


def test_no_hook_survives_the_block_even_when_it_raises(tiny_model):
    backend = HFBackend(tiny_model("qwen3_moe"))
    model = backend.model
    before = _hook_count(model)
    with backend.capture() as capture:
        assert _hook_count(model) == before + 2 + len(find_routers(model))
        model(torch.tensor([[1, 5, 9]]))
    assert _hook_count(model) == before
    assert capture.collect().expert_ids.shape[0] == 3

    with pytest.raises(RuntimeError, match="boom"), backend.capture():
        raise RuntimeError("boom")
    assert _hook_count(model) == before

    # A hook that raises inside the forward pass: the config claims more experts than the router has.
    wrong = RoutingCapture(model, find_routers(model), n_experts=99, top_k=2, soft_rule="softmax")
    with pytest.raises(ModelError, match="cannot be captured"), wrong:
        model(torch.tensor([[1, 5, 9]]))
    assert _hook_count(model) == before


def test_capture_in_generate_equals_a_forward_pass_over_the_same_tokens(tiny_model):
    backend = HFBackend(tiny_model("olmoe"))
    prompts = [TEXTS[0], TEXTS[4]]  # different lengths: left padding during generation
    result = backend.generate(prompts, GenerationParams(max_new_tokens=6))
    routing = result.routing
    assert routing.generated.sum() > 0
    for row in range(len(prompts)):
        rows = slice(routing.offsets[row], routing.offsets[row + 1])
        ids = torch.tensor([routing.token_ids[rows].tolist()])
        with torch.inference_mode(), backend.capture() as capture:
            backend.model(input_ids=ids)
        forward = capture.collect()
        np.testing.assert_array_equal(forward.expert_ids, routing.expert_ids[rows])
        np.testing.assert_allclose(forward.expert_weights, routing.expert_weights[rows], atol=1e-5)
        np.testing.assert_allclose(forward.router_probs[0], routing.router_probs[row], atol=1e-5)
    n_new = [len(backend._tokenizer(text, add_special_tokens=False)["input_ids"]) for text in result.texts]
    assert all(n >= 1 for n in n_new)


def test_router_logits_on_request(tiny_model):
    backend = HFBackend(tiny_model("mixtral"))
    batch = backend.trace(TEXTS[:2], save_logits=True)
    assert batch.router_logits is not None
    assert batch.router_logits.shape == (batch.n_tokens, 3, 8)
    # The stored top-k ids are the top-k of these very logits (Mixtral: softmax is monotone).
    top = np.sort(np.argsort(-batch.router_logits, axis=-1)[..., :2], axis=-1)
    np.testing.assert_array_equal(top, np.sort(batch.expert_ids, axis=-1))
    assert backend.trace(TEXTS[:2]).router_logits is None
