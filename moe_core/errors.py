"""Errors the engine raises for bad input: each message names the problem and the fix.

Front ends (the CLI, the app) print the message as one line and, for the CLI, exit with code 2.
A message names the parameters it is about by their names in the code (`tau`), written `{tau}` in
its template; `str(error)` says the bare name, the CLI its flag (`named(flag)`: `--tau`), the app the
words of its control (polyroute/ui/words.py).
"""

import re
from collections.abc import Callable

_PARAMETER = re.compile(r"\{(\w+)\}")


def flag(name: str) -> str:
    """The command-line flag of a parameter the engine or an analysis names (`max_pairs` -> `--max-pairs`)."""
    return "--" + name.replace("_", "-")


class FixableError(Exception):
    """An error the user can fix, whose message template writes each parameter as `{name}` (in an
    f-string, `{{name}}`); `str(error)` says the bare name, `named(word)` another word for it."""

    def __init__(self, template: str = "") -> None:
        self.template = template
        super().__init__(self.named(lambda name: name))

    def named(self, word: Callable[[str], str]) -> str:
        """The message with each parameter said as `word(name)`."""
        return _PARAMETER.sub(lambda found: word(found.group(1)), self.template)


class PolyrouteError(FixableError):
    """Bad input or an unsupported situation that the user can fix; never a bug in Polyroute."""


class ParameterError(PolyrouteError):
    """A bad value of a named parameter (`{name}` in the message, as every PolyrouteError may)."""


class ModelError(PolyrouteError):
    """The model folder is missing, dense, or of an architecture the engine cannot capture."""


class CorpusError(PolyrouteError):
    """A corpus file is missing, empty, malformed, or names unknown languages."""


class LanguageError(PolyrouteError):
    """A language code that is not a FLORES-200 code (with suggestions)."""


class RemoteError(PolyrouteError):
    """A Polyroute server that cannot be reached, refuses a request, or stops mid-answer."""


class Cancelled(PolyrouteError):
    """The user stopped a job (the app's Cancel button): it ends at its next safe point, between
    batches or training steps, with what it stored kept whole and its run marked `cancelled`."""
