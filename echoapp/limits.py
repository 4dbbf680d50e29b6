"""
Protections that keep one client from costing the server more than its share.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer


@implementer(IPushProducer)
class ReadPauser:
    """
    Backpressure for a protocol that writes in answer to what it reads.

    Registered as the streaming producer of its own transport: when the
    transport's write buffer fills (a client that sends but never reads), the
    transport asks us to pause and we stop reading from the socket, so the
    kernel's buffers, not the server's memory, absorb the rest.
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def pauseProducing(self) -> None:
        self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._transport.resumeProducing()

    def stopProducing(self) -> None:
        """The connection is going away; there is nothing of ours to stop."""


def pause_reading_when_full(transport: Any) -> None:
    """
    C{transport} is any transport that is both a consumer and a push
    producer (TCP, UNIX, TLS, the test transports); no one interface says so.
    """
    transport.registerProducer(ReadPauser(transport), True)
