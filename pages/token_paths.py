"""Token paths (being built)."""

from polyroute.ui.frame import page

page("Token paths", "Being built.")
