"""
RFC 862 echo over TCP: every byte back, unchanged, in order.
"""

from __future__ import annotations

from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from echoapp.limits import pause_reading_when_full


@implementer(IHalfCloseableProtocol)
class Echo(Protocol):
    """
    Half-close aware: a client that sends everything and then shuts down
    its side (C{nc -N}, C{shutdown(SHUT_WR)}) still gets every byte back
    before the connection closes.
    """

    transport: ITCPTransport  # set by makeConnection, before any callback runs

    def connectionMade(self) -> None:
        pause_reading_when_full(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """The client stopped reading; the close that follows ends us."""


class EchoFactory(Factory):
    noisy = False

    def buildProtocol(self, addr: IAddress | None) -> Echo:
        protocol = Echo()
        protocol.factory = self
        return protocol
