"""The records the engine hands out: what a model is (`ModelInfo`) and what it routed (`RoutingBatch`).

A `RoutingBatch` holds the routing of S sequences, N real tokens in all (padding never included),
over the L MoE layers of the model, as flat numpy arrays: token rows are sequence-major, so the
tokens of sequence s are rows `offsets[s]:offsets[s + 1]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SOFT_SOFTMAX = "softmax"
SOFT_SIGMOID_NORMALISED = "sigmoid_normalised"


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """What the store records about a model (the `models` table).

    `moe_layers` are the model's own decoder-layer indices that have a router; `soft_rule` says
    how router scores became the soft distribution (`softmax`, or per-token sigmoid scores
    normalised to sum 1 for sigmoid routers, docs/methods.md); `weight_bound` is an upper bound of the
    routing weights the model uses (its routed scaling factor, else 1).
    """

    model_id: str
    arch: str
    family: str
    source: str
    n_layers: int
    moe_layers: tuple[int, ...]
    n_experts: int
    top_k: int
    n_shared_experts: int
    scoring: str
    soft_rule: str
    weight_bound: float
    config_hash: str


@dataclass(frozen=True, kw_only=True)
class RoutingBatch:
    """Routing of S sequences (N real tokens) through the L MoE layers of one model.

    Shapes:
      layers:          [L] int      the model's decoder-layer index of each MoE layer
      seq_lengths:     [S] int      real tokens per sequence
      token_ids:       [N] int
      pieces:          N strings    the tokenizer's text of each token
      special:         [N] bool     special or chat-template token (not part of the user's text)
      generated:       [N] bool     produced by generate() rather than given
      expert_ids:      [N, L, k] int16   the top-k experts, in the model's rank order
      expert_weights:  [N, L, k] float32 the weights the model really applies, or None (id-only backends)
      router_probs:    [S, L, E] float32 mean soft distribution over each sequence's real tokens, or None
      router_logits:   [N, L, E] float32 raw router logits, only when asked for
    """

    layers: np.ndarray
    seq_lengths: np.ndarray
    token_ids: np.ndarray
    pieces: list[str]
    special: np.ndarray
    generated: np.ndarray
    expert_ids: np.ndarray
    expert_weights: np.ndarray | None
    router_probs: np.ndarray | None
    router_logits: np.ndarray | None = None
    offsets: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = int(self.seq_lengths.sum())
        checks = {
            "token_ids": self.token_ids.shape[:1] == (n,),
            "pieces": len(self.pieces) == n,
            "special": self.special.shape == (n,),
            "generated": self.generated.shape == (n,),
            "expert_ids": self.expert_ids.shape[:2] == (n, len(self.layers)),
            "expert_weights": self.expert_weights is None or self.expert_weights.shape == self.expert_ids.shape,
            "router_probs": self.router_probs is None
            or self.router_probs.shape[:2] == (len(self.seq_lengths), len(self.layers)),
            "router_logits": self.router_logits is None or self.router_logits.shape[:2] == (n, len(self.layers)),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"RoutingBatch arrays disagree in shape: {', '.join(bad)}")
        object.__setattr__(self, "offsets", np.concatenate([[0], np.cumsum(self.seq_lengths)]).astype(np.int64))

    @property
    def n_sequences(self) -> int:
        return len(self.seq_lengths)

    @property
    def n_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def nbytes(self) -> int:
        """Bytes its arrays hold (the token pieces' strings apart)."""
        arrays = (self.token_ids, self.special, self.generated, self.expert_ids)
        optional = (self.expert_weights, self.router_probs, self.router_logits)
        return sum(a.nbytes for a in arrays) + sum(a.nbytes for a in optional if a is not None)


@dataclass(frozen=True, kw_only=True)
class TaskScore:
    """One score of an evaluation: a task, a language, a variant (unsteered, a plan, a sweep point)
    and a metric, over `n` items (a row of `eval_results`)."""

    task: str
    lang: str
    variant: str
    metric: str
    value: float
    n: int
    plan: str | None = None  # the variant's steering plan as JSON; None when unsteered


@dataclass(frozen=True, kw_only=True)
class GeneratedAnswer:
    """What the model wrote for one item in one language and variant (a row of `generations`)."""

    variant: str
    item_id: str
    lang: str
    prompt: str
    output: str
