"""
The naive Twisted greeter: LineOnlyReceiver, one write per line, no
protections; with --echo, the naive echo (each chunk written back).  With
--eager, one change: its connections are echoapp's eager-write transport
(write() sends at once when nothing is queued), to show how much of
echoapp's speed is the write path and how much its own code.
"""

import sys

from twisted.internet import reactor, tcp
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.basic import LineOnlyReceiver


class Greeter(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def connectionMade(self) -> None:
        self.transport.write(b"Welcome!\r\n")

    def lineReceived(self, line: bytes) -> None:
        self.transport.write(b"Hello, " + line + b"!\n")


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


Port = tcp.Port
if "--eager" in sys.argv[2:]:
    from echoapp._twisted import EagerTCPPort as Port  # type: ignore[assignment]
port = Port(
    int(sys.argv[1]),
    Factory.forProtocol(Echo if "--echo" in sys.argv[2:] else Greeter),
    4096,
    "127.0.0.1",
    reactor,
)
port.startListening()
reactor.run()
