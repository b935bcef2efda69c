"""What `polyroute serve` accepts: each request body checked field by field before any model work.

A body is a JSON object of known fields only. Texts are lists of strings that UTF-8 can carry (a
lone surrogate, legal in JSON's escapes, is not); numbers are finite and in range (JSON's NaN and
Infinity extensions are refused, and so are integers past 64 bits). Whatever is wrong becomes a
`BadRequest` with its HTTP status and a message that names the field and what it takes, so a
client's mistake is never a 500.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from moe_core.backends.base import GenerationParams
from moe_core.errors import PolyrouteError
from moe_core.steering.plan import SteeringPlan

MAX_SEED = (1 << 63) - 1  # what torch and the store keep as a seed


class BadRequest(Exception):
    """A request the server refuses: `status` and a message that says what to change."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one request may ask for; nonsense values are refused when the server starts."""

    max_request_bytes: int = 16 << 20
    max_texts: int = 4096
    max_new_tokens: int = 1024
    max_seconds: float = 600.0

    def __post_init__(self) -> None:
        for limit in fields(self):
            value = getattr(self, limit.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise PolyrouteError(f"the server limit {limit.name} must be a number above 0, not {value!r}")


@dataclass(frozen=True)
class TraceBody:
    batches: list[list[str]]
    save_logits: bool


@dataclass(frozen=True)
class GenerateBody:
    prompts: list[str]
    params: GenerationParams
    plan: SteeringPlan | None


def parse_body(body: bytes) -> dict[str, Any]:
    """The request's JSON object (400 when the bytes are no JSON a client should send)."""
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError, an over-long integer
        if isinstance(error, RecursionError):
            reason = "it is nested too deeply"
        elif "integer string conversion" in str(error):
            reason = "an integer has thousands of digits; send numbers that fit in 64 bits"
        else:
            reason = str(error)
        raise BadRequest(400, f"the request body is not JSON this server reads: {reason}") from None
    if not isinstance(data, dict):
        raise BadRequest(422, "the request body must be a JSON object")
    return data


def count_body(data: Mapping[str, Any], limits: Limits) -> list[str]:
    """POST /count_tokens: {"texts": [...]}."""
    _known(data, "the request", {"texts"})
    texts = texts_of(data.get("texts"), "texts")
    _count_limit(len(texts), limits)
    return texts


def trace_body(data: Mapping[str, Any], limits: Limits) -> TraceBody:
    """POST /trace: {"batches": [[text, ...], ...], "save_logits": bool}."""
    _known(data, "the request", {"batches", "save_logits"})
    batches = data.get("batches")
    if not isinstance(batches, list) or not batches:
        raise BadRequest(422, "batches must be a non-empty list of lists of texts")
    checked = [texts_of(batch, f"batches[{i}]") for i, batch in enumerate(batches)]
    _count_limit(sum(map(len, checked)), limits)
    save_logits = data.get("save_logits", False)
    if not isinstance(save_logits, bool):
        raise BadRequest(422, "save_logits must be true or false")
    return TraceBody(checked, save_logits)


def generate_body(data: Mapping[str, Any], limits: Limits) -> GenerateBody:
    """POST /generate: {"prompts": [...], "params": {...}, "plan": {...} | null}."""
    _known(data, "the request", {"prompts", "params", "plan"})
    prompts = texts_of(data.get("prompts"), "prompts")
    _count_limit(len(prompts), limits)
    params = _params(data.get("params", {}), limits)
    raw_plan = data.get("plan")
    plan = None if raw_plan is None else SteeringPlan.from_dict(raw_plan)  # a PlanError (422) says what is wrong
    if plan is not None:
        numbers = [plan.strength, *(c for entry in plan.experts for c in entry.coefficients or ())]
        if not all(math.isfinite(number) for number in numbers):
            raise BadRequest(422, "the plan's strength and coefficients must be finite numbers")
    return GenerateBody(prompts, params, plan)


def texts_of(value: Any, name: str) -> list[str]:
    """A non-empty list of strings that UTF-8 can encode."""
    if not isinstance(value, list) or not all(isinstance(text, str) for text in value):
        raise BadRequest(422, f"{name} must be a list of strings")
    if not value:
        raise BadRequest(422, f"{name} is empty: send at least one text")
    for index, text in enumerate(value):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise BadRequest(
                422,
                f"{name}[{index}] is not valid Unicode (a lone surrogate {text[error.start]!r} at character "
                f"{error.start}): send text that UTF-8 can encode",
            ) from None
    return value


def _params(raw: Any, limits: Limits) -> GenerationParams:
    names = [field.name for field in fields(GenerationParams)]
    if not isinstance(raw, dict):
        raise BadRequest(422, "params must be a JSON object of generation settings")
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise BadRequest(422, f"unknown generation setting {unknown[0]!r}: use {', '.join(names)}")
    defaults = GenerationParams()
    for name, value in raw.items():
        # JSON numbers: an int is a fine float, but a bool is never a number here.
        wanted = type(getattr(defaults, name))
        ok = isinstance(value, wanted) or (wanted is float and isinstance(value, int))
        if not ok or (wanted is not bool and isinstance(value, bool)):
            raise BadRequest(422, f"generation setting {name} must be a {wanted.__name__}, not {value!r}")
    params = GenerationParams(**raw)
    if not 1 <= params.max_new_tokens <= limits.max_new_tokens:
        raise BadRequest(
            422, f"max_new_tokens must be an integer from 1 to this server's limit {limits.max_new_tokens}"
        )
    if not (math.isfinite(params.temperature) and params.temperature > 0):
        raise BadRequest(
            422,
            f"temperature must be a finite number above 0, not {params.temperature} (for greedy decoding send "
            "do_sample false)",
        )
    if not (math.isfinite(params.top_p) and 0 < params.top_p <= 1):
        raise BadRequest(422, f"top_p must lie in (0, 1], not {params.top_p}")
    if not 0 <= params.seed <= MAX_SEED:
        raise BadRequest(422, f"seed must be an integer from 0 to 2**63-1, not {params.seed}")
    return params


def _known(data: Mapping[str, Any], name: str, allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise BadRequest(422, f"{name} has an unknown field {unknown[0]!r}: send only {', '.join(sorted(allowed))}")


def _count_limit(n: int, limits: Limits) -> None:
    if n > limits.max_texts:
        raise BadRequest(413, f"{n} texts in one request; this server takes at most {limits.max_texts}")


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number: send finite numbers")
