"""Independent numpy re-implementations of each family's routing, written from the papers and
the transformers modeling files, used to check what Polyroute stores against the model's own
router logits (`output_router_logits=True`). Float64 throughout; one token at a time for clarity.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x[np.isfinite(x)].max())
    return e / e.sum()


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def topk(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, kind="stable")[:k]


def softmax_topk(z: np.ndarray, k: int, renorm: bool) -> tuple[np.ndarray, np.ndarray]:
    p = softmax(z)
    ids = topk(p, k)
    w = p[ids]
    return ids, w / w.sum() if renorm else w


def topk_softmax(z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    ids = topk(z, k)
    return ids, softmax(z[ids])


def softmax_group_topk(z: np.ndarray, k: int, n_group: int, topk_group: int, scale: float):
    """DeepSeek-V2 `group_limited_greedy`: best groups by their max probability, then top-k inside."""
    p = softmax(z)
    groups = p.reshape(n_group, -1)
    keep = topk(groups.max(axis=1), topk_group)
    masked = np.zeros_like(groups)
    masked[keep] = groups[keep]
    ids = topk(masked.reshape(-1), k)
    return ids, p[ids] * scale


def sigmoid_bias_group_topk(z, k, bias, n_group, topk_group, renorm, scale):
    """DeepSeek-V3: the bias picks experts and groups (sum of each group's top-2), sigmoid scores weigh them."""
    s = sigmoid(z)
    choice = (s + bias).reshape(n_group, -1)
    keep = topk(np.sort(choice, axis=1)[:, -2:].sum(axis=1), topk_group)
    masked = np.full_like(choice, -np.inf)
    masked[keep] = choice[keep]
    ids = topk(masked.reshape(-1), k)
    w = s[ids]
    if renorm:
        w = w / (w.sum() + 1e-20)
    return ids, w * scale


def sparsemixer(z: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """PhiMoE at inference: the best expert, then the best of the rest, each weighted by a softmax over
    the experts within a relative distance 2*eps of it."""

    def pick(candidates: np.ndarray) -> tuple[int, float]:
        best = int(np.argmax(candidates))
        threshold = candidates[best]
        factor = np.maximum(np.abs(z), threshold)
        far = (threshold - z) / factor > 2 * eps
        return best, float(softmax(np.where(far, -np.inf, candidates))[best])

    first, w1 = pick(z)
    rest = z.copy()
    rest[first] = -np.inf
    second, w2 = pick(rest)
    return np.array([first, second]), np.array([w1, w2])


def reference_route(family: str, z: np.ndarray, config: dict[str, Any], bias: np.ndarray | None):
    """(ids, weights) of one token's logits `z` [E] under `family`'s rule and `config`."""
    k = config["num_experts_per_tok"]
    if family in ("qwen2_moe", "qwen3_moe", "olmoe", "flex_olmo"):
        return softmax_topk(z, k, bool(config.get("norm_topk_prob")))
    if family == "mixtral":
        return softmax_topk(z, k, True)
    if family in ("gpt_oss", "granitemoe"):
        return topk_softmax(z, k)
    if family == "phimoe":
        return sparsemixer(z, config["router_jitter_noise"])
    if family == "deepseek_v2":
        assert config["topk_method"] == "group_limited_greedy"
        return softmax_group_topk(z, k, config["n_group"], config["topk_group"], config["routed_scaling_factor"])
    if family in ("deepseek_v3", "glm4_moe", "dots1"):
        assert bias is not None
        return sigmoid_bias_group_topk(
            z, k, bias, config["n_group"], config["topk_group"], bool(config["norm_topk_prob"]),
            config["routed_scaling_factor"],
        )  # fmt: skip
    raise KeyError(family)


def reference_soft(family: str, z: np.ndarray) -> np.ndarray:
    """Per-token soft distribution [T, E]: softmax, or sigmoid scores normalised to sum 1 (docs/methods.md)."""
    if family in ("deepseek_v3", "glm4_moe", "dots1"):
        s = sigmoid(z)
        return s / s.sum(axis=-1, keepdims=True)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def expected_moe_layers(config: dict[str, Any]) -> list[int]:
    first_dense = config.get("first_k_dense_replace") or 0
    return list(range(first_dense, config["num_hidden_layers"]))
