"""Errors the engine raises for bad input: each message names the problem and the fix.

Front ends (the CLI, the app) print `str(error)` as one line and, for the CLI, exit with code 2.
"""


class PolyrouteError(Exception):
    """Bad input or an unsupported situation that the user can fix; never a bug in Polyroute."""


class ModelError(PolyrouteError):
    """The model folder is missing, dense, or of an architecture the engine cannot capture."""


class CorpusError(PolyrouteError):
    """A corpus file is missing, empty, malformed, or names unknown languages."""


class LanguageError(PolyrouteError):
    """A language code that is not a FLORES-200 code (with suggestions)."""


class RemoteError(PolyrouteError):
    """A Polyroute server that cannot be reached, refuses a request, or stops mid-answer."""
