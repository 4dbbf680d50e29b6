"""
RFC 862 echo over TCP: every byte back, unchanged, in order.
"""

from __future__ import annotations

from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import implementer

from echoapp._limits.guard import GuardedFactory, GuardedProtocol


@implementer(IHalfCloseableProtocol)
class Echo(GuardedProtocol):
    """
    Half-close aware: a client that sends everything and then shuts down
    its side (C{nc -N}, C{shutdown(SHUT_WR)}) still gets every byte back
    before the connection closes.  It says nothing of its own on a timeout
    or at shutdown: any byte it sent would not be an echo.
    """

    def dataReceived(self, data: bytes) -> None:
        if self._flow_controlled:
            self._last_seen = self.factory.now()  # what activity() does once set up, without the call
        else:
            self.activity()
        self.transport.write(data)
        stats = self.stats
        stats.messages += 1
        stats.bytes_in += len(data)
        stats.bytes_out += len(data)

    def readConnectionLost(self) -> None:
        """
        The client sent its FIN: what is already echoed goes out, then the
        connection closes, as RFC 862 clients expect.
        """
        self.close()

    def writeConnectionLost(self) -> None:
        """The client stopped reading; the close that follows ends us."""


class EchoFactory(GuardedFactory):
    """
    Builds RFC 862 echo connections under the service's limits
    (L{GuardedFactory}).
    """

    def make_protocol(self) -> Echo:
        """A new echo connection: echo keeps no configuration of its own."""
        return Echo()
