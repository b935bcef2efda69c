"""A stored run as the analyses see it: what is selected (languages, layers, reference), the
inputs read once each through `store.queries`, and the base of the results every analysis returns.

`polyroute.analyses` turns these inputs into results; the CLI and the app only call that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from moe_core.analysis import routing
from moe_core.analysis import summaries as summaries_math
from moe_core.analysis.zones import zone_mask
from moe_core.errors import ParameterError, PolyrouteError
from moe_core.languages import find_lang, language
from store import Store, summaries
from store import queries as q
from store.summaries import LanguageSums, PairDivergence

SOURCES = ("auto", *summaries_math.SOURCES)
SOURCE_NAMES = {"soft": "router_probs", "weight": "routing_weights", "hard": "activation_frequencies"}
SOURCE_WORDS = {"soft": "router probabilities", "weight": "routing weights", "hard": "expert ids"}  # what each needs


@dataclass(frozen=True, kw_only=True)
class Table:
    name: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass(frozen=True, kw_only=True, eq=False)
class AnalysisResult:
    """What an analysis found. Each analysis returns a subclass next to its function whose fields
    are its typed results (numpy arrays, shapes in its docstring); this base carries the settings
    that produced them (`params`), a summary, and notes that qualify them (for example that an
    id-only trace was analysed from activation frequencies).

    The display tables (`tables`, the first the main one; `table(name)`) that the CLI prints, the
    pages chart and the API turns into DataFrames are built from the arrays in one place, the
    subclass's `build_tables`, on first read."""

    analysis: str
    params: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def build_tables(self) -> list[Table]:
        raise NotImplementedError(f"{type(self).__name__} builds no tables")

    @cached_property
    def tables(self) -> list[Table]:
        return self.build_tables()

    def table(self, name: str) -> Table:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(name)


@dataclass(frozen=True, kw_only=True)
class Selection:
    """Which part of a run to analyse: languages (default all), layers (default all MoE layers),
    the reference language, and the distribution (soft, weight, hard, or auto: soft where stored)."""

    langs: Sequence[str] | None = None
    layers: tuple[int, int] | None = None  # an inclusive range of decoder-layer indices
    ref: str = "eng_Latn"
    source: str = "auto"


