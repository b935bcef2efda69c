"""Expert sharing: which languages share experts in a band of layers (a graph with families and
communities), how similar their routing is (a clustered heatmap), and the shared, exclusive and
language-specific experts behind it."""

from __future__ import annotations

import streamlit as st

from polyroute.run_data import lang_facts
from polyroute.ui.charts import (
    GRAPH_WIDTH,
    GROUPINGS,
    sharing_graph,
    similarity_heatmap,
    strongest_links,
    with_language_facts,
)
from polyroute.ui.colours import group_values
from polyroute.ui.data import analysis, middle_band, table
from polyroute.ui.draw import draw
from polyroute.ui.expert_links import with_browser_links
from polyroute.ui.frame import (
    among,
    band_caption,
    band_of,
    between,
    choose_run,
    choose_store,
    explained,
    lang_name,
    layers_text,
    on_a_phone,
    page,
    parse_pair,
    url_widget,
)
from polyroute.ui.sources import choose_source
from polyroute.ui.words import page_words

page(
    "Expert sharing",
    "Which languages send their tokens to the same experts in a band of layers, which groups they form, "
    "and which experts are shared by all or kept by one language.",
    looking_at="Two languages are **linked** when some of the experts each uses most are the same ones. In the "
    "graph, each dot is a language, and each language keeps a line to the few languages it shares most with "
    "(thicker: more shared experts); languages that share a lot end up close together. Dots of one colour form a "
    "**community**: languages that share more with each other than with the rest.\n\n"
    "The heatmap compares every pair of languages at once (bright: they route alike), grouped by **cluster**. "
    "With similarity from routing divergence, the **routing distribution** says what is compared (see the "
    "Divergence page). The number under the controls (ARI) says how well those groups match language families: "
    "1 = exactly, 0 = no better than chance.\n\n"
    "At the bottom: the experts every language uses (shared), the ones one language keeps to itself "
    "(exclusive), and those a language uses much more than the reference language (language-specific).",
)
choice = choose_run(choose_store())
layout, run_id = choice.layout, choice.run.run_id
layers = [int(layer) for layer in layout.layers]
if len(choice.langs) < 2:
    st.info("This run traced a single language: expert sharing compares two or more. Choose another run.")
    st.stop()

controls = st.columns([2, 2, 2, 1, 1])
band = (
    controls[0].select_slider(
        "Layers (band)",
        options=layers,
        help="Every chart and table on this page looks at these decoder layers. Drag both ends onto one layer "
        "to look at a single layer.",
        **url_widget(
            "band", f"sharing_band_{run_id}", middle_band(layout), parse=parse_pair, fix=band_of(layers), ranged=True
        ),
    )
    if len(layers) > 1
    else (layers[0], layers[0])
)
band_caption(controls[0], f"sharing_band_{run_id}", band)
measure = controls[1].radio(
    "Similarity from",
    ["divergence", "cosine"],
    format_func={"divergence": "routing divergence", "cosine": "expert use (cosine)"}.__getitem__,
    horizontal=True,
    **url_widget("measure", "sharing_measure", "divergence", fix=among(["divergence", "cosine"])),
)
source = choose_source(
    controls[2],
    choice,
    "sharing_source",
    unused_because=None
    if measure == "divergence"
    else "Cosine similarity compares how often each expert is chosen, whatever the distribution.",
)
n_families = len({lang_facts(lang)["family"] or lang for lang in choice.langs})
clusters = controls[3].number_input(
    "Clusters",
    min_value=2,
    max_value=len(choice.langs),
    help="How many groups to cut the similarity tree into (default: the number of language families).",
    **url_widget(
        "clusters",
        f"sharing_clusters_{run_id}",
        min(max(n_families, 2), len(choice.langs)),
        parse=int,
        fix=between(2, len(choice.langs)),
    ),
)
top_n = controls[4].number_input(
    "Top experts",
    min_value=1,
    max_value=layout.n_experts,
    help="Two languages are linked by the experts that are among both their N most used ones in a layer.",
    **url_widget(
        "top",
        f"sharing_top_n_{run_id}",
        min(2 * layout.top_k, layout.n_experts),
        parse=int,
        fix=between(1, layout.n_experts),
    ),
)

with explained(), st.spinner("Comparing languages ..."):
    found = analysis(
        choice.path, run_id, choice.version, "similarity", layers=band, ref=choice.ref,
        measure=measure, clusters=int(clusters), top_n=int(top_n),
        **({"source": source} if measure == "divergence" else {}),
    )  # fmt: skip
summary = found.summary
st.caption(
    f"How well the groups match language families (ARI, adjusted Rand index: 1 = the same groups, 0 = no better "
    f"than chance): clusters {summary['ari_clusters_vs_families']}, graph communities "
    f"{summary['ari_communities_vs_families']}; clusters and scripts {summary['ari_clusters_vs_scripts']}."
)

