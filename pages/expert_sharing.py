"""Expert sharing: which languages share experts in a band of layers (a graph with families and
communities), how similar their routing is (a clustered heatmap), and the shared, exclusive and
language-specific experts behind it."""

from __future__ import annotations

import streamlit as st

from polyroute.run_data import lang_facts
from polyroute.ui.charts import sharing_graph, similarity_heatmap, with_language_facts
from polyroute.ui.data import analysis, middle_band, table
from polyroute.ui.frame import choose_run, choose_store, explained, lang_name, page

page(
    "Expert sharing",
    "Which languages send their tokens to the same experts in a band of layers, which groups they form, "
    "and which experts are shared by all or kept by one language.",
)
choice = choose_run(choose_store())
layout, run_id = choice.layout, choice.run.run_id
layers = [int(layer) for layer in layout.layers]
if len(choice.langs) < 2:
    st.info("This run traced a single language: expert sharing compares two or more. Choose another run.")
    st.stop()

controls = st.columns([2, 2, 1, 1])
band = (
    controls[0].select_slider(
        "Layers (band)",
        options=layers,
        value=middle_band(layout),
        key=f"sharing_band_{run_id}",
        help="Every chart and table on this page looks at these decoder layers.",
    )
    if len(layers) > 1
    else (layers[0], layers[0])
)
measure = controls[1].radio(
    "Similarity from",
    ["divergence", "cosine"],
    format_func={"divergence": "routing divergence", "cosine": "expert use (cosine)"}.__getitem__,
    horizontal=True,
    key="sharing_measure",
)
n_families = len({lang_facts(lang)["family"] or lang for lang in choice.langs})
clusters = controls[2].number_input(
    "Clusters",
    min_value=2,
    max_value=len(choice.langs),
    value=min(max(n_families, 2), len(choice.langs)),
    key=f"sharing_clusters_{run_id}",
    help="How many groups to cut the similarity tree into (default: the number of language families).",
)
top_n = controls[3].number_input(
    "Top experts",
    min_value=1,
    max_value=layout.n_experts,
    value=min(2 * layout.top_k, layout.n_experts),
    key=f"sharing_top_n_{run_id}",
    help="Two languages are linked by the experts that are among both their N most used ones in a layer.",
)

with explained(), st.spinner("Comparing languages ..."):
    found = analysis(
        choice.path, run_id, choice.version, "similarity", layers=band, ref=choice.ref,
        measure=measure, clusters=int(clusters), top_n=int(top_n),
    )  # fmt: skip
summary = found.summary
st.caption(
    f"Agreement with language families (adjusted Rand index, 1 = identical, 0 = chance): clusters "
    f"{summary['ari_clusters_vs_families']}, graph communities {summary['ari_communities_vs_families']}; "
    f"clusters vs scripts {summary['ari_clusters_vs_scripts']}."
)

groups = with_language_facts(table(found, "clusters"))
edges = table(found, "graph")
strongest = int(edges["shared_experts"].max()) if len(edges) else 0
min_shared = (
    st.slider(
        "Show links that share at least this many experts",
        min_value=1,
        max_value=strongest,
        value=max(1, strongest // 2),
        key=f"sharing_min_shared_{run_id}",
    )
    if strongest > 1
    else 1
)
st.altair_chart(
    sharing_graph(
        groups,
        edges[edges["shared_experts"] >= min_shared],
        title=f"Languages linked by the experts they share in layers {band[0]}-{band[1]}",
    ),
    width="stretch",
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
st.altair_chart(
    similarity_heatmap(
        matrix,
        order,
        title=f"How alike languages route in layers {band[0]}-{band[1]}, grouped by cluster",
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
    "An expert's share for a language is its part of the expert's use among the languages' k most used experts. "
    "Shared: every language's share is below thr. Exclusive: one language's share is above thr. "
    "Language-specific: a language uses it more than the reference language by more than tau."
)
knobs = st.columns(3)
k = knobs[0].slider(
    "k (experts kept per language)", 1, layout.n_experts, min(15, layout.n_experts), key=f"sharing_k_{run_id}"
)
thr = knobs[1].slider("thr (share threshold)", 0.05, 1.0, 0.4, 0.05, key="sharing_thr")
tau = knobs[2].slider("tau (frequency gap)", 0.0, 1.0, 0.3, 0.01, key="sharing_tau")
with explained():
    shared = analysis(choice.path, run_id, choice.version, "shared", layers=band, ref=choice.ref, k=k, thr=thr)
    specific = analysis(choice.path, run_id, choice.version, "experts", layers=band, ref=choice.ref, tau=tau)
for note in shared.notes:
    st.info(note, icon=":material/info:")
shared_tab, exclusive_tab, specific_tab = st.tabs(
    [
        f"Shared ({shared.summary['shared']})",
        f"Exclusive ({shared.summary['exclusive']})",
        f"Language-specific vs {lang_name(choice.ref)} ({specific.summary['specialised']})",
    ]
)
shared_tab.dataframe(table(shared, "shared"), hide_index=True, width="stretch")
exclusive_tab.dataframe(with_language_facts(table(shared, "exclusive")), hide_index=True, width="stretch")
specific_tab.dataframe(with_language_facts(table(specific, "specialised")), hide_index=True, width="stretch")
