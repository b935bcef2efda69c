"""SQL console (being built)."""

from polyroute.ui.frame import page

page("SQL console", "Being built.")
