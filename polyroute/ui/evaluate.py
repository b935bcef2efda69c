"""The Evaluate page's work: an evaluation (`polyroute.workflows.evaluate`, what `polyroute eval` runs)
as a background job of the app (`polyroute.background.evaluate`), on this machine or on a GPU server,
and the form that launches it and says what is wrong with its settings before anything starts.

The form is drawn above the stored scores, so a problem with it is a message beside the form and
never ends the page (`frame.explained` would stop it, and hide the scores below).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from moe_core.backends.base import Backend
from moe_core.corpora import BENCHMARKS, BUILTIN
from moe_core.demo import DEMO_MODEL_DIR
from moe_core.errors import PolyrouteError
from moe_core.evaluation.sweeps import Sweep, parse_sweep
from moe_core.evaluation.tasks import BUILTIN_TASK, TASKS, get_task, read_items
from moe_core.steering import SteeringPlan
from polyroute.background import current_job, start_job
from polyroute.background.evaluate import EvaluationJob, EvaluationState
from polyroute.ui.charts import variant_bars
from polyroute.ui.data import corpus_languages
from polyroute.ui.forms import NO_SERVER, folder_problem, job_gate
from polyroute.ui.frame import keep, lang_name, remembered
from polyroute.ui.model_place import ModelPlace, connected, describe
from polyroute.ui.progress import follow, started
from polyroute.ui.words import error_words
from polyroute.workflows.evaluate import EvalOutcome, EvalRequest
from store import SharedStore, StoreError
from store import queries as q

NO_PLAN, STEERING_PLAN, PASTED_PLAN = "no plan (unsteered only)", "the plan on the Steering page", "a plan I paste"
STEERING_KEY = "steering_plan"  # where pages/steering.py keeps the plan it shows
CHOSEN_RUN, NEW_RUN = "evaluate_run", "evaluate_new_run"  # the page's run selectbox, and a run to show in it
TASK_TITLES = {BUILTIN_TASK: f"{BUILTIN_TASK} (built-in corpus, no download)"}
REMOTE_LOSS = (
    "Task heldout measures the model's own loss, so it runs on a model on this machine, not on a GPU server: "
    "choose this machine in the sidebar, or a benchmark task."
)


def server_client(url: str, token: str | None) -> Backend:
    """A client of the GPU server for one job, with connections of its own: the pages' cached client
    (`model_place.connected`) serves every session's reruns, in other threads, while the job runs."""
    from moe_core.backends.remote import RemoteBackend

    return RemoteBackend(url, token=token)


# The form's checks, before Start, in the page's words. ----------------------------------------------


def copy_help(benchmark: str) -> str:
    """Where a copy of `benchmark` comes from and how to make one."""
    found = BENCHMARKS[benchmark]
    return (
        f"**Where a copy of {found.title} comes from:** enter `{benchmark}` to read it from the Hugging Face Hub "
        f"({found.hub_id}) when this machine is online, or `{benchmark}:FOLDER` for a folder of its files. To make "
        f"that folder on a machine with internet: `hf download {found.hub_id} --repo-type dataset --local-dir "
        f"/data/{benchmark}` (a gated dataset asks you to accept its terms on the Hub and `hf auth login` first), "
        f"then enter `{benchmark}:/data/{benchmark}`. `polyroute corpus list` names every benchmark, its Hub "
        "dataset and its splits."
    )


def benchmark_mismatch(task: str, corpus: str) -> str:
    """Why `corpus` cannot hold what `task` scores with, when its name says so ("" when it may)."""
    spec = get_task(task)
    name = corpus.partition(":")[0]
    if not spec.needs_copy or name == spec.benchmark or (name != BUILTIN and name not in BENCHMARKS):
        return ""  # a file of one's own may carry the fields: reading it tells (items_problem)
    what = "The built-in corpus" if corpus == BUILTIN else f"A copy of {BENCHMARKS[name].title}"
    return (
        f"{what} has no {', '.join(spec.required_fields)} field, which task {task} scores with: enter a copy of "
        f"{BENCHMARKS[spec.benchmark].title} (the note under the field says where one comes from), or choose "
        f"task {BUILTIN_TASK}, which runs on the built-in corpus."
    )


