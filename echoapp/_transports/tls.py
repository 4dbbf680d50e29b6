"""
What echoapp's C{ssl:} listeners change in Twisted's TLS: clients that offer
ALPN are served.

Twisted's C{CertificateOptions} installs an ALPN select callback on every
context, which answers a client's offer with C{b""} when the server has no
protocol of its own to choose; pyOpenSSL takes C{b""} as "abort", so curl
(which offers C{h2} and C{http/1.1} by default), C{openssl s_client -alpn}
and Python's C{set_alpn_protocols} got a TLS internal-error alert from any
C{ssl:} listener.  echoapp's services speak one protocol and negotiate
none, so the callback is replaced by one that selects nothing and carries
on, as a server without ALPN does.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IListeningPort


def _select_none(connection: Any, offered: list[bytes]) -> Any:
    from OpenSSL import SSL

    return SSL.NO_OVERLAPPING_PROTOCOLS


def serve_alpn_clients(context_factory: Any) -> None:
    """
    Let clients that offer ALPN through C{context_factory}'s context (a
    Twisted C{CertificateOptions}, which every connection shares); any
    other context factory is left as it is.
    """
    get_context = getattr(context_factory, "getContext", None)
    if get_context is None:
        return
    get_context().set_alpn_select_callback(_select_none)


class ListensSSLOwnWay:
    """A reactor with a C{listenSSL} of its own (subclasses say how); everything else is the real one's."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


class ServesALPNClients(ListensSSLOwnWay):
    """
    The reactor an C{ssl:} endpoint listens with: its C{listenSSL} fixes
    the context (L{serve_alpn_clients}) first.
    """

    def listenSSL(
        self, port: int, factory: Any, contextFactory: Any, backlog: int = 50, interface: str = ""
    ) -> IListeningPort:
        serve_alpn_clients(contextFactory)
        return self._reactor.listenSSL(port, factory, contextFactory, backlog, interface)
