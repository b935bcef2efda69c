"""Token pieces: the text each token adds to the text it was cut from.

Shared by every backend that tokenizes on the host (hf, vllm), so that a token's `piece` in the
store means the same thing whichever engine ran the model. Plain Python: no torch, no tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence


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
