"""The steering plan: which experts of which layers to push (or silence), how hard, and why.

A `SteeringPlan` is a frozen value saved with every steered run as JSON (`runs.plan`). It checks
itself when built (a known method, a non-empty band, distinct experts, one coefficient per
expert) and against a model with `check_against` (layers and experts the model really has).
The formulas are those of docs/methods.md, "Steering and interventions".
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moe_core.errors import PolyrouteError

SOFT, HARD, ADAPTIVE, ABLATE = "soft", "hard", "adaptive", "ablate"
METHODS = (SOFT, HARD, ADAPTIVE, ABLATE)


class PlanError(PolyrouteError):
    """A steering plan that is malformed or names layers or experts the model does not have."""


@dataclass(frozen=True, kw_only=True)
class LayerExperts:
    """The experts steered in one decoder layer (the model's own layer index).

    `coefficients[i]` is c_e of `experts[i]` for adaptive steering (for example the expert's share
    in the source language); without them every c_e is 1. Other methods do not use them.
    """

    layer: int
    experts: tuple[int, ...]
    coefficients: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.layer < 0:
            raise PlanError(f"layer {self.layer} is negative: layers are numbered from 0")
        if not self.experts:
            raise PlanError(f"layer {self.layer} lists no expert: list at least one, or leave the layer out")
        if len(set(self.experts)) != len(self.experts):
            raise PlanError(f"layer {self.layer} lists an expert twice: {list(self.experts)}")
        if min(self.experts) < 0:
            raise PlanError(f"layer {self.layer} lists a negative expert id: {list(self.experts)}")
        if self.coefficients is not None:
            if len(self.coefficients) != len(self.experts):
                raise PlanError(
                    f"layer {self.layer} has {len(self.experts)} experts but {len(self.coefficients)} coefficients: "
                    "give one coefficient per expert, or none"
                )
            if not all(math.isfinite(c) for c in self.coefficients):
                raise PlanError(f"layer {self.layer} has a coefficient that is not a finite number")


@dataclass(frozen=True, kw_only=True)
class SteeringPlan:
    """Steer `experts` in the decoder layers `band[0]..band[1]` (inclusive) with `method`.

    soft: z_e + strength * std(z); hard: max_j z_j + |eps| (eps ~ N(0, 1e-6), seeded by `seed`);
    adaptive: z_e + strength * c_e * |z_e|; ablate: -inf. `strength` is docs/methods.md's lambda (unused
    by hard and ablate). Experts listed for layers outside the band are kept but not applied, so one
    identification can be steered over different bands. `source` says where the experts came from.
    """

    method: str
    band: tuple[int, int]
    experts: tuple[LayerExperts, ...]
    strength: float = 0.0
    seed: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise PlanError(f"unknown steering method {self.method!r}: use one of {', '.join(METHODS)}")
        first, last = self.band
        if first < 0 or last < first:
            raise PlanError(f"the layer band {first}-{last} is empty: give first <= last, both >= 0")
        if not math.isfinite(self.strength):
            raise PlanError(f"strength (lambda) must be a finite number, not {self.strength}")
        if not self.experts:
            raise PlanError("the plan lists no expert to steer")
        if len(set(self.layers)) != len(self.layers):
            raise PlanError(f"the plan lists a layer more than once: {sorted(self.layers)}")

    @property
    def layers(self) -> tuple[int, ...]:
        """Every layer the plan lists experts for, in or out of the band."""
        return tuple(entry.layer for entry in self.experts)

    def steered(self) -> tuple[LayerExperts, ...]:
        """The entries that apply: those whose layer lies in the band."""
        first, last = self.band
        return tuple(entry for entry in self.experts if first <= entry.layer <= last)

    def check_against(self, *, n_layers: int, moe_layers: Sequence[int], n_experts: int, top_k: int) -> None:
        """Refuse a plan that names a layer or expert the model does not have, or steers nothing."""
        moe = sorted(moe_layers)
        moe_range = _ranges(moe)
        first, last = self.band
        if last >= n_layers:
            raise PlanError(
                f"the layer band {first}-{last} ends past the model's last layer: layers are 0-{n_layers - 1}"
            )
        for entry in self.experts:
            if entry.layer >= n_layers:
                raise PlanError(f"layer {entry.layer} does not exist: the model has layers 0-{n_layers - 1}")
            if entry.layer not in moe:
                raise PlanError(f"layer {entry.layer} is a dense layer with no router: the MoE layers are {moe_range}")
            unknown = [e for e in entry.experts if e >= n_experts]
            if unknown:
                raise PlanError(
                    f"expert {unknown[0]} of layer {entry.layer} does not exist: experts are 0-{n_experts - 1}"
                )
            if self.method == ABLATE and n_experts - len(entry.experts) < top_k:
                raise PlanError(
                    f"ablating {len(entry.experts)} of {n_experts} experts in layer {entry.layer} leaves fewer "
                    f"than the {top_k} every token must choose: ablate at most {n_experts - top_k}"
                )
        if not any(first <= layer <= last for layer in moe):
            raise PlanError(f"the layer band {first}-{last} holds no MoE layer: the MoE layers are {moe_range}")
        if not self.steered():
            raise PlanError(
                f"the plan lists no expert in the band {first}-{last} (it lists layers "
                f"{_ranges(sorted(self.layers))}): widen the band or list experts inside it"
            )

    # JSON -------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "strength": self.strength,
            "band": list(self.band),
            "seed": self.seed,
            "source": self.source,
            "experts": [
                {"layer": e.layer, "experts": list(e.experts)}
                | ({} if e.coefficients is None else {"coefficients": list(e.coefficients)})
                for e in self.experts
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> SteeringPlan:
        try:
            entries = tuple(
                LayerExperts(
                    layer=_int(e["layer"]),
                    experts=tuple(_int(x) for x in e["experts"]),
                    coefficients=None if e.get("coefficients") is None else tuple(map(float, e["coefficients"])),
                )
                for e in data["experts"]
            )
            first, last = data["band"]
            return cls(
                method=str(data["method"]),
                band=(_int(first), _int(last)),
                experts=entries,
                strength=float(data.get("strength", 0.0)),
                seed=_int(data.get("seed", 0)),
                source=str(data.get("source", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise PlanError(
                f"not a steering plan ({type(error).__name__}: {error}): expected "
                '{"method", "band": [first, last], "experts": [{"layer", "experts", "coefficients"?}], '
                '"strength", "seed", "source"}'
            ) from error

    @classmethod
    def from_json(cls, text: str) -> SteeringPlan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise PlanError(f"the steering plan is not valid JSON: {error}") from error
        return cls.from_dict(data)

    def save(self, path: str | Path) -> Path:
        target = Path(path)
        target.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return target

    @classmethod
    def load(cls, path: str | Path) -> SteeringPlan:
        source = Path(path)
        if not source.is_file():
            raise PlanError(f"steering plan {source} does not exist")
        return cls.from_json(source.read_text(encoding="utf-8"))


def layers_text(band: Sequence[int]) -> str:
    """`layer 2` or `layers 2-5`: a band of layers (first, last) in words, one layer said as one."""
    first, last = band[0], band[-1]
    return f"layer {first}" if first == last else f"layers {first}-{last}"


def _int(value: Any) -> int:
    # JSON has no integer type of its own: refuse 1.5 or true where a layer or expert id belongs.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _ranges(values: Sequence[int]) -> str:
    """`[1, 2, 3, 7]` -> "1-3, 7": how a list of layers reads in an error message."""
    parts: list[str] = []
    for value in values:
        if parts and value == int(parts[-1].split("-")[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{value}"
        else:
            parts.append(str(value))
    return ", ".join(parts) or "none"
