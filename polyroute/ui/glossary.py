"""The glossary: every term, letter and sign the pages use, in plain words (pages/glossary.py shows
it; each page's "What am I looking at?" links to it)."""

from __future__ import annotations

from typing import Final

# Term -> what it means. Grouped for the page; each group is (heading, {term: meaning}).
GLOSSARY: Final = (
    (
        "The model",
        {
            "Mixture of Experts (MoE)": "A model whose layers hold many small networks (experts); a router sends "
            "each token to a few of them, so only part of the model works on each token.",
            "Expert": "One of the small networks in an MoE layer, named by its number (expert 0, 1, ...).",
            "Router": "The part of an MoE layer that scores every expert for a token and picks the best few.",
            "MoE layer": "A decoder layer with experts. Layers are counted from 0, from the input up.",
            "Top-k": "How many experts the router picks for each token in each MoE layer (k of the model).",
            "Shared expert": "An expert some models run for every token, beside the routed ones; Polyroute "
            "studies the routed ones.",
            "Routing weight": "How much of a token goes to each of its chosen experts; the weights of one token "
            "add up to 1.",
        },
    ),
    (
        "Languages",
        {
            "Language code": "`eng_Latn`: the language (ISO 639-3, `eng` = English) and its script "
            "(ISO 15924, `Latn` = Latin), as in FLORES-200.",
            "Script codes": "Latn Latin, Cyrl Cyrillic, Arab Arabic, Deva Devanagari, Beng Bengali, Hans "
            "simplified Chinese, Hant traditional Chinese, Jpan Japanese, Hang Korean Hangul, Grek Greek, Hebr "
            "Hebrew, Ethi Ethiopic, Thai Thai, Taml Tamil, Telu Telugu, Knda Kannada, Mlym Malayalam, Gujr "
            "Gujarati, Guru Gurmukhi, Orya Odia, Sinh Sinhala, Mymr Myanmar, Khmr Khmer, Laoo Lao, Tibt Tibetan, "
            "Geor Georgian, Armn Armenian, Tfng Tifinagh, Olck Ol Chiki.",
            "Language family": "Languages that descend from one ancestor (Indo-European, Sino-Tibetan, "
            "Dravidian, ...). Each family, script and resource class keeps one colour on every page.",
            "Resource class": "How much text and tooling a language has, from 0 (left behind) to 5 (winners), "
            "after Joshi et al. (2020).",
            "Reference language": "The language every other one is compared with (chosen in the sidebar).",
            "Parallel corpus": "The same sentences in many languages: an item means the same in each.",
        },
    ),
    (
        "Comparing routing",
        {
            "Divergence": "How differently two languages route the same sentence in one layer, from 0 (the same "
            "experts with the same weights) to 1 (nothing in common): the Jensen-Shannon divergence of their "
            "expert use, divided by what their entropies leave possible.",
            "Routing distribution (soft, weight, hard)": "What divergence and entropy compare, per sentence and "
            "layer. Soft: the router's probabilities for every expert, averaged over the sentence's tokens. "
            "Weight: the weights the router gave the experts it chose, each token's adding up to 1, averaged over "
            "the sentence (the default of the 2510.04694 authors' code). Hard: only which experts each token was "
            "sent to, each choice counted alike. A run that kept only the experts' numbers (id-only) gives hard "
            "alone.",
            "U-shape": "Divergence is usually high in the first layers (each script has its own tokens) and the "
            "last ones (each language writes its own words), and lower in between, where a model shares "
            "meaning across languages: plotted per layer, a U.",
            "Middle band": "The layers in the middle of the U, where languages share experts the most; the "
            "pages average over it, and steering and adaptation act there by default.",
            "Normalised entropy": "How spread out a language's expert use is in a layer: the entropy divided by "
            "its largest possible value, log(number of experts). 1 = every expert equally, 0 = always one.",
            "Jaccard": "The overlap of two sets: what they share divided by what either holds (0 = nothing in "
            "common, 1 = the same). Consistency is the Jaccard of two tokens' experts.",
            "Cosine similarity": "How alike two languages' expert use is as directions, from 0 to 1.",
            "Cluster": "A group of languages cut from a tree of their similarities.",
            "Community": "A group of languages that share more experts with each other than with the rest, "
            "found in the sharing graph.",
            "ARI (adjusted Rand index)": "How well two groupings agree (clusters and families): 1 = the same "
            "groups, 0 = no better than chance.",
        },
    ),
    (
        "Experts of a language",
        {
            "k": "How many of each language's most used experts per layer are kept when looking for shared and "
            "exclusive experts.",
            "thr (share threshold)": "An expert is exclusive to a language when that language's share of its use "
            "is above thr, and shared when every language's share is below it.",
            "tau (frequency gap)": "An expert is specific to a language when the language uses it more than the "
            "reference language does by more than tau.",
            "Specificity": "How much more the target language uses an expert than the languages on average.",
            "Overlap": "How evenly all languages use an expert (1 = every language alike).",
            "Alpha": "How much an expert's use by the target language adds to its specificity, and its use by "
            "all to its overlap, when choosing experts to train (RISE uses 10).",
            "RISE": "A way to adapt a model to one language by training only the experts that serve it.",
        },
    ),
    (
        "Steering and evaluation",
        {
            "Steering": "Pushing the router toward (or away from) chosen experts while the model writes.",
            "Strength (lambda)": "How hard steering pushes: 0 leaves the model as it is.",
            "Plan": "Which experts to push, in which layers, and how: a file the Steering, Evaluate and Collect "
            "pages read and write.",
            "Held-out loss": "How surprised the model is by text it did not train on (lower is better); "
            "perplexity is its exponential.",
        },
    ),
    (
        "Signs in the token grids",
        {
            "␣": "A space at the start or inside a token (the tokenizer keeps spaces inside tokens).",
            "…": "A token with no text of its own: a piece of a character split into bytes, completed by the "
            "next token.",
            "⏎ and ⇥": "A line break and a tab inside a token.",
            "Token": "A piece of text the model reads in one step: a word, part of a word or a few bytes.",
        },
    ),
)
