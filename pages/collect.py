"""Collect (being built)."""

from polyroute.ui.frame import page

page("Collect", "Being built.")
