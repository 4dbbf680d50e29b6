"""The naive Twisted greeter: LineOnlyReceiver, one write per line, no protections."""

import sys

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver


class Greeter(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def connectionMade(self) -> None:
        self.transport.write(b"Welcome!\r\n")

    def lineReceived(self, line: bytes) -> None:
        self.transport.write(b"Hello, " + line + b"!\n")


reactor.listenTCP(int(sys.argv[1]), Factory.forProtocol(Greeter), backlog=4096, interface="127.0.0.1")
reactor.run()
