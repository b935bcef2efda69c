"""The published settings of 2601.14050 as presets, scaled to a model of any depth
(docs/methods.md, "Steering and interventions", "Presets").

The authors' runs (conctsai/Multilingualism-in-Mixture-of-Experts-LLMs, `scripts/`) used
Qwen3-30B-A3B: 48 decoder layers, every one an MoE layer, so its layer numbers are also MoE-layer
positions. Their layer ranges are inclusive (`range(start_layer, end_layer + 1)`).

- "2601.14050" (`plan shared`): routing-guided steering toward the experts English and Chinese
  share (k = 20, thr = 0.7), adaptive, layers 10-39, lambda 0.022 with English as the source of
  the coefficients, 0.034 with Chinese (`scripts/run_steer_polymath.sh`).
- "2601.14050-mgsm", "2601.14050-flores" (`plan exclusive`): a language's exclusive experts
  (k = 15, thr = 0.4) ablated in layers 0-4, 22-26 or 43-47 (`scripts/run_intervention_mgsm.sh`,
  `run_intervention_flores.sh`).
- "2601.14050-xquad" (`plan exclusive`): k = 32, thr = 0.5, layers 0-9, 19-28 or 38-47
  (`scripts/run_intervention_xquad.sh`).

`preset_for(name, moe_layers=...)` scales the windows to a model with Y MoE layers: each
window's first and last layer p becomes position round(p (Y - 1) / 47) among the model's MoE
layers (halves rounded up), so the first layer stays first and the last stays last; a window stays
non-empty and inside the model because the map is monotone and maps [0, 47] onto [0, Y - 1].
A 48-layer model gets exactly the published windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from moe_core.steering.plan import ABLATE, ADAPTIVE, PlanError

PUBLISHED_LAYERS = 48  # Qwen3-30B-A3B: 48 decoder layers, all MoE
PresetKind = Literal["shared", "exclusive"]
EXCLUSIVE_WINDOWS = ("early", "middle", "late")  # the names `plan exclusive` gives its three windows
SHARED_WINDOW = "band"

# The languages of the authors' routing folder (`scripts/run_routing.sh`, Belebele), whose shares the
# exclusive experts were found among; the XQuAD script adds its own languages to the same folder.
_BELEBELE_POOL = (
    "arb_Arab",
    "ben_Beng",
    "zho_Hans",
    "deu_Latn",
    "eng_Latn",
    "spa_Latn",
    "fra_Latn",
    "jpn_Jpan",
    "swh_Latn",
    "kor_Hang",
)


@dataclass(frozen=True, kw_only=True)
class PublishedPreset:
    """One published run as its authors' scripts set it, on the 48-layer Qwen3-30B-A3B."""

    name: str
    kind: PresetKind
    method: str  # ADAPTIVE (shared steering) or ABLATE (exclusive experts)
    k: int  # each language's k most frequent experts per layer enter the shares
    thr: float  # shared: every share < thr; exclusive: the language's share > thr
    window_names: tuple[str, ...]
    windows: tuple[tuple[int, int], ...]  # (first, last) layers of the 48, inclusive, one per name
    strengths: tuple[tuple[str, float], ...]  # lambda by source language (shared steering only)
    pool: tuple[str, ...]  # the languages whose shares the published run compared (shared: source first)
    task: str  # what the published run evaluated
    reference: str  # the authors' script that ran it


PRESETS: dict[str, PublishedPreset] = {
    preset.name: preset
    for preset in (
        PublishedPreset(
            name="2601.14050",
            kind="shared",
            method=ADAPTIVE,
            k=20,
            thr=0.7,
            window_names=(SHARED_WINDOW,),
            windows=((10, 39),),
            strengths=(("eng_Latn", 0.022), ("zho_Hans", 0.034)),
            pool=("eng_Latn", "zho_Hans"),
            task="polymath (experts from MGSM routing)",
            reference="scripts/run_steer_polymath.sh",
        ),
        # The three ablation runs differ only in their task, k, thr, windows and pool.
        *(
            PublishedPreset(
                name=f"2601.14050-{task}",
                kind="exclusive",
                method=ABLATE,
                k=k,
                thr=thr,
                window_names=EXCLUSIVE_WINDOWS,
                windows=windows,
                strengths=(),
                pool=pool,
                task=task,
                reference=f"scripts/run_intervention_{task}.sh",
            )
            for task, k, thr, windows, pool in (
                ("mgsm", 15, 0.4, ((0, 4), (22, 26), (43, 47)), _BELEBELE_POOL),
                ("flores", 15, 0.4, ((0, 4), (22, 26), (43, 47)), _BELEBELE_POOL),
                ("xquad", 32, 0.5, ((0, 9), (19, 28), (38, 47)), (*_BELEBELE_POOL, "ell_Grek", "rus_Cyrl", "tur_Latn")),
            )
        ),
    )
}


