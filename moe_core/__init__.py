"""Polyroute's engine: run a Mixture-of-Experts model, capture its routing, return numpy records.

The engine never touches the store or the UI: backends return `RoutingBatch` arrays and the caller
decides where they go (see docs/design.md, "The way a trace travels").
"""
