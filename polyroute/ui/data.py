"""The app's reads, cached: one shared store per file for the process, and analysis results per
run, selection and settings for every session.

A cached result is keyed by the run's `version` (its status and stored sequences), so a run that
is still being collected is read afresh as it grows, and a finished one is computed once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from moe_core.analysis.zones import zone_band
from moe_core.corpora import load_corpus
from polyroute.analyses.registry import ANALYSES
from polyroute.run_data import AnalysisResult, RunData, Selection
from store import SharedStore, open_store, summaries, token_paths
from store import queries as q
from store.token_paths import TokenPath, TracedItem

Version = tuple[str, int]  # (status, sequences stored)


def shared_store(path: str) -> SharedStore:
    """The process's one instance of the store at `path` (errors are not cached: a fixed path retries)."""
    # One key per file, however it is spelled: a second instance could not lock a locked configuration.
    return _shared_store(str(Path(path).expanduser().resolve()))


@st.cache_resource(show_spinner=False)
def _shared_store(path: str) -> SharedStore:
    return SharedStore(path)


def new_store(path: str) -> SharedStore:
    """The shared store at `path`, created (empty, migrated) when no file is there yet."""
    if not Path(path).expanduser().is_file():
        open_store(path).close()
    return shared_store(path)


@st.cache_data(show_spinner=False, max_entries=16)
def corpus_languages(spec: str, split: str | None) -> list[str]:
    """The languages of the corpus `spec` names (the Collect page's choices)."""
    return load_corpus(spec, split=split).langs


def version(run: q.RunRow) -> Version:
    return (run.status, run.n_stored)


@st.cache_data(show_spinner=False, max_entries=256)
def analysis(
    path: str,
    run_id: int,
    run_version: Version,
    name: str,
    *,
    langs: tuple[str, ...] | None = None,
    layers: tuple[int, int] | None = None,
    ref: str = "eng_Latn",
    source: str = "auto",
    **options: Any,
) -> AnalysisResult:
    """The analysis `name` (`polyroute.analyses.registry.ANALYSES`) of a run's selection, as the CLI
    computes it; `source` (soft, weight, hard; auto: soft where stored) for the analyses that read a
    routing distribution."""
    del run_version  # part of the cache key only
    with shared_store(path).reading() as store:
        data = RunData(store, run_id, Selection(langs=langs, layers=layers, ref=ref, source=source))
        result = ANALYSES[name].function(data, **options)
    _ = result.tables  # built before the result is cached, so that reruns read the tables, not rebuild them
    return result


@st.cache_data(show_spinner=False, max_entries=64)
def run_sources(path: str, run_id: int, run_version: Version) -> tuple[str, ...]:
    """The routing distributions a run can give (soft, weight, hard; an id-only trace: hard only)."""
    del run_version
    with shared_store(path).reading() as store:
        return summaries.stored_sources(store.con, run_id)


def comparison(
    path: str, run_ids: tuple[int, ...], run_versions: tuple[Version, ...], name: str, *, ref: str
) -> AnalysisResult:
    """The analysis `name` of several runs side by side (its `compare` in ANALYSES), as the CLI's `--runs`."""
    del run_versions  # part of the cache key only
    compare = ANALYSES[name].compare
    assert compare is not None, f"{name} compares no runs"
    with shared_store(path).reading() as store:
        return compare(store, run_ids, Selection(ref=ref))


@st.cache_data(show_spinner=False, max_entries=64)
def run_layout(path: str, run_id: int, run_version: Version) -> q.RunLayout | None:
    del run_version
    with shared_store(path).reading() as store:
        return q.run_layout(store, run_id)


@st.cache_data(show_spinner=False, max_entries=64)
def traced_items(path: str, run_id: int, run_version: Version, prefer_lang: str) -> list[TracedItem]:
    del run_version
    with shared_store(path).reading() as store:
        return token_paths.traced_items(store, run_id, prefer_lang)


@st.cache_data(show_spinner=False, max_entries=256)
def item_paths(path: str, run_id: int, run_version: Version, item_id: str, langs: tuple[str, ...]) -> list[TokenPath]:
    del run_version
    with shared_store(path).reading() as store:
        return token_paths.item_token_paths(store, run_id, item_id, langs)


def middle_band(layout: q.RunLayout) -> tuple[int, int]:
    """The middle depth zone's MoE layers (docs/methods.md), as `zones.zone_band` chooses them."""
    return zone_band(layout.layers, layout.n_layers, "middle")


def table(result: AnalysisResult, name: str) -> pd.DataFrame:
    """One of an analysis's tables as a DataFrame, for charts and st.dataframe."""
    found = result.table(name)
    return pd.DataFrame(found.rows, columns=list(found.columns))
