"""What every page shares: the page frame (title, one line on what it shows, the navigation) and
the sidebar that chooses the store, the model, the run and the reference language.

Pages are found by Streamlit in `pages/` (so each opens by its URL, even as the first request to
a fresh server); this module draws the navigation with plain names in sections. Choices live in
session state under their own keys, because a widget's state is dropped when another page
without that widget runs.

Every choice is also written into the page's URL (`?run=2&ref=jpn_Jpan&langs=...`), so a copied
link reopens the same view: `from_url` seeds a choice from a URL the session did not write itself
(a link opened, the browser's back and forward), `to_url` writes the choice back.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from moe_core.backends import import_model_libraries
from moe_core.errors import PolyrouteError
from moe_core.languages import find_lang, language
from moe_core.steering import layers_text
from polyroute import default_db
from polyroute.run_status import shown_status
from polyroute.ui.data import Version, run_layout, shared_store, version
from polyroute.ui.words import error_words
from store import SharedStore, StoreError, StoreMissing
from store import queries as q

T = TypeVar("T")


@dataclass(frozen=True)
class PageLink:
    path: str
    label: str
    icon: str
    about: str  # one line for the overview's map of the pages


GLOSSARY_PAGE = PageLink(
    "pages/glossary.py", "Glossary", ":material/menu_book:", "the words and letters the pages use, in plain words"
)

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
            PageLink(
                "pages/expert_browser.py",
                "Expert browser",
                ":material/manage_search:",
                "one expert: the languages and tokens sent to it, the experts chosen with it, what analyses call it",
            ),
            PageLink(
                "pages/compare_runs.py",
                "Compare runs",
                ":material/compare_arrows:",
                "several runs' divergence on one depth axis, steered against unsteered, band means per run",
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
    ("Help", (GLOSSARY_PAGE,)),
)


WARM_AFTER_S = 2.0  # after the first page's script: the browser draws it before the import takes a core
FIRST_PAGE_WAIT_S = 60.0  # a first page that runs longer than this does not hold the import back


@st.cache_resource(show_spinner=False)
def warm_model_libraries(_first_page: threading.Thread) -> threading.Thread:
    """Import the model libraries once per server, in the background, a few seconds after its first
    page's script has ended (`_first_page`, the thread that ran it: Streamlit ends a script's thread
    with its run): the pages that run a model (Steering, on its first visit) would otherwise keep
    their first visitor waiting for the import, and an import beside the first page would slow it
    (the import holds the interpreter most of the time it runs). A page or job that needs them sooner
    imports them itself through `import_model_libraries`, which makes it wait for an import under way."""

    def warm() -> None:
        _first_page.join(FIRST_PAGE_WAIT_S)
        time.sleep(WARM_AFTER_S)
        import_model_libraries()

    thread = threading.Thread(target=warm, name="polyroute-warm-imports", daemon=True)
    thread.start()
    return thread


def page(title: str, explanation: str, looking_at: str = "") -> None:
    """Start a page: its browser-tab title, the navigation, its heading, what it shows and, folded,
    `looking_at`: a few sentences for someone who opens it for the first time."""
    warm_model_libraries(threading.current_thread())
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
    if looking_at:
        with st.popover("What am I looking at?", icon=":material/help:"):
            st.markdown(looking_at)
            st.page_link(GLOSSARY_PAGE.path, label="The glossary explains every term", icon=GLOSSARY_PAGE.icon)


_WRITTEN = "_url_written"  # what this session last wrote into the URL, by parameter


def _url_text(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(_url_text, value))
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def from_url(name: str, key: str, parse: Callable[[str], Any]) -> None:
    """Before the widget: the URL's `name`, when the session did not write it itself (a link opened,
    back or forward), becomes the choice under `key`. A value `parse` refuses (ValueError) is ignored;
    the widget's own checks (`kept`) drop one that is no longer among its options (KeyError)."""
    raw = st.query_params.get(name)
    written = st.session_state.setdefault(_WRITTEN, {})
    if raw is None or written.get(name) == raw:
        return
    try:
        st.session_state[key] = parse(raw)
    except (ValueError, TypeError, KeyError):
        return
    written[name] = raw  # read once: later reruns keep what the user chooses


