"""Steering: one prompt generated without and with a steering plan (a preset from a traced run,
experts chosen by hand, or a plan file), the words that changed, and how much routing mass moved
onto the plan's experts in every MoE layer.
"""

from __future__ import annotations

import streamlit as st

from moe_core.demo import DEMO_MODEL_DIR
from moe_core.steering import METHODS, SOFT, SteeringPlan
from moe_core.steering.presets import preset_for
from polyroute.plans import NoExpertsError
from polyroute.ui import steering as s
from polyroute.ui.draw import draw
from polyroute.ui.expert_links import expert_picker
from polyroute.ui.forms import NO_SERVER
from polyroute.ui.frame import choose_run, choose_store, explained, kept, lang_name, page
from polyroute.ui.model_place import choose_place, connected, describe
from polyroute.workflows.steer import DEMO_STEERING

PRESET, CONTROLS, FILE = "a preset from a traced run", "experts I choose", "a plan file"

page(
    "Steering",
    "Push a model's routers toward chosen experts (or shut experts out) while it writes, and compare "
    "its text and routing with and without the push.",
    looking_at="A steering plan names experts in some layers and how hard to push the router toward them "
    "(strength) or away from them. The page writes the same prompt twice, without and with the plan, and shows "
    "both texts and where the routing moved: how much of the tokens' weight went to the plan's experts. Pushing "
    "a language's own experts (found on the Expert sharing page) in the middle band can move the output toward "
    "that language.",
)
place = choose_place()
if place.remote:
    with explained():
        backend = connected(place.servers[0], place.token) if place.servers else None
    if backend is None:
        st.info(NO_SERVER, icon=":material/info:")
        st.stop()
    st.markdown(describe(backend.info(), "The GPU server"))
    model_key = place.servers[0]
else:
    folder = st.text_input(
        "Model folder",
        value=str(DEMO_MODEL_DIR),
        key="steering_model",
        help="A local Mixture-of-Experts checkpoint (a Hugging Face folder). The default is the built-in demo model.",
    ).strip()
    with explained():
        backend = s.load_backend(folder)
    model_key = folder
info = backend.info()
moe = list(info.moe_layers)

prompt_col, tokens_col = st.columns([4, 1])
prompt = prompt_col.text_input(
    "Prompt", value=DEMO_STEERING.prompt, key="steering_prompt", help="The text the model continues."
)
max_new_tokens = int(
    tokens_col.number_input(
        "New tokens", min_value=1, max_value=256, value=DEMO_STEERING.max_new_tokens, key="steering_tokens"
    )
)

