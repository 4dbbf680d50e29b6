"""
Which stream transport echoapp's listeners use on Twisted's own reactors
(epoll, poll, select): Twisted's, with eager writes (L{echoapp._twisted.EagerWrites}).  The
endpoints Twisted parses from descriptions call C{listenTCP}, C{listenSSL}
and C{listenUNIX} on the reactor they were given; L{eager_reactor} gives
them one whose listeners make eager ports and which passes everything else
to the real reactor.

Should a Twisted release change what eager writes rely on, one line says
so and the listeners use Twisted's own transport: slower, never wrong.

An operator who meets a problem in eager writes switches them off for the
whole process, without changing reactors: C{--no-eager-writes} on every
stream plugin, or C{ECHOAPP_EAGER_WRITES=0} in the environment (for C{.tac}
files).  Eager writes are a property of the process's transports, so the
switch is too: either way they are off for every listener it starts.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.internet.posixbase import PosixReactorBase
from twisted.logger import Logger

from echoapp._process import PROCESS
from echoapp._transports.polled import polled
from echoapp._twisted import (
    EagerTCPPort,
    EagerUNIXPort,
    adopt_eager_port,
    asyncio_loop,
    eager_writes_problem,
    fall_back,
    mark_tls,
    on_asyncio,
)

try:
    from twisted.protocols.tls import TLSMemoryBIOFactory
except ImportError:  # no pyOpenSSL: Twisted's endpoint parser refuses ssl: first
    TLSMemoryBIOFactory = None  # type: ignore[assignment,misc]

log = Logger(namespace="echoapp.eager")

ENVIRONMENT = "ECHOAPP_EAGER_WRITES"
OFF = frozenset({"0", "off", "no", "false"})
ON = frozenset({"", "1", "on", "yes", "true"})


def switch_off(why: str) -> None:
    """Eager writes off for every listener this process starts from now on: C{why} is the option."""
    if why not in PROCESS.eager_off:
        PROCESS.eager_off.append(why)


def switched_off() -> str | None:
    """
    What switched eager writes off (C{--no-eager-writes} or the environment
    variable), or L{None} while they are on.  A value of the variable that
    is neither on nor off is said once, and leaves them on.
    """
    if PROCESS.eager_off:
        return PROCESS.eager_off[0]
    value = os.environ.get(ENVIRONMENT, "").strip().lower()
    if value in OFF:
        return f"{ENVIRONMENT}={os.environ[ENVIRONMENT]}"
    if value not in ON and value not in PROCESS.eager_said:
        PROCESS.eager_said.add(value)
        log.warn(
            "{name}={value!r} is neither 0 nor 1: eager writes stay on (0, off, no or false turn them off)",
            name=ENVIRONMENT,
            value=os.environ[ENVIRONMENT],
        )
    return None


def eager_problem() -> str | None:
    """The seam's check, made once per process; a problem is logged once."""
    if not PROCESS.eager_check:
        PROCESS.eager_check.append(eager_writes_problem())
        if PROCESS.eager_check[0] is not None:
            fall_back(
                "eager_writes",
                PROCESS.eager_check[0],
                "eager writes are off and Twisted's own transport is used",
            )
    return PROCESS.eager_check[0]


class EagerListening:
    """
    A reactor whose stream listeners write eagerly, their descriptors on
    one shared poll (L{echoapp._transports.polled}); every other attribute
    is the real reactor's.
    """

    def __init__(self, reactor: PosixReactorBase) -> None:
        self.reactor = reactor

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reactor, name)

    def listenTCP(
        self, port: int, factory: IProtocolFactory, backlog: int = 50, interface: str = ""
    ) -> EagerTCPPort:
        listening = EagerTCPPort(port, factory, backlog, interface, polled(self.reactor))
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
        listening = EagerUNIXPort(address, factory, backlog, mode, polled(self.reactor), wantPID)
        listening.startListening()
        return listening

    def adoptStreamPort(self, fileDescriptor: int, addressFamily: int, factory: IProtocolFactory) -> Any:
        if addressFamily == socket.AF_UNIX:
            return self.reactor.adoptStreamPort(fileDescriptor, addressFamily, factory)
        return adopt_eager_port(polled(self.reactor), fileDescriptor, addressFamily, factory)


def eager_reactor(reactor: Any) -> Any:
    """
    C{reactor}, wrapped so its stream listeners write eagerly when it is one
    of Twisted's own (the asyncio reactor serves through
    L{echoapp._transports.native_tcp} instead), eager writes work with this
    Twisted, and nothing switched them off (L{switched_off}).
    """
    if not isinstance(reactor, PosixReactorBase) or asyncio_loop(reactor) is not None or on_asyncio(reactor):
        return reactor
    why = switched_off()
    if why is not None:
        if why not in PROCESS.eager_said:
            PROCESS.eager_said.add(why)
            log.info("eager writes are off ({why}): Twisted's own transport is used", why=why)
        return reactor
    if eager_problem() is not None:
        return reactor
    return EagerListening(reactor)
