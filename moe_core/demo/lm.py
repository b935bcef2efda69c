"""Causal-LM batches of the built-in corpus and the held-out loss, shared by training and its tests.

Every text becomes `<s> text </s>` (the tokenizer prepends `<s>`; we append `</s>` so the model
also learns where a sentence ends). The loss is the token-weighted mean next-token cross-entropy,
computed in float32 whatever the model's dtype, so the loss recorded for the shipped bf16
checkpoint is reproducible from the files alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.nn import functional as F

from moe_core.corpora import BUILTIN, load_corpus

IGNORE = -100  # label of padding: cross_entropy skips it
MAX_TOKENS = 256  # longer than any built-in text (the longest is about 220 tokens), a guard only


def builtin_texts(split: str) -> list[str]:
    """The texts of one split of the built-in corpus, every language, in corpus order."""
    return [row.text for row in load_corpus(BUILTIN, split=split).rows]


def encode(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of `<s> text </s>` for each text, at most MAX_TOKENS."""
    ids = tokenizer(list(texts), truncation=True, max_length=MAX_TOKENS - 1)["input_ids"]
    return [[*row, tokenizer.eos_token_id] for row in ids]


def pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded `input_ids` and `attention_mask` of shape [batch, longest row]."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = torch.tensor(row)
        mask[index, : len(row)] = 1
    return ids, mask


def token_loss(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy (float32) over the real tokens, and how many were predicted."""
    labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, IGNORE)
    total = F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return total, int((labels != IGNORE).sum())


def length_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices in batches of similar length (few pad tokens), shortest first; deterministic."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def heldout_loss(model: Any, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 64) -> float:
    """Token-weighted mean next-token cross-entropy (nats per token) of `model` on `texts`.

    The loss is summed in float32; load a checkpoint with `dtype=torch.float32` to run the whole
    forward in float32 (a bf16 checkpoint's weights are then exactly its stored values).
    """
    rows = encode(tokenizer, texts)
    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for batch in length_batches([len(row) for row in rows], batch_size):
            ids, mask = pad([rows[i] for i in batch], tokenizer.pad_token_id)
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            loss, n = token_loss(logits, ids, mask)
            total += float(loss)
            count += n
    return total / count
