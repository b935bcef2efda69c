"""Divergence (being built)."""

from polyroute.ui.frame import page

page("Divergence", "Being built.")