@st.cache_data(show_spinner="Reading the benchmark…", max_entries=32)
def items_problem(task: str, corpus: str, langs: tuple[str, ...], limit: int, split: str | None) -> str:
    """What is wrong with the items `task` would score ("" when nothing): the corpus read and checked
    as the evaluation will read it, before a model loads."""
    try:
        read_items(get_task(task), corpus, langs, limit, split)
    except PolyrouteError as error:
        return error_words(error)
    return ""


# The page's parts. -------------------------------------------------------------------------------


def kept_across_pages(key: str, default: object) -> dict[str, Any]:
    """A form widget's key and callback that keep its value while the user visits another page (to
    build a plan on the Steering page, say): Streamlit drops a widget's state on a page without it."""
    return {"key": remembered(key, default), "on_change": keep, "args": (key,)}


def show_progress(store: SharedStore) -> None:
    """The running (or last) evaluation of this store; when it ends, the page shows its scores.
    Drawn before the page's run selectbox."""
    # Chosen on the full rerun that follows the end, before the page draws the selectbox: a widget's
    # value can be set only before the widget is drawn in a run.
    if (new_run := st.session_state.pop(NEW_RUN, None)) is not None:
        st.session_state[CHOSEN_RUN] = new_run

    def done(state: EvaluationState, outcome: EvalOutcome) -> None:
        langs = len({score.lang for score in outcome.scores})
        variants = list(dict.fromkeys(score.variant for score in outcome.scores))
        st.success(
            f"Run {outcome.run_id} is complete: {langs} languages, {outcome.n_items:,} items, {len(variants)} "
            f"variant{'s' if len(variants) != 1 else ''} ({', '.join(variants)}) scored in {state.seconds:.0f} s. "
            "Its scores are shown below.",
            icon=":material/check_circle:",
        )

    def ended(state: EvaluationState) -> None:
        if state.outcome is not None:
            st.session_state[NEW_RUN] = state.outcome.run_id

    follow(lambda: current_job(store, EvaluationJob), "evaluate", running=lambda s: s.text, done=done, ended=ended)


