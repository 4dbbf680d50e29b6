"""
Which stream transport echoapp's listeners use on Twisted's own reactors
(epoll, poll, select): Twisted's, with eager writes (L{EagerWrites}).  The
endpoints Twisted parses from descriptions call C{listenTCP}, C{listenSSL}
and C{listenUNIX} on the reactor they were given; L{eager_reactor} gives
them one whose listeners make eager ports and which passes everything else
to the real reactor.

Should a Twisted release change what eager writes rely on, one line says
so and the listeners use Twisted's own transport: slower, never wrong.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.internet.posixbase import PosixReactorBase
from twisted.logger import Logger

from echoapp._twisted import (
    EagerTCPPort,
    EagerUNIXPort,
    adopt_eager_port,
    asyncio_loop,
    eager_writes_problem,
    mark_tls,
)

try:
    from twisted.protocols.tls import TLSMemoryBIOFactory
except ImportError:  # no pyOpenSSL: Twisted's endpoint parser refuses ssl: first
    TLSMemoryBIOFactory = None  # type: ignore[assignment,misc]

log = Logger(namespace="echoapp.eager")

_checked: list[str | None] = []


def eager_problem() -> str | None:
    """The seam's check, made once per process; a problem is logged once."""
    if not _checked:
        _checked.append(eager_writes_problem())
        if _checked[0] is not None:
            log.warn(
                "eager writes are off, Twisted's own transport is used: {problem}",
                problem=_checked[0],
            )
    return _checked[0]


class EagerListening:
    """
    A reactor whose stream listeners write eagerly; every other attribute
    is the real reactor's.
    """

    def __init__(self, reactor: PosixReactorBase) -> None:
        self.reactor = reactor

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reactor, name)

    def listenTCP(
        self, port: int, factory: IProtocolFactory, backlog: int = 50, interface: str = ""
    ) -> EagerTCPPort:
        listening = EagerTCPPort(port, factory, backlog, interface, self.reactor)
        listening.startListening()
        return listening

    def listenSSL(
        self,
        port: int,
        factory: IProtocolFactory,
        contextFactory: Any,
        backlog: int = 50,
        interface: str = "",
    ) -> IListeningPort:
        """As Twisted's own C{listenSSL}: TLS in memory over a TCP port."""
        tls = TLSMemoryBIOFactory(contextFactory, False, factory)
        return mark_tls(self.listenTCP(port, tls, backlog, interface))

    def listenUNIX(
        self, address: Any, factory: IProtocolFactory, backlog: int = 50, mode: int = 0o666, wantPID: int = 0
    ) -> IListeningPort:
        listening = EagerUNIXPort(address, factory, backlog, mode, self.reactor, wantPID)
        listening.startListening()
        return listening

    def adoptStreamPort(self, fileDescriptor: int, addressFamily: int, factory: IProtocolFactory) -> Any:
        if addressFamily == socket.AF_UNIX:
            return self.reactor.adoptStreamPort(fileDescriptor, addressFamily, factory)
        return adopt_eager_port(self.reactor, fileDescriptor, addressFamily, factory)


def eager_reactor(reactor: Any) -> Any:
    """
    C{reactor}, wrapped so its stream listeners write eagerly when it is one
    of Twisted's own (the asyncio reactor serves through
    L{echoapp._transports.native_tcp} instead), and eager writes work with this Twisted.
    """
    if not isinstance(reactor, PosixReactorBase) or asyncio_loop(reactor) is not None:
        return reactor
    if eager_problem() is not None:
        return reactor
    return EagerListening(reactor)
