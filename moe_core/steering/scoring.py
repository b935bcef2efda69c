"""The routers' own scoring, once per rule (not per family), run again on steered logits.

Steering changes router logits; the experts a token then visits, and their weights, must come
from the model's own rule applied to those logits. Each function below restates one rule of
transformers 5.23 operation for operation, so that on unmodified logits it returns the router's
own (weights, ids) bit for bit (tests/test_steering.py checks this for every family). The rule
is chosen declaratively from the family adapter's scoring formula (`MoEAdapter.scoring`).

Two additions keep the interventions meaningful under every rule, and change nothing when no
logit is steered: a logit of -inf (ablation) is never selected, even where a correction bias or
a zero probability would otherwise tie with it; and `forced` experts (hard steering) win the
group and top-k selection: one float32 step above a token's best logit can round away in the
softmax (or lose to a correction bias), and a tie must not keep a forced expert out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from moe_core.adapters import MoEAdapter
from moe_core.errors import ModelError

SOFTMAX_TOPK = "softmax->topk"
SOFTMAX_GROUP_TOPK = "softmax->group_topk"
SIGMOID_BIAS_GROUP_TOPK = "sigmoid+bias->group_topk"
TOPK_SOFTMAX = "topk->softmax"
SPARSEMIXER = "sparsemixer"
RULES = (SOFTMAX_TOPK, SOFTMAX_GROUP_TOPK, SIGMOID_BIAS_GROUP_TOPK, TOPK_SOFTMAX, SPARSEMIXER)


@dataclass(frozen=True, kw_only=True)
class RoutingRule:
    """One family's scoring with its numbers from the config (the correction bias lives on each router)."""

    name: str
    top_k: int
    renorm: bool = False
    scale: float = 1.0
    n_group: int = 1
    topk_group: int = 1
    jitter_eps: float = 0.0


def rule_for(adapter: MoEAdapter, config: Any) -> RoutingRule:
    """The rule the adapter's scoring formula names (e.g. `sigmoid+bias->group_topk->renorm*2.5`)."""
    formula = adapter.scoring(config).split("*")[0]
    name = formula.removesuffix("->renorm")
    if name not in RULES:
        raise ModelError(
            f"cannot steer {adapter.family}: its routing rule is {formula!r}, which Polyroute cannot re-run on "
            f"steered logits; steerable rules: {', '.join(RULES)} (Qwen-MoE, OLMoE, Mixtral, PhiMoE, DeepSeek, "
            "GLM-4-MoE, dots1, GPT-OSS, Granite-MoE)"
        )
    scale = float(getattr(config, adapter.scale_key, None) or 1.0) if adapter.scale_key else 1.0
    return RoutingRule(
        name=name,
        top_k=adapter.top_k(config),
        renorm=formula.endswith("->renorm"),
        scale=scale,
        n_group=int(getattr(config, "n_group", None) or 1),
        topk_group=int(getattr(config, "topk_group", None) or 1),
        jitter_eps=float(getattr(config, "router_jitter_noise", 0.0) or 0.0),
    )


def score(
    rule: RoutingRule,
    logits: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    forced: torch.Tensor | None = None,
    excluded: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights [T, k] float32, ids [T, k]) of float32 logits [T, E] under `rule`.

    `bias` [E] is the router's `e_score_correction_bias` (correction-bias rule only); `forced` [E]
    marks hard-steered experts, `excluded` [E] ablated ones (their logits are -inf).
    """
    if rule.name == SOFTMAX_TOPK:
        return _softmax_topk(rule, logits, excluded, forced)
    if rule.name == SOFTMAX_GROUP_TOPK:
        return _softmax_group_topk(rule, logits, excluded, forced)
    if rule.name == SIGMOID_BIAS_GROUP_TOPK:
        if bias is None:
            raise ModelError("the correction-bias rule needs the router's e_score_correction_bias")
        return _sigmoid_bias_group_topk(rule, logits, bias, excluded, forced)
    if rule.name == TOPK_SOFTMAX:
        ids = torch.topk(_lifted(logits, forced), rule.top_k, dim=-1)[1]
        values = logits.gather(1, ids)
        return torch.softmax(values, dim=-1, dtype=values.dtype), ids
    if rule.name == SPARSEMIXER:
        return _sparsemixer(rule, logits)
    raise ModelError(f"unknown routing rule {rule.name!r}")


def _lifted(scores: torch.Tensor, forced: torch.Tensor | None) -> torch.Tensor:
    """Selection scores with `forced` experts above every other, keeping their order among themselves."""
    if forced is None:
        return scores
    finite = scores.masked_fill(~torch.isfinite(scores), 0.0)
    lift = finite.amax(dim=-1, keepdim=True) - finite.amin(dim=-1, keepdim=True) + 1.0
    return torch.where(forced, scores + lift, scores)


def _softmax_topk(
    rule: RoutingRule, logits: torch.Tensor, excluded: torch.Tensor | None, forced: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2/3-MoE, OLMoE, Mixtral (always renormalised), DeepSeek-V2 greedy (scaled)."""
    probs = torch.softmax(logits, dim=-1, dtype=torch.float)
    if excluded is not None:
        # A probability that underflowed to 0 must not tie with an ablated expert's 0.
        probs = probs.masked_fill(excluded, float("-inf"))
    ids = torch.topk(_lifted(probs, forced), rule.top_k, dim=-1)[1]
    values = probs.gather(1, ids)
    if rule.renorm:
        values = values / values.sum(dim=-1, keepdim=True)
    return (values * rule.scale if rule.scale != 1.0 else values), ids