st.subheader("The plan")
source = st.radio("Take the plan from", [PRESET, CONTROLS, FILE], key="steering_source", horizontal=True)
plan: SteeringPlan | None = None
if source == PRESET:
    choice = choose_run(choose_store())
    layout = choice.layout
    if (layout.n_experts, [int(x) for x in layout.layers]) != (info.n_experts, moe):
        # Checked again below: a plan naming layers or experts this model lacks is refused there.
        st.caption(
            f"The run traced {layout.model_id} ({layout.n_experts} experts, {len(layout.layers)} MoE layers), a "
            f"model of another shape than the one above ({info.n_experts} experts, {len(moe)} MoE layers), so its "
            "plans may name experts or layers this model lacks. To steer with them, put that model's folder above, "
            "or choose a run traced with this model in the sidebar."
        )
    kind = st.radio(
        "Preset", s.PRESET_KINDS, key="steering_preset", format_func=s.preset_label,
        help="The first two find experts in this run; the others are the published settings of 2601.14050, "
        "scaled to this model's depth.",
    )  # fmt: skip
    layers = [int(layer) for layer in layout.layers]
    n_experts = layout.n_experts
    published = preset_for(kind, moe_layers=layers) if kind in s.PUBLISHED else None
    slug = s.preset_key(kind)
    lang_col, level_col, k_col = st.columns([2, 2, 1])
    pool: tuple[str, ...] = ()
    if s.is_shared(kind):
        assert published is not None
        pool = tuple(lang for lang in published.pool if lang in choice.langs)
        if len(pool) < 2 or pool[0] != published.pool[0]:
            st.info(
                f"This preset pushes the experts {' and '.join(map(lang_name, published.pool))} share; the run "
                "lacks some of them. Choose a run with them in the sidebar.",
                icon=":material/info:",
            )
            st.stop()
        lang = pool[0]
        lang_col.markdown(f"**Languages**: {', '.join(map(lang_name, pool))} (the first gives the coefficients)")
    else:
        others = [code for code in choice.langs if code != choice.ref] or choice.langs
        wanted = DEMO_STEERING.lang if s.uses_language_experts(kind) else "zho_Hans"
        lang = lang_col.selectbox(
            "Language",
            others,
            key=kept("steering_lang", others, wanted if wanted in others else others[0]),
            format_func=lang_name,
            help=f"Its experts are compared with the reference language, {lang_name(choice.ref)} (sidebar)."
            if s.uses_language_experts(kind)
            else "The language whose exclusive experts are silenced.",
        )
    if s.uses_language_experts(kind):
        level = level_col.slider(
            "Threshold tau", 0.05, 1.0, DEMO_STEERING.tau, s.LEVEL_STEP, key="steering_tau",
            help="An expert is the language's when it routes this much more of its tokens than the reference does.",
        )  # fmt: skip
        k = n_experts
    else:
        level = level_col.slider(
            "Share threshold (thr)", 0.05, 1.0, published.thr if published else 0.4, s.LEVEL_STEP,
            key=f"steering_thr_{slug}",
            help="Shared experts: every language holds less than this share of the expert's use. Exclusive "
            "experts: the language holds more than this share.",
        )  # fmt: skip
        k = int(
            k_col.number_input(
                "k", 1, n_experts, min(published.k if published else 15, n_experts), key=f"steering_k_{slug}",
                help=f"Each language's k most used experts per layer enter the shares (at most the model's "
                f"{n_experts} experts).",
            )
        )  # fmt: skip
    if published is not None and len(published.windows) > 1:
        window = st.radio(
            "Published window",
            [w.name for w in published.windows],
            key=f"steering_window_{slug}",
            horizontal=True,
            help="The published runs ablated in an early, a middle or a late window; each sets the band below.",
        )
        default_band = published.window(window).band
    elif published is not None:
        window, default_band = published.windows[0].name, published.windows[0].band
    else:
        window = ""
        middle = s.middle_band(layers, layout.n_layers)
        default_band = s.fitted_band(DEMO_STEERING.band, layers, middle) if s.uses_language_experts(kind) else middle
    band_col, strength_col = st.columns(2)
    with band_col:
        band = s.band_slider(
            "Layers (early to late)", layers, default_band, f"steering_preset_band_{choice.run.run_id}_{slug}{window}",
            "Published runs steer the middle layers; early or late ones usually hurt.",
        )  # fmt: skip
    default_strength = (
        DEMO_STEERING.strength
        if s.uses_language_experts(kind)
        else published.strength_for(pool[0])
        if published is not None and s.is_shared(kind)
        else 0.0
    )
    strength = strength_col.slider(
        "Strength (lambda)", -4.0, 4.0, float(default_strength), 0.001 if s.is_shared(kind) else 0.25,
        key=f"steering_preset_strength_{slug}", disabled=not s.steers_with_strength(kind),
        help="How far the push goes (negative pushes away). Silencing experts (ablate) has no strength.",
    )  # fmt: skip
    settings = s.PresetSettings(
        kind=kind, lang=lang, ref=choice.ref, level=level, k=k, band=band, strength=strength, pool=pool
    )
    level_key = "steering_tau" if s.uses_language_experts(kind) else f"steering_thr_{slug}"
    with explained():
        try:
            plan = s.preset_plan(choice.path, choice.run.run_id, choice.version, settings)
        except NoExpertsError as error:
            nearest = s.suggestion(choice.path, choice.run.run_id, choice.version, settings)
            k_key = None if s.uses_language_experts(kind) else f"steering_k_{slug}"
            s.no_experts(error, nearest, level_key=level_key, k_key=k_key)
            st.stop()
