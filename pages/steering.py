"""Steering: one prompt generated without and with a steering plan (a preset from a traced run,
experts chosen by hand, or a plan file), the words that changed, and how much routing mass moved
onto the plan's experts in every MoE layer.
"""

from __future__ import annotations

import streamlit as st

from moe_core.demo import DEMO_MODEL_DIR
from moe_core.steering import METHODS, SOFT, SteeringPlan
from polyroute.ui import steering as s
from polyroute.ui.expert_links import expert_picker
from polyroute.ui.forms import NO_SERVER
from polyroute.ui.frame import choose_run, choose_store, explained, kept, lang_name, page
from polyroute.ui.model_place import choose_place, connected, describe

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
    "Prompt", value="Please enter a valid", key="steering_prompt", help="The text the model continues."
)
max_new_tokens = int(tokens_col.number_input("New tokens", min_value=1, max_value=256, value=16, key="steering_tokens"))

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
            f"model of another shape than the one above ({info.n_experts} experts, {len(moe)} MoE layers)."
        )
    kind = st.radio("Preset", [s.LANGUAGE, s.EXCLUSIVE], key="steering_preset", horizontal=True)
    others = [lang for lang in choice.langs if lang != choice.ref] or choice.langs
    lang_col, level_col = st.columns(2)
    lang = lang_col.selectbox(
        "Language",
        others,
        key=kept("steering_lang", others, "zho_Hans" if "zho_Hans" in others else others[0]),
        format_func=lang_name,
        help=f"Its experts are compared with the reference language, {lang_name(choice.ref)} (sidebar).",
    )
    if kind == s.LANGUAGE:
        level = level_col.slider(
            "Threshold tau", 0.05, 1.0, 0.4, 0.05, key="steering_tau",
            help="An expert is the language's when it routes this much more of its tokens than the reference does.",
        )  # fmt: skip
    else:
        level = level_col.slider(
            "Share threshold", 0.05, 1.0, 0.4, 0.05, key="steering_thr",
            help="An expert is exclusive when the language holds more than this share of its use.",
        )  # fmt: skip
    layers = [int(layer) for layer in choice.layout.layers]
    band = st.select_slider(
        "Layers (early to late)",
        layers,
        value=s.middle_band(layers, choice.layout.n_layers),
        key=f"steering_preset_band_{choice.run.run_id}",
        help="Published runs steer the middle layers; early or late ones usually hurt.",
    )
    with explained():
        plan = s.preset_plan(choice.path, choice.run.run_id, choice.version, kind, lang, choice.ref, band, level)
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
    band = st.select_slider(
        "Layers (early to late)", moe, value=s.middle_band(moe, info.n_layers), key="steering_band",
        help="The MoE layers whose routers are steered.",
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
    "The mean routing mass on the plan's experts over every token each generation read, per MoE layer. "
    "A push shows as a taller steered bar inside the band; layers before it differ only because the two "
    "generations went on to write, and then read, different words."
)
st.altair_chart(s.mass_chart(result.masses, plan.band), width="stretch")
