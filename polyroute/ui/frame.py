"""What every page shares: the page frame (title, one line on what it shows, the navigation) and
the sidebar that chooses the store, the model, the run and the reference language.

Pages are found by Streamlit in `pages/` (so each opens by its URL, even as the first request to
a fresh server); this module draws the navigation with plain names in sections. Choices live in
session state under their own keys, because a widget's state is dropped when another page
without that widget runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import streamlit as st

from moe_core.errors import PolyrouteError
from moe_core.languages import find_lang, language
from polyroute import default_db
from polyroute.run_status import shown_status
from polyroute.ui.data import Version, run_layout, shared_store, version
from store import SharedStore, StoreError, StoreMissing
from store import queries as q

T = TypeVar("T")


@dataclass(frozen=True)
class PageLink:
    path: str
    label: str
    icon: str
    about: str  # one line for the overview's map of the pages


NAVIGATION = (
    (
        "Explore",
        (
            PageLink("app.py", "Overview", ":material/home:", "what the store holds: models, runs, languages"),
            PageLink(
                "pages/token_paths.py",
                "Token paths",
                ":material/route:",
                "one sentence in several languages: which experts each token visits, layer by layer",
            ),
            PageLink(
                "pages/divergence.py",
                "Divergence",
                ":material/show_chart:",
                "how differently each language routes from the reference language, per layer",
            ),
            PageLink(
                "pages/expert_sharing.py",
                "Expert sharing",
                ":material/hub:",
                "which languages share experts, how they cluster, and the shared and exclusive experts",
            ),
        ),
    ),
    (
        "Intervene",
        (
            PageLink(
                "pages/adapt.py",
                "Adapt",
                ":material/model_training:",
                "train only the experts that serve one language (RISE) and compare every language's loss",
            ),
            PageLink(
                "pages/steering.py",
                "Steering",
                ":material/tune:",
                "push a model's routing toward chosen experts and compare what it writes",
            ),
            PageLink(
                "pages/evaluate.py",
                "Evaluate",
                ":material/checklist:",
                "task scores per language with and without steering, and their link to divergence",
            ),
        ),
    ),
    (
        "Data",
        (
            PageLink(
                "pages/sql.py", "SQL console", ":material/terminal:", "query the stored traces with read-only SQL"
            ),
            PageLink(
                "pages/collect.py",
                "Collect",
                ":material/download:",
                "trace a corpus with a model and add the run to the store",
            ),
        ),
    ),
)


def page(title: str, explanation: str) -> None:
    """Start a page: its browser-tab title, the navigation, its heading and what it shows."""
    tab = title if title == "Polyroute" else f"{title} · Polyroute"
    st.set_page_config(page_title=tab, page_icon="🔀", layout="wide")
    with st.sidebar:
        for section, pages in NAVIGATION:
            st.caption(section)
            for link in pages:
                st.page_link(link.path, label=link.label, icon=link.icon)
        st.divider()
    st.title(title)
    st.caption(explanation)


@contextmanager
def explained() -> Iterator[None]:
    """Show a domain error as a message that says what to do, and end the page there."""
    try:
        yield
    except (PolyrouteError, StoreError) as error:
        st.warning(str(error), icon=":material/info:")
        st.stop()


def remembered(key: str, default: object) -> str:
    """The widget key for a choice kept across pages under `key` (seeded with `default`)."""
    if key not in st.session_state:
        st.session_state[key] = default
    widget = f"widget_{key}"
    st.session_state[widget] = st.session_state[key]
    return widget


def kept(key: str, options: Sequence[object], default: object) -> str:
    """`key` for a widget whose remembered value must still be among `options` (else `default`)."""
    value = st.session_state.get(key)
    valid = all(v in options for v in value) if isinstance(value, list) else value in options
    if value is None or not valid:
        st.session_state[key] = default
    return key


def keep(key: str) -> None:
    """The `on_change` of a `remembered` widget: copy its value to the kept choice."""
    st.session_state[key] = st.session_state[f"widget_{key}"]


def store_path() -> str:
    """The store file typed in the sidebar (default $POLYROUTE_DB or data/demo.duckdb)."""
    return st.sidebar.text_input(
        "Store file",
        key=remembered("store_path", str(default_db())),
        on_change=keep,
        args=("store_path",),
        help="A DuckDB file written by Polyroute (`polyroute trace`, `polyroute demo` or the Collect page).",
    ).strip()


def choose_store() -> SharedStore:
    """The store chosen in the sidebar; without one, the page says how to make one and stops."""
    path = store_path()
    try:
        return shared_store(path)
    except StoreMissing as error:
        st.info(str(error), icon=":material/info:")
        st.markdown(
            "To fill a store, build the demo store (a tiny MoE trained on the built-in corpus, every language, "
            f"under a minute on a CPU):\n\n```\npolyroute demo --db {path}\n```\n\n"
            "or trace a parallel corpus with a local MoE model on the **Collect** page, or with\n\n"
            "```\npolyroute trace --model MODEL_DIR --corpus builtin --langs eng_Latn,deu_Latn,jpn_Jpan "
            f"--db {path}\n```"
        )
        st.stop()
    except StoreError as error:
        st.error(str(error), icon=":material/error:")
        st.stop()


@dataclass(frozen=True, kw_only=True)
class RunChoice:
    """The sidebar's choice: a stored trace run and the reference language among its languages."""

    store: SharedStore
    run: q.RunRow
    layout: q.RunLayout
    ref: str

    @property
    def path(self) -> str:
        return str(self.store.path)

    @property
    def version(self) -> Version:
        return version(self.run)

    @property
    def langs(self) -> list[str]:
        return self.layout.langs


