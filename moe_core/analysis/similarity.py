"""Language structure (docs/methods.md, "Language structure"): similarity of languages' routing in a
layer band, hierarchical clustering and its agreement with language families, and the
expert-sharing graph with its communities.
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform
from scipy.special import comb

from moe_core.analysis.rise import top_n_sets


def divergence_similarity(n_items: np.ndarray, d_sums: np.ndarray, band: np.ndarray) -> np.ndarray:
    """1 - mean D(q_i^a, q_i^b) over the items both languages have and the band's layers, from
    per-pair sums (`moe_core.analysis.summaries.pair_sums`).

    n_items: [L, L] aligned items of each pair; d_sums: [L, L, Y] sums of D over them; band: [Y]
    bool. Returns [L, L] symmetric, 1 on the diagonal; NaN for two languages without a common item.
    """
    band = np.asarray(band, dtype=bool)
    cells = n_items * band.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        result = np.where(cells > 0, 1 - d_sums[:, :, band].sum(axis=-1) / cells, np.nan)
    np.fill_diagonal(result, 1.0)
    return result


def cosine_similarity(freq: np.ndarray, band: np.ndarray) -> np.ndarray:
    """Cosine of the languages' activation frequencies over the band's layers, flattened.

    freq: [L, Y, E]; band: [Y] bool. Returns [L, L]; 0 for a language that never routes there.
    """
    flat = freq[:, np.asarray(band, dtype=bool)].reshape(freq.shape[0], -1).astype(np.float64)
    norms = np.linalg.norm(flat, axis=1)
    unit = flat / np.where(norms > 0, norms, 1)[:, None]
    return unit @ unit.T


def cluster(similarity: np.ndarray, n_clusters: int) -> np.ndarray:
    """Average-linkage clustering on distance 1 - similarity, cut into n clusters. [L, L] -> [L] labels 1..n."""
    distance = np.clip(1 - np.asarray(similarity, dtype=np.float64), 0, None)
    np.fill_diagonal(distance, 0)
    if len(distance) < 2:
        return np.ones(len(distance), dtype=int)
    tree = linkage(squareform((distance + distance.T) / 2, checks=False), method="average")
    return fcluster(tree, t=n_clusters, criterion="maxclust")


def adjusted_rand_index(labels_a: Sequence[object] | np.ndarray, labels_b: Sequence[object] | np.ndarray) -> float:
    """Hubert and Arabie's adjusted Rand index of two labellings of the same items: 1 = identical
    partitions, about 0 = chance. Two trivial partitions that agree score 1."""
    _, a = np.unique(np.asarray(labels_a, dtype=str), return_inverse=True)
    _, b = np.unique(np.asarray(labels_b, dtype=str), return_inverse=True)
    table = np.zeros((a.max() + 1, b.max() + 1), dtype=np.int64)
    np.add.at(table, (a, b), 1)
    pairs = comb(table, 2).sum()
    rows, columns = comb(table.sum(axis=1), 2).sum(), comb(table.sum(axis=0), 2).sum()
    expected = rows * columns / comb(len(a), 2) if len(a) > 1 else 0.0
    maximum = (rows + columns) / 2
    if maximum == expected:
        return 1.0
    return float((pairs - expected) / (maximum - expected))


def sharing_graph(
    freq: np.ndarray, langs: Sequence[str], band: np.ndarray, top_n: int, *, weight: str = "count"
) -> nx.Graph:
    """Languages linked by the top-N experts they share in the band's layers.

    freq: [L, Y, E]; band: [Y] bool. Edge weight: the number of shared (layer, expert) pairs
    ("count") or their Jaccard overlap ("jaccard"); pairs that share nothing get no edge.
    """
    if weight not in ("count", "jaccard"):
        raise ValueError(f"weight must be count or jaccard, not {weight!r}")
    sets = top_n_sets(freq[:, np.asarray(band, dtype=bool)], top_n).reshape(len(langs), -1)
    graph = nx.Graph()
    graph.add_nodes_from(langs)
    for a in range(len(langs)):
        for b in range(a + 1, len(langs)):
            common = int((sets[a] & sets[b]).sum())
            if common:
                value = common if weight == "count" else common / int((sets[a] | sets[b]).sum())
                graph.add_edge(langs[a], langs[b], weight=value, shared=common)
    return graph


def communities(graph: nx.Graph, *, seed: int = 0) -> list[set[str]]:
    """Louvain communities of the weighted graph (seeded), largest first."""
    found = nx.community.louvain_communities(graph, weight="weight", seed=seed)
    return sorted((set(group) for group in found), key=lambda group: (-len(group), sorted(group)))
