"""Collect: trace a parallel corpus with an MoE model (here, or on GPU servers) and add the run to
the store, with a progress bar; the other pages show the run when it is done. The app's process is
the store's only writer while it runs, and one collection runs at a time."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from moe_core.backends.options import HFOptions
from moe_core.demo import DEMO_MODEL_DIR, default_model_id
from polyroute.background import current_job, start_job
from polyroute.background.trace import TraceJob, TraceState
from polyroute.ui.compare import traced_runs
from polyroute.ui.data import corpus_languages, new_store, shared_store
from polyroute.ui.forms import job_gate, model_problem, steering_plan_field
from polyroute.ui.frame import explained, lang_name, page, store_path
from polyroute.ui.model_place import choose_place, connected, describe
from polyroute.ui.progress import follow, started
from polyroute.workflows.trace import TraceOutcome, TraceRequest
from store import StoreError, StoreMissing

page(
    "Collect",
    "Run an MoE model over a parallel corpus (on this machine or a GPU server) and store which experts every "
    "token chose; the new run appears on the other pages when it is done.",
    looking_at="Collecting runs a model over the same sentences in many languages and records, for every "
    "token and every MoE layer, which experts the router chose and with what weight. Everything the other pages "
    "show comes from such a run.",
)
path = store_path()
try:
    store = shared_store(path)
except StoreMissing:
    store = None
    st.info(f"There is no store at {path} yet: collecting creates it.", icon=":material/info:")
except StoreError as error:
    st.error(str(error), icon=":material/error:")
    st.stop()


def _tracing(state: TraceState) -> str:
    if state.stage == "loading":
        return "Loading the model and the corpus ..."
    return (
        f"Run {state.run_id}: {state.sequences_done:,} of {state.sequences_total:,} sentences, "
        f"{state.tokens_done:,} tokens, {state.seconds:.0f} s"
    )


def _collected(state: TraceState, outcome: TraceOutcome) -> None:
    st.success(
        f"Run {outcome.run_id} is complete: {outcome.n_sequences:,} sentences, {outcome.n_tokens:,} tokens "
        f"in {state.seconds:.0f} s. Choose it in the sidebar of the other pages.",
        icon=":material/check_circle:",
    )
    if outcome.missing:
        st.caption(f"The corpus lacks {len(outcome.missing)} of the chosen (item, language) pairs.")
    if outcome.n_truncated:
        st.caption(f"{outcome.n_truncated} texts were longer than the model's limit and were cut.")


gate = job_gate(store, TraceJob, cannot="add runs", waits="Collecting")
running = gate.running
follow(lambda: current_job(store, TraceJob) if store else None, "collect", running=_tracing, done=_collected)

st.subheader("What to trace")
place = choose_place(sharded=True)
left, right = st.columns(2)
folder = Path()
model_name = usual_name = ""
if place.remote:
    with explained():
        infos = [connected(url, place.token).info() for url in place.servers]
    for url, info in zip(place.servers, infos, strict=True):
        left.markdown(describe(info, url))
    if len(place.servers) > 1:
        left.caption("The languages are shared among the servers; this app stores what comes back.")
else:
    model_dir = left.text_input(
        "Model folder",
        value=str(DEMO_MODEL_DIR),
        key="collect_model",
        help="A Hugging Face checkpoint folder of an MoE model (config.json, weights, tokenizer). "
        "The default is the tiny demo model that ships with Polyroute.",
    ).strip()
    folder = Path(model_dir).expanduser()
    usual_name = default_model_id(folder)
    model_name = left.text_input(
        "Model name in the store",
        placeholder=usual_name,
        key="collect_model_name",
        help="Runs of the same model are grouped under this name (default: the folder's name).",
    ).strip()
corpus = right.text_input(
    "Corpus",
    value="builtin",
    key="collect_corpus",
    help="`builtin` (Django's translations), a benchmark from a local copy such as `flores_plus:/data/flores`, "
    "or your own JSONL/CSV/TSV/Parquet file of item_id, lang, text.",
).strip()
split = right.selectbox(
    "Split",
    ["all", "heldout", "train"],
    key="collect_split",
    help="For the built-in corpus and benchmarks: which part of it to trace.",
)
with explained():
    available = corpus_languages(corpus, None if split == "all" else split)
defaults = [lang for lang in ("eng_Latn", "deu_Latn", "jpn_Jpan") if lang in available] or available[:3]
langs = st.multiselect(
    "Languages", available, default=defaults, format_func=lang_name, key=f"collect_langs_{corpus}_{split}"
)
knobs = st.columns(3)
limit = knobs[0].number_input("Sentences per language (at most)", 1, 100_000, 50, key="collect_limit")
batch_size = knobs[1].number_input("Batch size", 1, 256, 16, key="collect_batch")
save_logits = knobs[2].checkbox(
    "Keep router logits", key="collect_logits", help="Needed for token-level entropy; makes the store larger."
)
plan, plan_problem = steering_plan_field(place, traced_runs(store) if store else [])

problem = (
    model_problem(place, folder) or ("" if langs else "Choose at least one language.") or plan_problem or gate.problem
)
if problem:
    st.info(problem, icon=":material/info:")
if st.button("Start collecting", type="primary", disabled=bool(problem) or running):
    request = TraceRequest(
        db=Path(path),
        model=None if place.remote else folder,
        servers=place.servers,
        token=place.token,
        corpus=corpus,
        langs=list(langs),
        split=None if split == "all" else split,
        limit=int(limit),
        batch_size=int(batch_size),
        save_logits=save_logits,
        plan=plan,
        options=HFOptions(model_id=model_name or usual_name),
    )
    with explained():
        shared = new_store(path)
        start_job(shared, TraceJob(shared, request))
    started("collect")