@dataclass(frozen=True, kw_only=True)
class PresetWindow:
    """A published window on one model: MoE-layer positions and the decoder layers they are."""

    name: str
    positions: tuple[int, int]  # first and last position among the model's MoE layers (0 .. Y-1), inclusive
    layers: tuple[int, ...]  # decoder index of every MoE layer in the window

    @property
    def band(self) -> tuple[int, int]:
        """(first, last) decoder layer: a `SteeringPlan` band."""
        return self.layers[0], self.layers[-1]


@dataclass(frozen=True, kw_only=True)
class Preset:
    """A published preset scaled to one model (`preset_for`)."""

    name: str
    kind: PresetKind
    method: str
    k: int
    thr: float
    strengths: tuple[tuple[str, float], ...]  # lambda by source language, as published
    pool: tuple[str, ...]
    windows: tuple[PresetWindow, ...]
    n_moe_layers: int  # Y, the model's MoE layers the windows were scaled to

    def strength_for(self, source: str) -> float:
        """The published lambda for coefficients from `source` (a FLORES-200 code)."""
        published = dict(self.strengths)
        if source not in published:
            if not published:
                raise PlanError(f"preset {self.name} ablates ({self.kind} experts): it has no lambda")
            raise PlanError(
                f"preset {self.name} published lambda only for source languages "
                f"{', '.join(f'{lang} ({value:g})' for lang, value in self.strengths)}, not {source}: "
                "give {strength} yourself"
            )
        return published[source]

    def window(self, name: str) -> PresetWindow:
        for window in self.windows:
            if window.name == name:
                return window
        raise PlanError(
            f"preset {self.name} has no window {name!r}: its windows are {', '.join(w.name for w in self.windows)}"
        )


def preset_names(kind: PresetKind | None = None) -> tuple[str, ...]:
    """The presets' names, of one kind (shared, exclusive) or all."""
    return tuple(name for name, preset in PRESETS.items() if kind is None or preset.kind == kind)


def scale_position(layer: int, n_moe_layers: int) -> int:
    """A layer of the published 48 as a position among Y MoE layers: round(layer (Y - 1) / 47),
    halves rounded up, in exact integer arithmetic."""
    if not 0 <= layer < PUBLISHED_LAYERS:
        raise ValueError(f"published layers are 0-{PUBLISHED_LAYERS - 1}, not {layer}")
    if n_moe_layers < 1:
        raise ValueError("the model has no MoE layer")
    span = PUBLISHED_LAYERS - 1
    return (2 * layer * (n_moe_layers - 1) + span) // (2 * span)


def preset_for(name: str, *, moe_layers: Sequence[int]) -> Preset:
    """The preset `name` scaled to a model whose MoE layers have the decoder indices `moe_layers`.

    Each window's first and last layer p of the published 48 becomes position
    round(p (Y - 1) / 47) (halves up) among the Y MoE layers in order; the window holds the MoE
    layers from the first position to the last, both included.
    """
    if name not in PRESETS:
        raise PlanError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
    published = PRESETS[name]
    layers = sorted(set(moe_layers))
    if not layers:
        raise PlanError(f"preset {name} needs a model with MoE layers: this one has none")
    windows = []
    for window_name, (first, last) in zip(published.window_names, published.windows, strict=True):
        start, end = scale_position(first, len(layers)), scale_position(last, len(layers))
        windows.append(PresetWindow(name=window_name, positions=(start, end), layers=tuple(layers[start : end + 1])))
    return Preset(
        name=published.name,
        kind=published.kind,
        method=published.method,
        k=published.k,
        thr=published.thr,
        strengths=published.strengths,
        pool=published.pool,
        windows=tuple(windows),
        n_moe_layers=len(layers),
    )
