"""The variants one evaluation runs: the unsteered baseline, plus the plan as given or every point
of a sweep over it (its strength lambda, or its layer band moved to a depth zone of the model).

A variant is (name, plan or None); the names are what `eval_results.variant` holds: unsteered,
plan, strength=0.25, window=middle. A window is a depth zone of the model (`moe_core.analysis.zones`)
or a band given by name, such as a published preset's
(`moe_core.steering.presets`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from moe_core.analysis.zones import ZONES, zone_layers
from moe_core.errors import PolyrouteError
from moe_core.steering.plan import PlanError, SteeringPlan

UNSTEERED, PLAN = "unsteered", "plan"
Variant = tuple[str, SteeringPlan | None]


@dataclass(frozen=True)
class Sweep:
    """`lambda=0,0.5` (values: floats) or `window=early,late` (values: zone names)."""

    kind: str  # "lambda" or "window"
    values: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.kind}={','.join(self.values)}"


def parse_sweep(text: str) -> Sweep:
    """Read `--sweep lambda=0,0.25,0.5,1` or `--sweep window=early,middle,late`."""
    kind, sep, listed = text.partition("=")
    values = tuple(value.strip() for value in listed.split(",") if value.strip())
    if not sep or kind.strip() not in ("lambda", "window") or not values:
        raise PolyrouteError(f"cannot read {{sweep}} {text!r}: write lambda=0,0.25,0.5,1 or window=early,middle,late")
    kind = kind.strip()
    if kind == "lambda":
        for value in values:
            try:
                float(value)
            except ValueError:
                raise PolyrouteError(f"{{sweep}} lambda: {value!r} is not a number") from None
    else:
        unknown = [value for value in values if value not in ZONES]
        if unknown:
            raise PolyrouteError(f"{{sweep}} window: {unknown[0]!r} is not a zone; use {', '.join(ZONES)}")
    if len(set(values)) != len(values):
        raise PolyrouteError(f"{{sweep}} {text!r} lists a value twice")
    return Sweep(kind, values)


def window_plan(
    plan: SteeringPlan,
    zone: str,
    *,
    n_layers: int,
    moe_layers: Sequence[int],
    windows: Mapping[str, tuple[int, int]] | None = None,
) -> SteeringPlan:
    """`plan` with its band moved to window `zone` (early, middle, late), keeping only the experts
    it lists for layers inside that window.

    The window is the MoE layers of that depth zone (`zones.zone_layers`, first to last of them),
    or, given `windows` (name -> (first, last) decoder layers, e.g. a published preset's
    `PresetWindow.band`), the band it names."""
    if windows is not None:
        if zone not in windows:
            raise PlanError(f"no {zone} window given: the windows are {', '.join(windows) or 'none'}")
        band = windows[zone]
    else:
        inside = zone_layers(moe_layers, n_layers, zone)
        if not inside:
            raise PlanError(f"the model's {n_layers} layers have no MoE layer in the {zone} zone: sweep other windows")
        band = (inside[0], inside[-1])
    kept = tuple(entry for entry in plan.experts if band[0] <= entry.layer <= band[1])
    if not kept:
        raise PlanError(
            f"the plan lists no expert in the {zone} window (layers {band[0]}-{band[1]}): it lists layers "
            f"{', '.join(map(str, plan.layers))}"
        )
    return dataclasses.replace(plan, band=band, experts=kept)


def build_variants(
    plan: SteeringPlan | None,
    sweep: Sweep | None,
    *,
    n_layers: int,
    moe_layers: Sequence[int],
    windows: Mapping[str, tuple[int, int]] | None = None,
) -> list[Variant]:
    """The baseline, then the plan (without a sweep) or one variant per sweep point. `windows` say
    where a window sweep moves the band (`window_plan`)."""
    if sweep is not None and plan is None:
        raise PolyrouteError(f"{{sweep}} {sweep} sweeps a plan: pass {{plan}} plan.json too")
    variants: list[Variant] = [(UNSTEERED, None)]
    if plan is None:
        return variants
    if sweep is None:
        return [*variants, (PLAN, plan)]
    if sweep.kind == "lambda":
        return variants + [
            (f"strength={float(value):g}", dataclasses.replace(plan, strength=float(value))) for value in sweep.values
        ]
    return variants + [
        (
            f"window={zone}",
            window_plan(plan, zone, n_layers=n_layers, moe_layers=moe_layers, windows=windows),
        )
        for zone in sweep.values
    ]