def to_url(name: str, value: object) -> None:
    """After the widget: write the choice into the URL, so that a copied link reopens it."""
    raw = _url_text(value)
    st.session_state.setdefault(_WRITTEN, {})[name] = raw
    if st.query_params.get(name) != raw:
        st.query_params[name] = raw


def parse_list(parse: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    """A parser for a comma-separated list in the URL."""
    return lambda raw: [parse(part) for part in raw.split(",") if part]


def parse_pair(raw: str) -> tuple[int, int]:
    """`2,5` -> (2, 5): a range of layers in the URL."""
    first, _, last = raw.partition(",")
    return (int(first), int(last or first))


def parse_json(raw: str) -> Any:
    return json.loads(raw)


def url_widget(
    name: str,
    key: str,
    default: object,
    *,
    parse: Callable[[str], Any] = str,
    fix: Callable[[Any], Any] = lambda value: value,
    show: Callable[[Any], str] = _url_text,
    ranged: bool = False,
) -> dict[str, Any]:
    """The `key`, `on_change` and `args` of a widget whose choice is kept across pages and in the
    URL's `name`. The choice lives under `{key}_chosen` (a widget's own state is dropped on pages
    without it); `fix` returns the choice made valid for this rerun's options, or None to fall
    back to `default`; `show` writes it into the URL. `ranged`: a range slider, which learns that
    it has two ends from its `value`, so that is passed too."""
    chosen = f"{key}_chosen"  # kept as the URL's text: `all` stays all when the options change
    from_url(name, chosen, str)
    text = st.session_state.get(chosen)
    try:
        fixed = None if text is None else fix(parse(text))
    except (ValueError, TypeError, KeyError):
        fixed = None
    value = default if fixed is None else fixed
    st.session_state[chosen] = show(value)
    if key not in st.session_state or st.session_state[key] != value:
        st.session_state[key] = value
    to_url(name, st.session_state[chosen])
    found = {"key": key, "on_change": _copy_choice, "args": (key, chosen, name, show)}
    return {**found, "value": value} if ranged else found


def _copy_choice(key: str, chosen: str, name: str, show: Callable[[Any], str]) -> None:
    st.session_state[chosen] = show(st.session_state[key])
    to_url(name, st.session_state[chosen])


def among(options: Sequence[object]) -> Callable[[Any], Any]:
    """A `fix` for a single choice: kept while it is among `options`."""
    return lambda value: value if value in options else None


def subset_of(options: Sequence[object]) -> Callable[[Any], Any]:
    """A `fix` for a multiselect: the choices still among `options` (none left: the default)."""

    def fix(value: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            return None
        kept_values = [v for v in value if v in options]
        return kept_values if kept_values or not value else None

    return fix


def band_of(layers: Sequence[int]) -> Callable[[Any], Any]:
    """A `fix` for a range of layers: two of `layers`, in order."""

    def fix(value: Any) -> Any:
        ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(v in layers for v in value)
        return tuple(sorted(value)) if ok else None

    return fix


def between(low: float, high: float) -> Callable[[Any], Any]:
    """A `fix` for a number: kept while it lies in [low, high]."""
    return lambda value: value if isinstance(value, (int, float)) and low <= value <= high else None


def langs_param(options: Sequence[str]) -> Callable[[str], list[str]]:
    """Parse the URL's languages: `all`, or codes joined by commas."""
    return lambda raw: list(options) if raw == "all" else parse_list(str)(raw)


def show_langs(options: Sequence[str]) -> Callable[[Any], str]:
    """Write languages into the URL: `all` when every option is chosen."""
    return lambda chosen: "all" if list(chosen) == list(options) else _url_text(chosen)


def band_caption(place: DeltaGenerator, key: str, band: Sequence[int]) -> None:
    """Say the band in words under its slider; when both ends sit on one layer, the slider's two
    numbers ("2 2") are hidden, since the words say it: "Band: layer 2"."""
    place.caption(f"Band: {layers_text(band)}")
    if band[0] == band[-1]:
        place.markdown(
            f"<style>.st-key-{key} [data-testid='stSliderThumbValue'] {{visibility: hidden}}</style>",
            unsafe_allow_html=True,
        )


def on_a_phone() -> bool:
    """Whether the browser says it is a phone (its User-Agent): charts then start narrower."""
    try:
        agent = st.context.headers.get("User-Agent", "")
    except Exception:
        return False
    return "Mobi" in agent


def chosen_count(chosen: Sequence[object], of: Sequence[object], what: str = "languages") -> str:
    """`33 of 34 languages chosen`: a multiselect's summary, since its chips show only a few."""
    if len(chosen) == len(of):
        return f"All {len(of)} {what} chosen."
    return f"{len(chosen)} of {len(of)} {what} chosen."


@contextmanager
def explained() -> Iterator[None]:
    """Show a domain error as a message that says what to do, and end the page there."""
    try:
        yield
    except (PolyrouteError, StoreError) as error:
        st.warning(error_words(error), icon=":material/info:")
        st.stop()


# Choices kept out of the URL: a secret, the store (in the URL as `store`, only when not the default),
# and the model and run (the URL says `run`, and the model comes with it).
NOT_IN_URL = frozenset({"server_token", "store_path", "model", "run_id"})
MAX_URL_VALUE = 400  # characters: a longer choice (a pasted plan) stays out of the link


def _by_type(default: object) -> Callable[[str], Any] | None:
    """How to read a choice like `default` back from the URL (None: it does not go there)."""
    if isinstance(default, bool):
        return lambda raw: raw.lower() in ("true", "1", "yes")
    if isinstance(default, (int, float, str)):
        return type(default)
    return None


def _linked(key: str, value: object) -> None:
    """Write a kept choice into the URL under its key, when it belongs there."""
    text = _url_text(value)
    if key not in NOT_IN_URL and len(text) <= MAX_URL_VALUE and value is not None:
        to_url(key, text)


def remembered(key: str, default: object) -> str:
    """The widget key for a choice kept across pages under `key` (seeded with `default`, or with
    the URL's `key` when a link brings one) and written into the URL."""
    parse = _by_type(default)
    if parse is not None and key not in NOT_IN_URL:
        from_url(key, key, parse)
    if key not in st.session_state:
        st.session_state[key] = default
    widget = f"widget_{key}"
    st.session_state[widget] = st.session_state[key]
    if parse is not None:
        _linked(key, st.session_state[key])
    return widget


def kept(key: str, options: Sequence[object], default: object) -> str:
    """`key` for a widget whose remembered value must still be among `options` (else `default`);
    the choice is read from the URL's `key` when a link brings one, and written there."""
    by_text = {_url_text(option): option for option in options}

    def parse(raw: str) -> object:
        if isinstance(default, list):
            return [by_text[part] for part in raw.split(",") if part]
        return by_text[raw]

    from_url(key, key, parse)  # a value no longer among the options is ignored
    value = st.session_state.get(key)
    valid = all(v in options for v in value) if isinstance(value, list) else value in options
    if value is None or not valid:
        st.session_state[key] = default
    _linked(key, st.session_state[key])
    return key


def keep(key: str) -> None:
    """The `on_change` of a `remembered` widget: copy its value to the kept choice."""
    st.session_state[key] = st.session_state[f"widget_{key}"]


def store_path() -> str:
    """The store file typed in the sidebar (default $POLYROUTE_DB or data/demo.duckdb); in the URL
    only when it is not the default."""
    from_url("store", "store_path", str)
    path = st.sidebar.text_input(
        "Store file",
        key=remembered("store_path", str(default_db())),
        on_change=keep,
        args=("store_path",),
        help="A DuckDB file written by Polyroute (`polyroute trace`, `polyroute demo` or the Collect page).",
    ).strip()
    if path != str(default_db()) or "store" in st.query_params:
        to_url("store", path)
    return path


def choose_store() -> SharedStore:
    """The store chosen in the sidebar; without one, the page says how to make one and stops."""
    path = store_path()
    try:
        return shared_store(path)
    except StoreMissing as error:
        del error  # its words are for the command line
        st.info(
            f"There is no store at {path}: choose another file in the sidebar, or fill this one.",
            icon=":material/info:",
        )
        st.markdown(
            "To fill a store, build the demo store (a tiny MoE trained on the built-in corpus, every language, "
            f"a few minutes on a CPU) from a terminal:\n\n```\nPOLYROUTE_DB={path} polyroute demo\n```\n\n"
            "or trace a parallel corpus with a local MoE model on the **Collect** page."
        )
        st.stop()
    except StoreError as error:
        st.error(error_words(error), icon=":material/error:")
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
            "This store holds no traced run yet: trace one on the **Collect** page.",
            icon=":material/info:",
        )
        st.stop()
    by_id = {run.run_id: run for run in runs}
    raw_run = st.query_params.get("run")
    if raw_run is not None and st.session_state.get(_WRITTEN, {}).get("run") != raw_run:
        # A link names the run: its model comes with it.
        linked = by_id.get(int(raw_run)) if raw_run.isdigit() else None
        if linked is not None:
            st.session_state["model"] = linked.model_id
    models = sorted({run.model_id for run in runs})
    model = _select("Model", models, "model", best_run(runs).model_id, str)
    of_model = {run.run_id: run for run in runs if run.model_id == model}
    from_url("run", "run_id", int)
    run_id = _select("Run", list(of_model), "run_id", best_run(list(of_model.values())).run_id, _run_labeller(of_model))
    to_url("run", run_id)
    run = of_model[run_id]
    layout = run_layout(str(store.path), run.run_id, version(run))
    if layout is None:  # the run vanished between two reads: only a replaced store file does that
        st.warning("That run is no longer in the store; choose another.")
        st.stop()
    default_ref = "eng_Latn" if "eng_Latn" in layout.langs else layout.langs[0]
    from_url("ref", "ref", str)
    ref = _select("Reference language", layout.langs, "ref", default_ref, lang_name)
    to_url("ref", ref)
    return RunChoice(store=store, run=run, layout=layout, ref=ref)


def best_run(runs: Sequence[q.RunRow]) -> q.RunRow:
    """The run a new session opens on: the most recent complete one with the most languages."""
    return max(
        runs,
        key=lambda run: (shown_status(run) == "complete", len(run.params.get("langs", [])), run.created_at, run.run_id),
    )


def _run_labeller(of_model: dict[int, q.RunRow]) -> Callable[[int], str]:
    return lambda run_id: _run_label(of_model[run_id])


def run_title(run: q.RunRow) -> str:
    """`run 3`, with the run's name when it has one: `run 3 · German baseline`."""
    return f"run {run.run_id} · {run.name}" if run.name else f"run {run.run_id}"


def _run_label(run: q.RunRow) -> str:
    langs = run.params.get("langs", [])
    status = shown_status(run)  # `interrupted` for a run whose process died
    state = "" if status == "complete" else f" · {status} {run.n_stored}/{run.n_planned}"
    return f"{run_title(run)} · {len(langs)} languages · {run.corpus_id}{state}"


def _select(label: str, options: Sequence[T], key: str, default: T, show: Callable[[T], str]) -> T:
    """A sidebar selectbox whose choice survives page changes (and falls back when it vanished)."""
    if st.session_state.get(key) not in options:
        st.session_state[key] = default
    chosen = st.sidebar.selectbox(
        label, options, key=remembered(key, default), on_change=keep, args=(key,), format_func=show
    )
    st.session_state[key] = chosen
    return chosen
