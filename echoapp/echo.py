"""
RFC 862 echo over TCP: every byte back, unchanged, in order.
"""

from __future__ import annotations

from twisted.internet.interfaces import IAddress, ITCPTransport
from twisted.internet.protocol import Factory, Protocol

from echoapp.limits import pause_reading_when_full


class Echo(Protocol):
    transport: ITCPTransport  # set by makeConnection, before any callback runs

    def connectionMade(self) -> None:
        pause_reading_when_full(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class EchoFactory(Factory):
    noisy = False

    def buildProtocol(self, addr: IAddress | None) -> Echo:
        protocol = Echo()
        protocol.factory = self
        return protocol
