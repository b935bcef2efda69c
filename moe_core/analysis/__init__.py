"""Pure numpy analyses of stored routing (docs/methods.md): each function takes arrays and returns arrays.

- `divergence`: entropy and (entropy-normalised) Jensen-Shannon divergence from a reference language
- `routing`: activation frequencies, routing entropy and within-sequence consistency
- `experts`: Delta-tau specialised experts, shared and exclusive experts, reliance on them
- `rise`: RISE specificity and overlap scores, depth zones, the budgeted subnetwork, routing isolation
- `similarity`: language similarity, clustering against families, the expert-sharing graph
- `correlation`: divergence against task scores

Shapes use L languages, I aligned items, S sequences, N tokens, Y MoE layers, E experts, k top-k.
Caching, and reading the store, belong to the caller (`polyroute.analyses`).
"""