groups = with_language_facts(table(found, "clusters"))
edges = table(found, "graph")
strongest = int(edges["shared_experts"].max()) if len(edges) else 0
n_langs = len(choice.langs)
graph_controls = st.columns([2, 2, 3])
per_lang = (
    graph_controls[0].slider(
        "Links per language",
        min_value=1,
        max_value=min(10, n_langs - 1),
        step=1,
        help="Each language keeps a line to the languages it shares the most experts with: this many of them.",
        **url_widget(
            "links", f"sharing_links_{run_id}", min(3, n_langs - 1), parse=int, fix=between(1, min(10, n_langs - 1))
        ),
    )
    if n_langs > 2
    else 1
)
min_shared = (
    graph_controls[1].slider(
        "At least this many shared experts",
        min_value=1,
        max_value=strongest,
        step=1,
        help="Links that share fewer experts are left out.",
        **url_widget("min_shared", f"sharing_min_shared_{run_id}", 1, parse=int, fix=between(1, strongest)),
    )
    if strongest > 1
    else 1
)
colour_options = ["community", *GROUPINGS]
graph_colour = graph_controls[2].radio(
    "Colour the languages by",
    colour_options,
    format_func=lambda option: "community" if option == "community" else GROUPINGS[option].lower(),
    horizontal=True,
    **url_widget("colour", "sharing_colour", "community", fix=among(colour_options)),
)
shown_links = strongest_links(edges, int(per_lang), int(min_shared))
draw(
    sharing_graph(
        groups,
        shown_links,
        title=f"Languages linked by the experts they share in {layers_text(band)}",
        colour=graph_colour,
        legend=group_values(choice.langs, graph_colour) if graph_colour != "community" else (),
        all_edges=edges,
        width=350 if on_a_phone() else GRAPH_WIDTH,
    ),
    width="stretch",
)
st.caption(
    f"{len(shown_links)} of {len(edges)} links drawn. Names that would cover another are left out: hover over a dot "
    "for its language."
)

matrix = table(found, "similarity")
cluster_of = dict(zip(groups["lang"], groups["cluster"], strict=True))
names = dict(zip(groups["lang"], groups["name"], strict=True))
matrix = matrix.assign(
    name_a=matrix["lang_a"].map(names),
    name_b=matrix["lang_b"].map(names),
    cluster_a=matrix["lang_a"].map(cluster_of),
    cluster_b=matrix["lang_b"].map(cluster_of),
)
order = groups.sort_values(["cluster", "family", "lang"])["lang"].tolist()
draw(
    similarity_heatmap(
        matrix,
        order,
        title=f"How alike languages route in {layers_text(band)}, grouped by cluster",
        value_title="1 - divergence" if measure == "divergence" else "cosine similarity",
    ),
)
with st.expander("Clusters and communities"):
    st.dataframe(
        groups[["lang", "name", "family", "script", "cluster", "community"]].sort_values(["cluster", "lang"]),
        hide_index=True,
        width="stretch",
    )

st.subheader("Shared, exclusive and language-specific experts")
st.caption(
    "An expert's share for a language is its part of the expert's use among each language's k most used experts. "
    "Shared: every language's share is below the share threshold (thr). Exclusive: one language's share is above "
    "it. Language-specific: a language uses the expert more often than the reference language, by more than the "
    "frequency gap (tau)."
)
knobs = st.columns(3)
k = knobs[0].slider(
    "k (experts kept per language)",
    1,
    layout.n_experts,
    step=1,
    help="How many of each language's most used experts per layer are compared.",
    **url_widget("k", f"sharing_k_{run_id}", min(15, layout.n_experts), parse=int, fix=between(1, layout.n_experts)),
)
thr = knobs[1].slider(
    "thr (share threshold)",
    0.05,
    1.0,
    step=0.05,
    help="An expert is exclusive to a language whose share of its use is above this.",
    **url_widget("thr", "sharing_thr", 0.4, parse=float, fix=between(0.05, 1.0)),
)
tau = knobs[2].slider(
    "tau (frequency gap)",
    0.0,
    1.0,
    step=0.01,
    help="A language-specific expert is used more often by the language than by the reference by more than this.",
    **url_widget("tau", "sharing_tau", 0.3, parse=float, fix=between(0.0, 1.0)),
)
with explained():
    shared = analysis(choice.path, run_id, choice.version, "shared", layers=band, ref=choice.ref, k=k, thr=thr)
    specific = analysis(choice.path, run_id, choice.version, "experts", layers=band, ref=choice.ref, tau=tau)
for note in shared.notes:
    st.info(page_words(note), icon=":material/info:")
shared_tab, exclusive_tab, specific_tab = st.tabs(
    [
        f"Shared ({shared.summary['shared']})",
        f"Exclusive ({shared.summary['exclusive']})",
        f"Language-specific vs {lang_name(choice.ref)} ({specific.summary['specialised']})",
    ]
)
shared_tab.dataframe(**with_browser_links(table(shared, "shared"), run_id), hide_index=True, width="stretch")
for tab, found_experts in ((exclusive_tab, table(shared, "exclusive")), (specific_tab, table(specific, "specialised"))):
    tab.dataframe(**with_browser_links(with_language_facts(found_experts), run_id), hide_index=True, width="stretch")