def lang_name(code: str) -> str:
    """`eng_Latn · English` (the bare code for one outside FLORES-200)."""
    found = find_lang(code)
    return f"{code} · {language(found).name}" if found else code


def choose_run(store: SharedStore) -> RunChoice:
    """Model, run and reference language from the sidebar; stops the page when there is no run."""
    with store.reading() as reader:
        runs = [run for run in q.list_runs(reader) if run.kind == "trace" and run.n_stored > 0]
    if not runs:
        st.info(
            "This store holds no traced run yet: trace one on the **Collect** page or with `polyroute trace`.",
            icon=":material/info:",
        )
        st.stop()
    models = sorted({run.model_id for run in runs})
    model = _select("Model", models, "model", models[0], str)
    of_model = {run.run_id: run for run in runs if run.model_id == model}
    run_id = _select("Run", list(of_model), "run_id", max(of_model), lambda r: _run_label(of_model[r]))
    run = of_model[run_id]
    layout = run_layout(str(store.path), run.run_id, version(run))
    if layout is None:  # the run vanished between two reads: only a replaced store file does that
        st.warning("That run is no longer in the store; choose another.")
        st.stop()
    default_ref = "eng_Latn" if "eng_Latn" in layout.langs else layout.langs[0]
    ref = _select("Reference language", layout.langs, "ref", default_ref, lang_name)
    return RunChoice(store=store, run=run, layout=layout, ref=ref)


def _run_label(run: q.RunRow) -> str:
    langs = run.params.get("langs", [])
    status = shown_status(run)  # `interrupted` for a run whose process died
    state = "" if status == "complete" else f" · {status} {run.n_stored}/{run.n_planned}"
    return f"run {run.run_id} · {len(langs)} languages · {run.corpus_id}{state}"


def _select(label: str, options: Sequence[T], key: str, default: T, show: Callable[[T], str]) -> T:
    """A sidebar selectbox whose choice survives page changes (and falls back when it vanished)."""
    if st.session_state.get(key) not in options:
        st.session_state[key] = default
    return st.sidebar.selectbox(
        label, options, key=remembered(key, default), on_change=keep, args=(key,), format_func=show
    )
