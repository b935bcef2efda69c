"""Expert sharing (being built)."""

from polyroute.ui.frame import page

page("Expert sharing", "Being built.")
