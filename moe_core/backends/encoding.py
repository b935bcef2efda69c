"""Tokenizing on the host, one way for every backend (hf, vllm): token ids, which tokens are special
or chat-template tokens, and each token's piece of text.

A token's `piece` in the store then means the same thing whichever engine ran the model, and the
routing of two engines can be compared token for token (vLLM is handed token ids, never text).
Works on any fast transformers tokenizer; no torch, no vLLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from moe_core.errors import PolyrouteError

TEMPLATES = ("plain", "chat")


@dataclass(frozen=True, kw_only=True)
class Encoded:
    """One text as the model reads it: token ids, special flags and each token's piece of text."""

    ids: list[int]
    special: list[bool]
    pieces: list[str]

    def __add__(self, more: Encoded) -> Encoded:
        """These tokens followed by `more` (a prompt and what the model generated after it)."""
        return Encoded(ids=self.ids + more.ids, special=self.special + more.special, pieces=self.pieces + more.pieces)


def token_pieces(text: str, offsets: Sequence[tuple[int, int]], tokens: Sequence[str]) -> list[str]:
    """Each token's text: the part of `text` it adds. A byte-level token that only completes a
    character an earlier token began adds nothing (its piece is empty), so the pieces of a text's
    own tokens concatenate to the text; a token with no span (special) keeps its own name."""
    pieces, covered = [], 0
    for (start, end), token in zip(offsets, tokens, strict=True):
        if end <= start:
            pieces.append(token)
            continue
        pieces.append(text[max(start, covered) : end])
        covered = max(covered, end)
    return pieces


def render(tokenizer: Any, text: str, template: str) -> str:
    """The text the tokenizer sees: the text itself, or a user turn of the chat template."""
    if template == "plain":
        return text
    rendered: str = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    return rendered


def count_tokens(tokenizer: Any, texts: Sequence[str], template: str) -> list[int]:
    rendered = [render(tokenizer, text, template) for text in texts]
    ids = tokenizer(rendered, add_special_tokens=template == "plain")["input_ids"]
    return [len(row) for row in ids]


def encode(tokenizer: Any, texts: Sequence[str], *, template: str, max_tokens: int) -> list[Encoded]:
    """Tokenize `texts` (truncated to `max_tokens`), marking special and chat-template tokens."""
    rendered = [render(tokenizer, text, template) for text in texts]
    encoded = tokenizer(
        rendered,
        add_special_tokens=template == "plain",
        truncation=True,
        max_length=max_tokens,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    result = []
    for index, (text, full) in enumerate(zip(texts, rendered, strict=True)):
        ids = encoded["input_ids"][index]
        offsets = encoded["offset_mapping"][index]
        # Chat-template tokens fall outside the user's text inside the rendered prompt.
        start = full.rfind(text)
        end = start + len(text)
        special = [
            bool(flag) or b <= start or a >= end
            for flag, (a, b) in zip(encoded["special_tokens_mask"][index], offsets, strict=True)
        ]
        if all(special):
            raise PolyrouteError(f"text {index} has no token of its own: it is empty; remove it from the corpus")
        pieces = token_pieces(full, offsets, tokenizer.convert_ids_to_tokens(ids))
        result.append(Encoded(ids=list(ids), special=special, pieces=pieces))
    return result


def generated_tokens(tokenizer: Any, ids: Sequence[int]) -> Encoded:
    """Tokens the model generated: each one's own text as its piece (there is no source text)."""
    pieces = [tokenizer.convert_tokens_to_string([token]) for token in tokenizer.convert_ids_to_tokens(list(ids))]
    special_ids = set(tokenizer.all_special_ids)
    return Encoded(ids=list(ids), special=[i in special_ids for i in ids], pieces=pieces)
