"""
Why a change to the proxies was refused, in the proxies' own terms: the
registry, the schema and the address checks raise these, and each caller
words them for its audience.  Only the API (L{echoapp._proxy.api}) maps
them to toxiproxy's HTTP statuses; the command line and C{echoapp.testing}
show the one line as it is.
"""

from __future__ import annotations

from typing import Any


class ProxyError(Exception):
    """A change refused; the text is one line."""


class Invalid(ProxyError, ValueError):
    """The request is wrong: a missing field, a value of the wrong kind, a toxic its stream cannot have."""


class NotFound(ProxyError, LookupError):
    """No proxy, or no toxic, of that name."""


class Exists(ProxyError):
    """A proxy, or a toxic, of that name exists already."""


class CannotListen(ProxyError):
    """The listen address cannot be had: taken, or not an address (toxiproxy finds out when it binds)."""


class NotAllowed(ProxyError):
    """
    The API's operator did not allow it: an address or an upstream the API
    may not give (L{echoapp._proxy.trust}); the command line may.
    """


class ListenNotAllowed(NotAllowed, CannotListen):
    """A listen address the API may not give: refused as toxiproxy refuses a listen it cannot have."""


class UpstreamNotAllowed(NotAllowed, Invalid):
    """An upstream the API may not give: refused as a request that is wrong."""


class NoRoom(CannotListen):
    """
    Another listener would leave the process no descriptor for a connection:
    refused as toxiproxy refuses a listen that fails with C{EMFILE}.
    """


class PopulateFailed(ProxyError):
    """
    A populate stopped at the entry that failed (C{cause}); the proxies
    before it (C{kept}) stay, as toxiproxy keeps them.
    """

    def __init__(self, cause: ProxyError, kept: list[Any]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.kept = kept