elif source == CONTROLS:
    method_col, strength_col = st.columns(2)
    method = method_col.selectbox(
        "Method",
        METHODS,
        key=kept("steering_method", list(METHODS), SOFT),
        help="soft: raise the experts' scores; hard: make them every token's first choice; adaptive: raise "
        "them in proportion to their own score; ablate: never choose them.",
    )
    strength = strength_col.slider(
        "Strength (lambda)", -4.0, 4.0, 0.5, 0.25, key="steering_strength",
        disabled=method not in ("soft", "adaptive"),
        help="How far soft and adaptive steering push (negative pushes away); hard and ablate ignore it.",
    )  # fmt: skip
    band = s.band_slider(
        "Layers (early to late)", moe, s.middle_band(moe, info.n_layers), "steering_band",
        "The MoE layers whose routers are steered.",
    )  # fmt: skip
    experts = st.multiselect(
        "Experts (the same ids in every layer of the band)",
        list(range(info.n_experts)),
        key=kept("steering_experts", list(range(info.n_experts)), [0]),
    )
    if not experts:
        st.info("Choose one or more experts to steer.", icon=":material/info:")
        st.stop()
    with explained():
        plan = s.controlled_plan(info, method, strength, band, experts)
else:
    uploaded = st.file_uploader("Plan file (JSON)", type=["json"], key="steering_upload")
    pasted = st.text_area(
        "…or paste a plan's JSON",
        key="steering_json",
        help="A plan saved from this page or written by `polyroute plan ... -o plan.json`.",
    )
    text = uploaded.getvalue().decode("utf-8", errors="replace") if uploaded is not None else pasted
    if not text.strip():
        st.info("Upload a plan file or paste its JSON to steer with it.", icon=":material/info:")
        st.stop()
    with explained():
        plan = SteeringPlan.from_json(text)

assert plan is not None  # every branch above set it or stopped the page
st.session_state["steering_plan"] = plan  # the Evaluate page can score with it
if plan.source:
    st.caption(plan.source)
st.dataframe(s.plan_frame(plan), hide_index=True, width="content")
if source == PRESET:  # the plan's experts are those of a stored run: each opens in the Expert browser
    expert_picker(choice.run.run_id, [(e.layer, x, "") for e in plan.experts for x in e.experts], "steering_browse")
st.download_button("Download the plan (JSON)", plan.to_json(), file_name="steering_plan.json", mime="application/json")
with explained():
    s.check(plan, info)

if not prompt.strip():
    st.info("Type a prompt above for the model to continue.", icon=":material/info:")
    st.stop()
asked = (model_key, prompt, max_new_tokens, plan.to_json())
if st.button("Generate", type="primary", key="steering_generate"):
    with st.spinner("Generating without and with the plan…"), explained():
        st.session_state["steering_result"] = (asked, s.compare(backend, prompt, max_new_tokens, plan))
kept_result = st.session_state.get("steering_result")
if kept_result is None or kept_result[0] != asked:
    st.caption("Press **Generate** to write a continuation without and with the plan.")
    st.stop()
result: s.Comparison = kept_result[1]

st.subheader("What the model wrote")
st.caption("Words only the unsteered text has are marked red; words only the steered text has, green.")
left, right = st.columns(2)
plain_md, steered_md = s.marked_diff(result.plain, result.steered)
left.markdown(f"**{s.UNSTEERED.capitalize()}**")
left.markdown(plain_md)
right.markdown(f"**{s.STEERED.capitalize()}**")
right.markdown(steered_md)
if result.plain == result.steered:
    st.info("The plan did not change the text: both generations are the same.", icon=":material/info:")

st.subheader("Where the routing moved")
st.caption(
    "The mean routing mass on the plan's experts over every token each generation read, per MoE layer, and "
    "its change with the plan. A push shows as a rise inside the band; layers before it differ only because "
    "the two generations went on to write, and then read, different words."
)
draw(s.mass_chart(result.masses, plan.band), width="stretch")
draw(s.change_chart(result.masses, plan.band), width="stretch")
st.markdown("**Tokens the plan moved onto its experts** (the steered generation, token by token)")
st.markdown(s.token_strip(result.tokens))
st.caption(
    "Each token the steered generation read, in order (␣ is a space): green where the plan put one of its "
    "experts into the token's top-k in more steered layers than the unsteered generation did at the same "
    "position, blue where one was there already, plain where none is."
)
