"""Errors the engine raises for bad input: each message names the problem and the fix.

Front ends (the CLI, the app) print `str(error)` as one line and, for the CLI, exit with code 2.
A `ParameterError` names the parameters it is about by their names in the code (`tau`); the CLI
says them as its flags (`--tau`) with `named`.
"""

import re
from collections.abc import Callable

_PARAMETER = re.compile(r"\{(\w+)\}")


class PolyrouteError(Exception):
    """Bad input or an unsupported situation that the user can fix; never a bug in Polyroute."""


class ParameterError(PolyrouteError):
    """A bad value of a named parameter. The message template writes each parameter as `{name}`
    (in an f-string, `{{name}}`); `str(error)` says the bare name, `named(word)` another word for it."""

    def __init__(self, template: str) -> None:
        self.template = template
        super().__init__(self.named(lambda name: name))

    def named(self, word: Callable[[str], str]) -> str:
        """The message with each parameter said as `word(name)`."""
        return _PARAMETER.sub(lambda found: word(found.group(1)), self.template)


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
