"""Synthetic routing with a planted structure: a backend that routes without a model.

Tests check that the analyses find what was planted, and benchmarks fill stores of realistic size
(48 layers, top-8, 130k tokens) in seconds. The synthetic backend goes through the same pipeline
and writer as a real one: its "texts" are `synthetic_corpus` rows that name the language, the item
and the token count, and it routes each token with router logits

    z_t^(l) = bias[L, l] + item[i, l] + noise * N(0, 1),
    bias[L, l] = base[l] + depth(l) * (family[F(L), l] + language[L, l]) + planted exclusive experts,

where depth(l) is U-shaped (strong at both ends, weak in the middle), so languages diverge most in
the first and last layers, related languages route alike, each planted exclusive expert is chosen
by its language's tokens and never by the others', and planted task experts by every token of the
task items (the last `task_items`) in every language.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from moe_core.backends.base import Backend, GenerationParams, Generations
from moe_core.records import SOFT_SOFTMAX, ModelInfo, RoutingBatch
from moe_core.steering.plan import SteeringPlan

PLANTED_BIAS = 12.0  # logit offset that makes a planted expert win (or lose) every token


@dataclass(frozen=True, kw_only=True)
class PlantedRouting:
    """What to plant. `families[i]` is the family of `langs[i]`; `exclusive` maps a language to
    (layer index, expert) pairs that only it uses."""

    langs: tuple[str, ...]
    families: tuple[str, ...]
    n_layers: int = 8
    n_experts: int = 16
    top_k: int = 2
    n_items: int = 20
    tokens_per_seq: tuple[int, int] = (8, 24)  # inclusive range of sequence lengths
    family_strength: float = 2.0
    language_strength: float = 0.7
    item_strength: float = 0.5
    noise: float = 1.0
    exclusive: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    task_items: int = 0  # the last items are "task" text: in every language they route to task_experts
    task_experts: tuple[tuple[int, int], ...] = ()  # (layer, expert) pairs
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.families) != len(self.langs):
            raise ValueError("PlantedRouting needs one family per language")


def synthetic_corpus(plan: PlantedRouting) -> list[tuple[str, str, str]]:
    """(item_id, lang, text) rows, every item in every language, with seeded lengths per row."""
    rng = np.random.default_rng(plan.seed)
    low, high = plan.tokens_per_seq
    lengths = rng.integers(low, high + 1, size=(plan.n_items, len(plan.langs)))
    return [
        (f"item{item:05d}", lang, f"{lang}|item{item:05d}|{lengths[item, index]}")
        for item in range(plan.n_items)
        for index, lang in enumerate(plan.langs)
    ]


class SyntheticBackend(Backend):
    """Routes `synthetic_corpus` texts with the planted logits; a softmax -> top-k -> renorm router."""

    name = "synthetic"
    capture_name = "synthetic"

    def __init__(self, plan: PlantedRouting) -> None:
        self.plan = plan
        rng = np.random.default_rng(plan.seed + 1)
        layers, experts = plan.n_layers, plan.n_experts
        depth = np.linspace(-1.0, 1.0, layers) ** 2  # 1 at both ends, 0 in the middle
        family_names = sorted(set(plan.families))
        family_vectors = rng.normal(size=(len(family_names), layers, experts))
        language_vectors = rng.normal(size=(len(plan.langs), layers, experts))
        base = rng.normal(size=(layers, experts))
        bias = np.stack(
            [
                base
                + (0.15 + depth)[:, None]
                * (
                    plan.family_strength * family_vectors[family_names.index(family)]
                    + plan.language_strength * language_vectors[index]
                )
                for index, family in enumerate(plan.families)
            ]
        )
        for lang, planted in plan.exclusive.items():
            for layer, expert in planted:
                bias[:, layer, expert] -= PLANTED_BIAS
                bias[plan.langs.index(lang), layer, expert] += 2 * PLANTED_BIAS
        self._bias = bias.astype(np.float32)
        items = plan.item_strength * rng.normal(size=(plan.n_items, layers, experts))
        for layer, expert in plan.task_experts:
            items[plan.n_items - plan.task_items :, layer, expert] += PLANTED_BIAS
        self._item_vectors = items.astype(np.float32)

    def info(self) -> ModelInfo:
        plan = self.plan
        digest = hashlib.sha256(repr(plan).encode()).hexdigest()
        return ModelInfo(
            model_id=f"synthetic-{digest[:8]}",
            arch="SyntheticMoE",
            family="synthetic",
            source="moe_core.synthetic",
            n_layers=plan.n_layers,
            moe_layers=tuple(range(plan.n_layers)),
            n_experts=plan.n_experts,
            top_k=plan.top_k,
            n_shared_experts=0,
            scoring="softmax->topk->renorm",
            soft_rule=SOFT_SOFTMAX,
            weight_bound=1.0,
            config_hash=digest,
        )

    @property
    def max_tokens(self) -> int:
        return 1 << 20

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [int(text.rsplit("|", 1)[1]) for text in texts]

    def trace(
        self, texts: Sequence[str], *, save_logits: bool = False, plan: SteeringPlan | None = None
    ) -> RoutingBatch:
        self.refuse_plan(plan)  # planted routing has no router to steer
        planted = self.plan
        keys = [text.split("|") for text in texts]
        lengths = np.array([int(n) for _, _, n in keys])
        lang_rows = np.repeat([planted.langs.index(lang) for lang, _, _ in keys], lengths)
        item_rows = np.repeat([int(item.removeprefix("item")) for _, item, _ in keys], lengths)
        seed = int.from_bytes(hashlib.sha256("\n".join(texts).encode()).digest()[:8], "little")
        rng = np.random.default_rng(seed)  # the same texts always route the same way
        logits = self._bias[lang_rows] + self._item_vectors[item_rows]
        logits += planted.noise * rng.standard_normal(logits.shape, dtype=np.float32)
        probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        top = np.argpartition(-logits, planted.top_k - 1, axis=-1)[..., : planted.top_k]
        top_probs = np.take_along_axis(probs, top, axis=-1)
        order = np.argsort(-top_probs, axis=-1)
        expert_ids = np.take_along_axis(top, order, axis=-1).astype(np.int16)
        weights = np.take_along_axis(top_probs, order, axis=-1)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        n = int(offsets[-1])
        return RoutingBatch(
            layers=np.arange(planted.n_layers),
            seq_lengths=lengths,
            token_ids=np.zeros(n, np.int64),
            pieces=["·"] * n,
            special=np.zeros(n, bool),
            generated=np.zeros(n, bool),
            expert_ids=expert_ids,
            expert_weights=(weights / weights.sum(axis=-1, keepdims=True)).astype(np.float32),
            router_probs=(np.add.reduceat(probs, offsets[:-1], axis=0) / lengths[:, None, None]).astype(np.float32),
            router_logits=logits if save_logits else None,
        )

    def generate(
        self, prompts: Sequence[str], params: GenerationParams, plan: SteeringPlan | None = None
    ) -> Generations:
        raise NotImplementedError("the synthetic backend routes given texts; it cannot generate")
