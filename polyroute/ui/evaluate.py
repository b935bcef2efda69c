"""The Evaluate page's work: an evaluation (`polyroute.workflows.evaluate`, what `polyroute eval` runs)
as a background job of the app (`polyroute.background.evaluate`), on this machine or on a GPU server,
and the form that launches it and says what is wrong with its settings before anything starts.

The form is drawn above the stored scores, so a problem with it is a message beside the form and
never ends the page (`frame.explained` would stop it, and hide the scores below).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from moe_core.backends.base import Backend
from moe_core.demo import DEMO_MODEL_DIR
from moe_core.errors import PolyrouteError
from moe_core.evaluation.sweeps import Sweep, parse_sweep
from moe_core.evaluation.tasks import TASKS, get_task, read_items
from moe_core.steering import SteeringPlan
from polyroute.background import current_job, start_job
from polyroute.background.evaluate import EvaluationJob, EvaluationState
from polyroute.ui.data import corpus_languages
from polyroute.ui.forms import NO_SERVER, folder_problem, job_gate
from polyroute.ui.frame import keep, lang_name, remembered
from polyroute.ui.model_place import ModelPlace, connected, describe
from polyroute.ui.progress import follow, started
from polyroute.workflows.evaluate import EvalOutcome, EvalRequest
from store import SharedStore, StoreError

NO_PLAN, STEERING_PLAN, PASTED_PLAN = "no plan (unsteered only)", "the plan on the Steering page", "a plan I paste"
STEERING_KEY = "steering_plan"  # where pages/steering.py keeps the plan it shows
CHOSEN_RUN, NEW_RUN = "evaluate_run", "evaluate_new_run"  # the page's run selectbox, and a run to show in it


def server_client(url: str, token: str | None) -> Backend:
    """A client of the GPU server for one job, with connections of its own: the pages' cached client
    (`model_place.connected`) serves every session's reruns, in other threads, while the job runs."""
    from moe_core.backends.remote import RemoteBackend

    return RemoteBackend(url, token=token)


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
            f"variants ({', '.join(variants)}) scored in {state.seconds:.0f} s. Its scores are shown below.",
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
        **kept_across_pages("evaluate_task", "mgsm"),
        help="mgsm and polymath: math word problems; belebele: reading comprehension; flores: translation "
        "from English; xquad: questions on a passage.",
    )
    spec = get_task(task)
    corpus_col, split_col = st.columns(2)
    corpus = corpus_col.text_input(
        "Benchmark copy",
        **kept_across_pages("evaluate_corpus", ""),
        placeholder=f"{spec.benchmark}:/data/{spec.benchmark.removesuffix('_plus')}",
        help=f"Task {task} reads a local copy of {spec.benchmark}: `{spec.benchmark}:FOLDER`.",
    ).strip()
    typed_split = split_col.text_input(
        "Split", **kept_across_pages("evaluate_split", ""), placeholder="the benchmark's test split"
    )
    split = typed_split.strip() or None
    langs: list[str] = []
    if not corpus:
        problems.append(f"Enter the local copy of the benchmark, e.g. `{spec.benchmark}:FOLDER`.")
    else:
        try:
            available = corpus_languages(corpus, split)
        except PolyrouteError as error:
            problems.append(str(error))
        else:
            defaults = [lang for lang in ("eng_Latn", "deu_Latn") if lang in available] or available[:2]
            langs = st.multiselect(
                "Languages", available, default=defaults, format_func=lang_name, key=f"evaluate_langs_{corpus}_{split}"
            )
            if not langs:
                problems.append("Choose at least one language.")
    limit_col, tokens_col = st.columns(2)
    limit = limit_col.number_input(
        "Items per language (at most)", 1, 100_000, **kept_across_pages("evaluate_limit", 20)
    )
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
        read_items(spec, corpus, langs, int(limit), split)  # the benchmark's fields, before a model loads
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