def launcher(store: SharedStore, place: ModelPlace) -> None:
    """The form of a new evaluation and its Start button (disabled, with the reason, while a setting is wrong)."""
    problems: list[str] = []
    info = None
    folder = Path()
    model_col, task_col = st.columns(2)
    if place.remote:
        if not place.servers:
            problems.append(NO_SERVER)
        else:
            try:
                info = connected(place.servers[0], place.token).info()
                model_col.markdown(describe(info, place.servers[0]))
            except PolyrouteError as error:
                problems.append(str(error))
    else:
        folder = Path(
            model_col.text_input(
                "Model folder",
                **kept_across_pages("evaluate_model", str(DEMO_MODEL_DIR)),
                help="A Hugging Face checkpoint folder of an MoE model. The default is the tiny demo model.",
            ).strip()
        ).expanduser()
        if problem := folder_problem(folder):
            problems.append(problem)
    task = task_col.selectbox(
        "Task",
        list(TASKS),
        **kept_across_pages("evaluate_task", BUILTIN_TASK),
        format_func=lambda name: TASK_TITLES.get(name, name),
        help="heldout: the model's loss on the built-in corpus's held-out sentences and how it carries them on "
        "(no download); mgsm and polymath: math word problems; belebele: reading comprehension; flores: "
        "translation from English; xquad: questions on a passage. Every task but heldout needs a benchmark copy.",
    )
    spec = get_task(task)
    split: str | None = None
    if spec.needs_copy:
        corpus_col, split_col = st.columns(2)
        corpus = corpus_col.text_input(
            "Benchmark copy",
            **kept_across_pages("evaluate_corpus", ""),
            placeholder=f"{spec.benchmark}:/data/{spec.benchmark.removesuffix('_plus')}",
            help=f"Task {task} reads a copy of {spec.benchmark}: `{spec.benchmark}:FOLDER` (or `{spec.benchmark}` "
            "for the Hugging Face Hub).",
        ).strip()
        typed_split = split_col.text_input(
            "Split", **kept_across_pages("evaluate_split", ""), placeholder="the benchmark's test split"
        )
        split = typed_split.strip() or None
        st.caption(copy_help(spec.benchmark))
    else:
        corpus = BUILTIN
        st.caption(
            f"Task {task} reads the built-in corpus's held-out sentences ({spec.default_split} split), so it needs "
            "no download: each language's loss and perplexity on them (lower is better), and whether the model "
            "carries the first half of each sentence on in its language, unsteered and with the plan."
        )
        if place.remote:
            problems.append(REMOTE_LOSS)
    langs: list[str] = []
    if not corpus:
        problems.append(
            f"Enter a copy of {spec.benchmark}, e.g. `{spec.benchmark}:FOLDER` (the note under the field says where "
            "one comes from)."
        )
    elif problem := benchmark_mismatch(task, corpus):
        problems.append(problem)
    else:
        try:
            available = corpus_languages(corpus, split or (spec.default_split if corpus == BUILTIN else None))
        except PolyrouteError as error:
            problems.append(error_words(error))
        else:
            defaults = [lang for lang in ("eng_Latn", "deu_Latn") if lang in available] or available[:2]
            langs = st.multiselect(
                "Languages", available, default=defaults, format_func=lang_name, key=f"evaluate_langs_{corpus}_{split}"
            )
            if not langs:
                problems.append("Choose at least one language.")
    limit_col, tokens_col = st.columns(2)
    limit = limit_col.number_input(
        "Items per language (at most)", 1, 100_000, **kept_across_pages("evaluate_limit", 10)
    )
    if langs and (problem := items_problem(task, corpus, tuple(langs), int(limit), split)):
        problems.append(problem)  # the benchmark's fields and languages, checked before Start
    max_new_tokens = tokens_col.number_input(
        "New tokens per answer (at most)",
        1,
        4096,
        **kept_across_pages("evaluate_tokens", None),
        placeholder=f"the task's own: {spec.max_new_tokens}",
        help="Fewer is faster; an answer cut short may lose its final number.",
    )
    plan, sweep = _plan_and_sweep(problems)
    if info is not None and plan is not None:
        try:
            plan.check_against(
                n_layers=info.n_layers, moe_layers=info.moe_layers, n_experts=info.n_experts, top_k=info.top_k
            )
        except PolyrouteError as error:
            problems.append(str(error))
    gate = job_gate(store, EvaluationJob, cannot="add runs", waits="The evaluation")
    running = gate.running
    if gate.problem:
        problems.append(gate.problem)
    for problem in problems:
        st.info(problem, icon=":material/info:")
    if not st.button("Start the evaluation", type="primary", disabled=bool(problems) or running, key="evaluate_start"):
        return
    try:
        request = EvalRequest(
            db=store.path,
            task=task,
            model=server_client(place.servers[0], place.token) if place.remote else folder,
            corpus=corpus,
            langs=langs,
            split=split,
            limit=int(limit),
            plan=plan,
            sweep=sweep,
            max_new_tokens=None if max_new_tokens is None else int(max_new_tokens),
        )
        start_job(store, EvaluationJob(store, request))
    except (PolyrouteError, StoreError) as error:
        st.warning(str(error), icon=":material/info:")
        return
    started("evaluate")


