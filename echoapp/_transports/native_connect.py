"""
Native stream connections out: on a reactor that sits on an asyncio loop,
a TCP connection made by the loop's own C{create_connection} (uvloop's C
transport), served to the unchanged Twisted protocol by L{NativeConnection}
as native listeners are (L{echoapp._transports.native_tcp}).  Through
Twisted's TCP client a uvloop reactor drives the socket with C{add_reader}
callbacks and queues every write for a later turn: echoapp-proxy's upstream
side cost more than the client side and the forwarding together.
"""

from __future__ import annotations

import asyncio
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from zope.interface import implementer

from echoapp._transports.native_tcp import NativeConnection

CONNECT_TIMEOUT = 30.0  # seconds, as Twisted's TCP client endpoints wait


@implementer(IProtocolFactory)
class _Capture:
    """The factory as L{NativeConnection} asks it, keeping the protocol it built for the caller."""

    def __init__(self, factory: IProtocolFactory) -> None:
        self.factory = factory
        self.protocol: IProtocol | None = None

    def buildProtocol(self, addr: Any) -> IProtocol | None:
        self.protocol = self.factory.buildProtocol(addr)
        return self.protocol

    def doStart(self) -> None:
        """The caller's factory is started by the endpoint (L{TCPEndpoint.connect}), not here."""

    def doStop(self) -> None:
        """Stopped by the endpoint too."""


@implementer(IStreamClientEndpoint)
class TCPEndpoint:
    """
    C{IStreamClientEndpoint} for C{HOST:PORT}, made by C{driver} (a
    reactor, a loop) in L{attempt}: the caller's factory is started for
    each attempt and stopped once it ends, as Twisted's endpoints do, so
    that whatever makes the connection needs no start or stop of its own.
    """

    def __init__(self, driver: Any, host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> None:
        self.driver = driver
        self.host = host
        self.port = port
        self.timeout = timeout

    def attempt(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """One attempt: fires with the connected protocol, fails with the reason it did not connect."""
        raise NotImplementedError()

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        protocolFactory.doStart()

        def stopped(result: Any) -> Any:
            protocolFactory.doStop()
            return result

        return self.attempt(protocolFactory).addBoth(stopped)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}:{self.port}>"


class NativeTCPClientEndpoint(TCPEndpoint):
    """
    L{TCPEndpoint} on an asyncio loop (C{driver}): C{connect} fires with the
    connected protocol, fails with the loop's C{OSError} (refused,
    unreachable) or L{ConnectError} (timed out, or the factory refused),
    and cancelling it cancels the attempt.
    """

    driver: asyncio.AbstractEventLoop

    def attempt(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        capture = _Capture(protocolFactory)

        async def connecting() -> IProtocol:
            try:
                await asyncio.wait_for(
                    self.driver.create_connection(lambda: NativeConnection(capture), self.host, self.port),
                    self.timeout,
                )
            except asyncio.TimeoutError:  # the built-in TimeoutError from 3.11, not on 3.10
                raise ConnectError(f"{self.host}:{self.port}", "timed out") from None
            if capture.protocol is None:
                raise ConnectError(f"{self.host}:{self.port}", "the factory built no protocol")
            return capture.protocol

        return Deferred.fromFuture(asyncio.ensure_future(connecting(), loop=self.driver))
