"""Adapt (RISE): choose a language, a budget and the zone rule, see the experts its routing singles
out on a layer x expert map (no model needed), train only those experts in the background (with
an estimate of the time it takes), and compare the held-out loss of the target and the chosen
languages before and after; past adaptations of the store, and one running now, reopen below."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from moe_core.adapt import TrainSettings
from moe_core.analysis.rise import DEFAULT_RATIOS, ZONE_RULES
from moe_core.demo import DEMO_MODEL_DIR
from polyroute.background import current_job, start_job
from polyroute.background.adapt import AdaptationJob, AdaptationState
from polyroute.ui import adapt as a
from polyroute.ui.draw import draw
from polyroute.ui.expert_links import with_browser_links
from polyroute.ui.forms import job_gate
from polyroute.ui.frame import choose_run, choose_store, explained, kept, lang_name, page
from polyroute.ui.progress import follow, started
from polyroute.workflows.adapt import AdaptOutcome, AdaptRequest, default_eval_langs

page(
    "Adapt",
    "Find the experts that serve one language (RISE: specific experts in shallow and deep layers, shared ones "
    "in the middle), train only them on that language's text, and see how every language's loss moves.",
    looking_at="Adapting trains only a few experts chosen for one language (RISE): experts that language uses "
    "far more than the others in the shallow and deep layers, and experts all languages share in the middle. "
    "The map shows the chosen experts by layer; after training, the chart compares every language's loss on "
    "held-out text before and after, so you can see whether the target improved and what the others lost.",
)
choice = choose_run(choose_store())
store, run = choice.store, choice.run
new_tab, past_tab = st.tabs(["Adapt a language", "Past adaptations"])
job = current_job(store, AdaptationJob)
state = job.snapshot() if job is not None else None
RUNNING = -1  # the Past list's entry of an adaptation still loading its model (its run is not stored yet)

# Filled first, so that a problem that ends the page in the other tab still leaves this one drawn.
with past_tab:
    past = {found.run_id: found for found in reversed(a.adaptation_runs(store))}
    labels = {run_id: a.run_label(found) for run_id, found in past.items()}
    if job is not None and state is not None and state.running:
        # The job running now, marked so, whether or not its run is stored yet.
        now = state.run_id or RUNNING
        labels = {now: a.running_label(job.request, state.run_id)} | {k: v for k, v in labels.items() if k != now}
    if not labels:
        st.caption("This store holds no adaptation yet: train one in the first tab or with `polyroute adapt`.")
    else:
        if st.session_state.get("adapt_past_run") not in labels:
            st.session_state.pop("adapt_past_run", None)  # the running entry, gone once its run ended
        chosen = st.selectbox(
            "Adaptation run",
            list(labels),
            format_func=labels.__getitem__,
            key="adapt_past_run",
            help="Every adaptation of this store, newest first; one running now is marked running.",
        )
        if chosen in past and not (state is not None and state.running and chosen == state.run_id):
            a.show_adaptation(a.stored_adaptation(store, past[chosen]), "past")
        else:
            st.info(
                f"{labels[chosen]}: {state.text if state is not None else ''}. Its losses appear here when it ends.",
                icon=":material/hourglass_top:",
            )


def _adapted(state: AdaptationState, outcome: AdaptOutcome) -> None:
    st.success(
        f"Run {outcome.run_id} is complete: {outcome.n_trained:,} weights of {len(outcome.subnetwork.experts)} "
        f"experts trained in {outcome.training.steps} steps; {lang_name(outcome.before[0].lang)}'s held-out "
        f"loss went from {outcome.before[0].loss:.3f} to {outcome.after[0].loss:.3f} ({state.seconds:.0f} s).",
        icon=":material/check_circle:",
    )


with new_tab:
    st.subheader("Which experts to train")
    langs = choice.langs
    others = [lang for lang in langs if lang != choice.ref] or langs
    available = len(choice.layout.layers) * choice.layout.n_experts
    # A new session opens on the adaptation this store ran last (running or done): the form starts
    # from its choices, so that the result shown below is the form's.
    last = job.request if job is not None and job.request.run_id == run.run_id else None
    pick, size, weight = st.columns([2, 1, 1])
    target = pick.selectbox(
        "Target language",
        langs,
        key=kept(f"adapt_target_{run.run_id}", langs, last.target if last and last.target in langs else others[0]),
        format_func=lang_name,
        help="The language to improve: its experts are chosen from how this run routed its tokens.",
    )
    budget = int(
        size.number_input(
            "Experts to train (K)", 1, available, min(last.budget if last else 8, available),
            key=f"adapt_budget_{run.run_id}", help=f"How many of the model's {available} routed experts to train.",
        )
    )  # fmt: skip
    alpha = weight.number_input(
        "Alpha", 0.0, 1000.0, 10.0, 1.0, key="adapt_alpha",
        help="How much an expert's activation frequency adds to its score (RISE uses 10).",
    )  # fmt: skip
    shares = st.columns(3)
    shallow, middle, deep = (
        float(column.number_input(f"Share of K: {zone} layers", 0.0, 1.0, default, 0.05, key=f"adapt_ratio_{zone}"))
        for column, zone, default in zip(shares, ("shallow", "middle", "deep"), DEFAULT_RATIOS, strict=True)
    )
    ratios = (shallow, middle, deep)
    zone_rule = st.radio(
        "Depth zones",
        list(ZONE_RULES),
        key=kept("adapt_zones", list(ZONE_RULES), "reference"),
        horizontal=True,
        help="Where the shallow, middle and deep zones start, and where a zone too small for its share sends the rest.",
    )
    st.caption(a.ZONE_RULE_WORDS[zone_rule])
    if problem := a.ratio_problem(ratios):
        st.warning(problem, icon=":material/info:")
        st.stop()
    with explained():
        subnetwork = a.preview(choice.path, run.run_id, choice.version, target, budget, ratios, float(alpha), zone_rule)
    draw(
        a.expert_map(
            a.map_frame(subnetwork.layers, subnetwork.n_layers, subnetwork.n_experts, subnetwork.experts, zone_rule),
            title=f"The {budget} experts RISE selects for {lang_name(target)} (run {run.run_id})",
        ),
        key="adapt_map",
    )
    with st.expander(f"The {budget} selected experts, in selection order"):
        st.dataframe(**with_browser_links(a.expert_frame(subnetwork.experts), run.run_id), hide_index=True,
                     key="adapt_selected")  # fmt: skip

    st.subheader("Train them")
    folder = st.text_input(
        "Model folder",
        value=str(DEMO_MODEL_DIR),
        key="adapt_model",
        help=f"The checkpoint run {run.run_id} traced ({run.model_id}). The default is the demo model.",
    ).strip()
    steps_col, epochs_col, lr_col, batch_col, seed_col = st.columns(5)
    max_steps = steps_col.number_input("Steps (at most)", 1, 100_000, 20, key="adapt_steps")
    epochs = epochs_col.number_input("Epochs", 1, 100, 1, key="adapt_epochs")
    lr = lr_col.number_input("Learning rate", 1e-6, 0.5, 2e-3, format="%.4f", key="adapt_lr")
    batch_size = batch_col.number_input("Batch size", 1, 256, 8, key="adapt_batch")
    seed = seed_col.number_input("Seed", 0, 2**31 - 1, 0, key="adapt_seed")
    compared_col, all_col = st.columns([3, 1])
    every = all_col.checkbox(
        f"All {len(langs)} languages", key="adapt_eval_all", help="Each language is a full pass over its held-out "
        "texts, before and after: with many languages that takes longer than the training.",
    )  # fmt: skip
    candidates = [lang for lang in langs if lang != target]
    compared = compared_col.multiselect(
        "Languages to measure besides the target",
        candidates,
        default=default_eval_langs(target, langs)[1:],
        format_func=lang_name,
        disabled=every,
        key=f"adapt_eval_langs_{run.run_id}_{target}",
        help="Their held-out loss before and after training shows what the other languages lose.",
    )
    eval_langs = [target, *(candidates if every else compared)]
    st.caption(
        "Training uses the built-in corpus's training texts in the target language; the loss is measured on its "
        f"held-out texts in {len(eval_langs)} language{'s' if len(eval_langs) > 1 else ''}, before and after."
    )

    gate = job_gate(store, AdaptationJob, cannot="train", waits="Training")
    running = gate.running
    problem = gate.problem or a.model_problem(folder, choice.path, run.model_id)
    request = AdaptRequest(
        db=Path(choice.path),
        model=Path(folder).expanduser(),
        run_id=run.run_id,
        target=target,
        budget=budget,
        ratios=ratios,
        alpha=float(alpha),
        zones=zone_rule,
        eval_langs=eval_langs,
        settings=TrainSettings(
            epochs=int(epochs), lr=float(lr), batch_size=int(batch_size), max_steps=int(max_steps), seed=int(seed)
        ),
    )
    if problem:
        st.info(problem, icon=":material/info:")
    else:
        st.caption(a.time_estimate(store, request, run.model_id, eval_langs))
    if st.button("Train", type="primary", disabled=bool(problem) or running, key="adapt_train"):
        with explained():
            request.settings.check()
            start_job(store, AdaptationJob(store, request))
        started("adapt")
    follow(lambda: current_job(store, AdaptationJob), "adapt", running=lambda state: state.text, done=_adapted)
    job = current_job(store, AdaptationJob)
    if job is not None and (outcome := job.snapshot().outcome) is not None:
        trained = next((r for r in a.adaptation_runs(store) if r.run_id == outcome.run_id), None)
        if trained is not None and (trained.target, trained.budget) == (target, budget):
            # Its map is the one above, unless the choices changed since: the Past tab draws it.
            a.show_adaptation(a.stored_adaptation(store, trained), "new", with_map=False)
        elif trained is not None:
            st.caption(
                f"The last adaptation (run {trained.run_id}, {lang_name(trained.target)}, K={trained.budget}) is "
                "not the one chosen above: it is under **Past adaptations**."
            )
