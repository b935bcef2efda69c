"""Page words for messages written for the command line: the engine's errors name the flag to
change (`lower --thr or widen --window`), and a page says the same with the name of its control.

`page_words` is the last step before a domain message reaches a page (`frame.explained`, notes of
analyses): a flag it knows becomes the words of the control that sets it, any other flag its bare
name in quotes, and a command line (`polyroute ...`) stays only inside code. `error_words` says an
error's parameters (`{budget}` in its template) as their flags first, so they take the same words.
"""

from __future__ import annotations

import re
from typing import Final

from moe_core.errors import FixableError, flag

# A flag, with the value it is shown with when that matters, and what a page calls it.
FLAG_WORDS: Final = {
    "--corpus mgsm:DIR": "a local copy of the MGSM benchmark (chosen as the corpus)",
    "--corpus mgsm:PATH": "a local copy of the MGSM benchmark (chosen as the corpus)",
    "--task-corpus": "the task's benchmark copy",
    "--save-logits": "“Keep router logits” (on the Collect page)",
    "--thr": "the share threshold (thr)",
    "--window": "the layer window",
    "--tau": "the frequency gap (tau)",
    "--k": "k (experts kept per language)",
    "--layers": "the band of layers",
    "--langs": "the languages",
    "--ref": "the reference language",
    "--ref-run": "the reference run",
    "--sweep": "the sweep",
    "--plan": "a steering plan",
    "--corpus": "the corpus",
    "--model": "the model",
    "--task": "the task",
    "--limit": "the number of sentences per language",
    "--batch-size": "the batch size",
    "--budget": "the number of experts to train",
    "--ratios": "the shares of shallow, middle and deep layers",
    "--strength": "the strength",
    "--token-level": "token-level entropy",
    "--backend": "where the model runs",
    "--token": "the server's access token",
    "--db": "the store file",
}
_KNOWN = re.compile("|".join(re.escape(flag) for flag in sorted(FLAG_WORDS, key=len, reverse=True)) + r"(?![\w-])")
_ANY_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")
_CODE = re.compile(r"(```.*?```|`[^`]*`)", re.DOTALL)


def page_words(message: str) -> str:
    """`message` with its command-line flags said in page words (code spans left as they are)."""
    parts = _CODE.split(message)
    for i in range(0, len(parts), 2):  # the even parts are outside code
        text = _KNOWN.sub(lambda found: FLAG_WORDS[found.group(0)], parts[i])
        parts[i] = _ANY_FLAG.sub(lambda found: f"“{found.group(1).replace('-', ' ')}”", text)
    # Inside code only a command for a terminal keeps its flags; elsewhere a bare flag in code goes too.
    for i in range(1, len(parts), 2):
        if not parts[i].strip("`").lstrip().startswith("polyroute"):
            parts[i] = page_words(parts[i].strip("`"))
    return "".join(parts)


def error_words(error: FixableError) -> str:
    """An error's message in page words: each parameter it names said as the control that sets it."""
    return page_words(error.named(flag))