def _group_mask(group_scores: torch.Tensor, rule: RoutingRule, n_experts: int) -> torch.Tensor:
    """[T, E] True for the experts of each token's `topk_group` best groups."""
    group_idx = torch.topk(group_scores, k=rule.topk_group, dim=-1, sorted=False)[1]
    group_mask = torch.zeros_like(group_scores)
    group_mask.scatter_(1, group_idx, 1)
    per_group = n_experts // rule.n_group
    return group_mask.unsqueeze(-1).expand(-1, rule.n_group, per_group).reshape(-1, n_experts).bool()


def _softmax_group_topk(
    rule: RoutingRule, logits: torch.Tensor, excluded: torch.Tensor | None, forced: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeek-V2 `group_limited_greedy`: groups ranked by their best probability, top-k inside them."""
    n_experts = logits.shape[-1]
    scores = logits.softmax(dim=-1, dtype=torch.float32)
    choice = _lifted(scores, forced)
    group_scores = choice.view(-1, rule.n_group, n_experts // rule.n_group).max(dim=-1).values
    in_groups = _group_mask(group_scores, rule, n_experts)
    scores = scores.masked_fill(~in_groups, 0.0)
    choice = choice.masked_fill(~in_groups, 0.0)
    if excluded is not None:
        scores = scores.masked_fill(excluded, float("-inf"))
        choice = choice.masked_fill(excluded, float("-inf"))
    ids = torch.topk(choice, k=rule.top_k, dim=-1, sorted=False)[1]
    return scores.gather(1, ids) * rule.scale, ids


def _sigmoid_bias_group_topk(
    rule: RoutingRule,
    logits: torch.Tensor,
    bias: torch.Tensor,
    excluded: torch.Tensor | None,
    forced: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeek-V3, GLM-4-MoE, dots1: the biased sigmoid picks groups (sum of their top 2) and experts;
    the unbiased sigmoid weighs them, renormalised on request, times the routed scaling factor."""
    n_experts = logits.shape[-1]
    scores = logits.sigmoid()
    choice = scores + bias
    choice = _lifted(choice, forced)
    if excluded is not None:
        # sigmoid(-inf) = 0, but 0 + bias could still be chosen: an ablated expert must never be.
        choice = choice.masked_fill(excluded, float("-inf"))
    group_scores = choice.view(-1, rule.n_group, n_experts // rule.n_group).topk(2, dim=-1)[0].sum(dim=-1)
    choice = choice.masked_fill(~_group_mask(group_scores, rule, n_experts), float("-inf"))
    ids = torch.topk(choice, k=rule.top_k, dim=-1, sorted=False)[1]
    weights = scores.gather(1, ids)
    if rule.renorm:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return weights * rule.scale, ids


def _sparsemixer(rule: RoutingRule, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PhiMoE at inference: the best expert, then the best of the rest; each weighted by a softmax
    over the experts within relative distance 2 * jitter_eps of it (always two experts)."""

    def pick(candidates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        threshold, index = candidates.max(dim=-1, keepdim=True)
        factor = logits.abs().clamp(min=threshold)
        far = ((threshold - logits) / factor) > (2 * rule.jitter_eps)
        gates = torch.softmax(candidates.masked_fill(far, float("-inf")), dim=-1)
        return gates.gather(dim=-1, index=index), index

    first_weight, first = pick(logits)
    second_weight, second = pick(torch.scatter(logits, -1, first, float("-inf")))
    return torch.cat((first_weight, second_weight), dim=-1), torch.cat((first, second), dim=-1)
