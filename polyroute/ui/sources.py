"""The routing-distribution choice of the Divergence and Expert sharing pages: soft, weight or hard
(docs/methods.md, "Routing distributions"), offering only those the run can give, kept in the URL
like the pages' other choices."""

from __future__ import annotations

from streamlit.delta_generator import DeltaGenerator

from moe_core.analysis.summaries import SOURCES
from polyroute.run_data import SOURCE_WORDS
from polyroute.ui.data import run_sources
from polyroute.ui.frame import RunChoice, among, url_widget

# One line on each distribution, in the words of the glossary's "Routing distribution".
EXPLANATIONS = {
    "soft": "Soft: the router's probabilities for every expert, averaged over the sentence's tokens.",
    "weight": "Weight: the weights the router gave the experts it chose, averaged over the sentence's tokens "
    "(the default of the 2510.04694 authors' code).",
    "hard": "Hard: only which experts each token was sent to, each choice counted alike.",
}


def choose_source(place: DeltaGenerator, choice: RunChoice, key: str, *, unused_because: str | None = None) -> str:
    """A radio of the distributions the run can give (default soft where it has it, else hard), with
    a line on the chosen one and on those the run cannot give. `unused_because`: the page's current
    view reads no distribution; the radio is shown disabled with that reason."""
    available = list(run_sources(choice.path, choice.run.run_id, choice.version))
    default = "soft" if "soft" in available else "hard"
    source = place.radio(
        "Routing distribution",
        available,
        horizontal=True,
        disabled=unused_because is not None,
        help="What the languages' routing is compared on. " + " ".join(EXPLANATIONS.values()),
        **url_widget("source", key, default, fix=among(available)),
    )
    lines = [unused_because] if unused_because is not None else [EXPLANATIONS[source]]
    missing = [option for option in SOURCES if option not in available]
    if missing:
        kept = " or ".join(SOURCE_WORDS[option] for option in missing)
        lines.append(f"Not offered: {' and '.join(missing)}, because this run kept no {kept}.")
    place.caption(" ".join(lines))
    return str(source)
