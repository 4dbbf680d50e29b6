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
        """Started by the endpoint, once per attempt, as Twisted's endpoints start theirs."""

    def doStop(self) -> None:
        """Stopped by the endpoint."""


@implementer(IStreamClientEndpoint)
class NativeTCPClientEndpoint:
    """
    C{IStreamClientEndpoint} for C{HOST:PORT} on C{loop}: C{connect} fires
    with the connected protocol, fails with the loop's C{OSError} (refused,
    unreachable) or L{ConnectError} (timed out, or the factory refused), and
    cancelling it cancels the attempt.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, host: str, port: int, timeout: float = CONNECT_TIMEOUT
    ) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.timeout = timeout

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        capture = _Capture(protocolFactory)

        async def connecting() -> IProtocol:
            try:
                await asyncio.wait_for(
                    self.loop.create_connection(lambda: NativeConnection(capture), self.host, self.port),
                    self.timeout,
                )
            except asyncio.TimeoutError:  # the built-in TimeoutError from 3.11, not on 3.10
                raise ConnectError(f"{self.host}:{self.port}", "timed out") from None
            if capture.protocol is None:
                raise ConnectError(f"{self.host}:{self.port}", "the factory built no protocol")
            return capture.protocol

        protocolFactory.doStart()
        connected: Deferred[IProtocol] = Deferred.fromFuture(
            asyncio.ensure_future(connecting(), loop=self.loop)
        )

        def stopped(result: Any) -> Any:
            protocolFactory.doStop()
            return result

        return connected.addBoth(stopped)

    def __repr__(self) -> str:
        return f"<NativeTCPClientEndpoint {self.host}:{self.port}>"
