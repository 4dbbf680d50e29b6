"""
Why a change to the proxies was refused, in the proxies' own terms: the
registry, the schema and the address checks raise these, and each caller
words them for its audience.  Only the API (L{echoapp._proxy.api}) maps
them to toxiproxy's HTTP statuses; the command line and C{echoapp.testing}
show the one line as it is.
"""

from __future__ import annotations


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