class RunData:
    """One run's analysis inputs, read from the store once each, on first use."""

    def __init__(self, store: Store, run_id: int, selection: Selection) -> None:
        layout = q.run_layout(store, run_id)
        if layout is None or not len(layout.seq_ids):
            raise PolyrouteError(
                f"the store holds no traced sequences for run {run_id}: list runs with `polyroute runs`"
            )
        if selection.source not in SOURCES:
            raise ParameterError(f"unknown {{source}} {selection.source!r}: use one of {', '.join(SOURCES)}")
        self.store = store
        self.layout = layout
        self.selection = selection
        self.lang_index = self._lang_index(selection.langs)
        self.layer_index = self._layer_index(selection.layers)

    # what is selected ----------------------------------------------------------------------

    @property
    def langs(self) -> list[str]:
        return [self.layout.langs[i] for i in self.lang_index]

    @property
    def layers(self) -> list[int]:
        return [int(self.layout.layers[i]) for i in self.layer_index]

    def ref_position(self) -> int:
        """The reference language's position among the selected languages."""
        ref = self.selection.ref
        if ref not in self.langs:
            raise ParameterError(
                f"run {self.layout.run_id} has no {ref} among the languages analysed; choose {{ref}} from "
                f"{', '.join(self.langs)}"
            )
        return self.langs.index(ref)

    def _lang_index(self, wanted: Sequence[str] | None) -> np.ndarray:
        if not wanted:
            return np.arange(len(self.layout.langs))
        absent = [lang for lang in wanted if lang not in self.layout.langs]
        if absent:
            raise PolyrouteError(
                f"run {self.layout.run_id} has no {', '.join(absent)}; its languages are {', '.join(self.layout.langs)}"
            )
        return np.array([self.layout.langs.index(lang) for lang in dict.fromkeys(wanted)])

    def _layer_index(self, band: tuple[int, int] | None) -> np.ndarray:
        layers = self.layout.layers
        if band is None:
            return np.arange(len(layers))
        chosen = np.flatnonzero((layers >= band[0]) & (layers <= band[1]))
        if not chosen.size:
            raise PolyrouteError(
                f"no MoE layer lies in {band[0]}-{band[1]}; the model routes in layers {layers.min()}-{layers.max()}"
            )
        return chosen

    def middle_band(self) -> np.ndarray:
        """[Y'] bool over the selected layers: the middle depth zone, unless --layers chose a band."""
        if self.selection.layers is not None:
            return np.ones(len(self.layer_index), dtype=bool)
        return zone_mask(self.layers, self.layout.n_layers, "middle")

    # inputs: the run's routing summaries (store.summaries), never its per-token rows but for
    # consistency at other than the default pairs -----------------------------------------------

    @cached_property
    def sums(self) -> LanguageSums:
        """Per-language sums over every language and MoE layer of the run (selected on use)."""
        layout = self.layout
        return summaries.language_sums(self.store.con, layout.run_id, layout.langs, layout.layers, layout.n_experts)

    @cached_property
    def distribution(self) -> str:
        """The distribution analysed: soft, weight or hard (`auto`: soft where the run has it)."""
        wanted, available = self.selection.source, self.sums.sources
        if wanted == "auto":
            return "soft" if "soft" in available else "hard"
        if wanted not in available:
            raise ParameterError(unavailable_sources(self.layout.run_id, available))
        return wanted

    @property
    def source(self) -> str:
        """What the distributions are, in result params: router_probs, routing_weights or activation_frequencies."""
        return SOURCE_NAMES[self.distribution]

    def _selected(self, values: np.ndarray) -> np.ndarray:
        """[L, Y, ...] over the run -> over the selected languages and layers."""
        return values[self.lang_index][:, self.layer_index]

    @cached_property
    def pair_divergence(self) -> PairDivergence:
        """Divergence sums of the selected languages' pairs over their aligned items, per selected layer."""
        layers = self.layout.layers[self.layer_index]
        return summaries.pair_divergence(self.store.con, self.layout.run_id, self.distribution, self.langs, layers)

    @cached_property
    def n_sequences(self) -> np.ndarray:
        """[L'] sequences of each selected language."""
        return self.sums.n_sequences[self.lang_index, 0].astype(np.int64)

    @cached_property
    def mean_entropy(self) -> np.ndarray:
        """[L', Y'] mean over each language's sequences of H(q) of the analysed distribution (NaN: none)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self._selected(self.sums.entropy[self.distribution]) / self.n_sequences[:, None]

    @cached_property
    def mean_consistency(self) -> np.ndarray:
        """[L', Y'] mean within-sequence consistency at the default pairs (NaN: no sequence of two tokens)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self._selected(self.sums.consistency_sum) / self._selected(self.sums.consistency_count)

    def over_sequences(
        self, compute: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray], shape: tuple[int, ...]
    ) -> np.ndarray:
        """[S, *shape] float32: `compute(experts [n, Y', k], lengths [s], sequence indices [s])` ->
        [s, *shape] over the token routes of the selected layers, streamed a batch of whole
        sequences at a time (the routing decisions never sit in memory at once)."""
        result = np.full((len(self.layout.seq_ids), *shape), np.nan, dtype=np.float32)
        for index, experts, _ in q.token_expert_batches(self.store, self.layout, self.selection.layers):
            result[index] = compute(experts, self.layout.seq_tokens[index], index)
        return result

    @cached_property
    def hits(self) -> np.ndarray:
        """[L, Y', E] tokens of each selected language whose top-k holds the expert."""
        return self._selected(self.sums.hits)

    @cached_property
    def frequencies(self) -> np.ndarray:
        """[L, Y', E] activation frequencies f_L (sum k over experts) of the selection."""
        return routing.activation_frequencies(self.hits, self.layout.tokens_per_lang[self.lang_index])

    @cached_property
    def sequence_mean_frequencies(self) -> np.ndarray:
        """[L, Y', E] mean over each language's sequences of the per-sequence frequency (Delta-tau)."""
        return self._selected(self.sums.frequency_sum) / np.maximum(self.n_sequences, 1)[:, None, None]

    def narrowed(self, layers: tuple[int, int]) -> RunData:
        """The same run and languages, only the decoder layers in `layers` (read afresh, so smaller)."""
        return RunData(self.store, self.layout.run_id, replace(self.selection, layers=layers))

    def sequence_positions(self) -> np.ndarray:
        """[S] each sequence's language position among the selected languages (-1: not selected)."""
        position = np.full(len(self.layout.langs), -1)
        position[self.lang_index] = np.arange(len(self.lang_index))
        return position[self.layout.seq_lang]

    def params(self) -> dict[str, Any]:
        return {
            "run": self.layout.run_id,
            "model": self.layout.model_id,
            "langs": ",".join(self.langs),
            "layers": f"{self.layers[0]}-{self.layers[-1]}",
        }


def unavailable_sources(run_id: int, available: Sequence[str]) -> str:
    """One line (a `ParameterError` template) on the distributions a run cannot give and those it can."""
    missing = [source for source in summaries_math.SOURCES if source not in available]
    stored = " or ".join(SOURCE_WORDS[source] for source in missing)
    kind = " (an id-only trace)" if "weight" in missing else ""
    return (
        f"run {run_id} stored no {stored}{kind}, so it cannot give {{source}} {' or '.join(missing)}: "
        f"choose {{source}} {' or '.join(available)}"
    )


def lang_facts(code: str) -> dict[str, Any]:
    """Family, script and resource class of a FLORES-200 code (blank for a code outside the list)."""
    found = find_lang(code)
    if found is None:
        return {"family": "", "script": "", "resource_class": None}
    lang = language(found)
    return {"family": lang.family, "script": lang.script, "resource_class": lang.resource_class}


def mean_by_group(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Mean of the rows of `values` [S, Y] per group [S] (-1 = left out), ignoring NaN -> [G, Y]."""
    kept = groups >= 0
    values, groups = values[kept], groups[kept]
    valid = ~np.isnan(values)
    totals = np.zeros((n_groups, values.shape[1]))
    counts = np.zeros((n_groups, values.shape[1]))
    np.add.at(totals, groups, np.where(valid, values, 0))
    np.add.at(counts, groups, valid)
    with np.errstate(invalid="ignore"):
        return totals / counts


def rounded(value: Any, digits: int = 6) -> Any:
    """Plain Python numbers for tables (NaN becomes None so JSON stays valid)."""
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else round(float(value), digits)
    if isinstance(value, np.integer):
        return int(value)
    return value