def _plan_and_sweep(problems: list[str]) -> tuple[SteeringPlan | None, Sweep | None]:
    """The plan's source, the plan, and a sweep over it; what is wrong goes to `problems`."""
    source = st.radio(
        "Steering plan",
        [NO_PLAN, STEERING_PLAN, PASTED_PLAN],
        **kept_across_pages("evaluate_plan", NO_PLAN),
        horizontal=True,
    )
    plan: SteeringPlan | None = None
    if source == STEERING_PLAN:
        plan = st.session_state.get(STEERING_KEY)
        if plan is None:
            problems.append("Build a plan on the **Steering** page first, or paste one.")
        else:
            band = f"layers {plan.band[0]}-{plan.band[1]}"
            st.caption(f"{plan.method} steering of {band}, strength {plan.strength:g}. {plan.source}".strip())
    elif source == PASTED_PLAN:
        text = st.text_area(
            "Plan (JSON)",
            **kept_across_pages("evaluate_plan_json", ""),
            help="A plan downloaded from the Steering page or written by `polyroute plan ... -o plan.json`.",
        )
        if not text.strip():
            problems.append("Paste a steering plan's JSON, or choose another plan.")
        else:
            try:
                plan = SteeringPlan.from_json(text)
            except PolyrouteError as error:
                problems.append(str(error))
    swept = st.text_input(
        "Sweep (optional)",
        **kept_across_pages("evaluate_sweep", ""),
        disabled=plan is None,
        placeholder="lambda=0,0.5,1 or window=early,middle,late",
        help="Score the plan at several strengths (lambda) or with its layers moved to each depth zone (window).",
    ).strip()
    sweep = None
    if plan is not None and swept:
        try:
            sweep = parse_sweep(swept)
        except PolyrouteError as error:
            problems.append(str(error))
    return plan, sweep


# The scores of a stored run. ---------------------------------------------------------------------

DISTRIBUTIONS = {
    "soft": "soft: the router's probabilities",
    "weight": "weight: the applied top-k weights",
    "hard": "hard: which experts were chosen",
}


def variant_words(frame: pd.DataFrame) -> str:
    """How a score chart's title names the variants it draws: unsteered, steered, or both."""
    variants = set(frame["variant"])
    plain, steered = "unsteered" in variants, bool(variants - {"unsteered"})
    return "unsteered and steered" if plain and steered else ("unsteered" if plain else "steered")


def score_bars(frame: pd.DataFrame, *, value_title: str, title: str) -> alt.LayerChart:
    """`charts.variant_bars` with a mark at each bar's top, so a score of 0 shows as a line on the
    axis rather than as no bar at all (a tiny model on a hard task scores 0 everywhere)."""
    bars = variant_bars(frame, value_title=value_title, title=title)
    bars.title = alt.Undefined  # the layer carries it
    tops = (
        alt.Chart(frame)
        .mark_tick(thickness=3, size=12)
        .encode(x=alt.X("name:N"), xOffset=alt.XOffset("variant:N"), y=alt.Y("value:Q"), color=alt.Color("variant:N"))
    )
    all_zero = not frame.empty and float(frame["value"].abs().max()) == 0.0
    subtitle = "Every score is 0: each line on the axis is a bar of 0." if all_zero else alt.Undefined
    return alt.LayerChart(layer=[bars, tops], title=alt.Title(title, subtitle=subtitle))


def answers_frame(store: SharedStore, run_id: int) -> pd.DataFrame:
    """The run's answers, one row per item and language, one column per variant's output."""
    with store.reading() as reader:
        answers = q.run_answers(reader, run_id)
    if not answers:
        return pd.DataFrame(columns=["item", "language", "prompt"])
    frame = pd.DataFrame([vars(answer) for answer in answers])
    variants = list(dict.fromkeys(sorted(frame["variant"], key=lambda name: name != "unsteered")))
    wide = frame.pivot_table(index=["item_id", "lang", "prompt"], columns="variant", values="output", aggfunc="first")
    wide = wide.reindex(columns=variants).reset_index()
    wide.insert(1, "language", wide.pop("lang").map(lang_name))
    return wide.rename(columns={"item_id": "item"})


def correlation_problem(by_lang: dict[str, float], ref: str, traced: list[str]) -> str:
    """Why the scores cannot be correlated with the routing ("" when they can): the correlation needs
    3 languages with a score besides the reference, traced in the sidebar's run."""
    usable = [lang for lang in by_lang if lang != ref and lang in traced]
    if len(usable) >= 3:
        return ""
    names = ", ".join(lang_name(lang) for lang in by_lang)
    return (
        f"The correlation needs at least 3 languages with scores besides the reference language "
        f"({lang_name(ref)}); this run has {len(by_lang)} ({names}), so {len(usable)} to correlate. Evaluate more "
        "languages to see it."
    )
