"""
A real loopback client that sends far more than it reads, for the
backpressure tests of both TCP services.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from tests.support import DEADLINE


def buffered(transport: Any) -> int:
    """Bytes a Twisted TCP transport holds in user space, waiting to be sent."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


class Recording(Factory):
    """Wraps a server factory to keep the protocols it builds."""

    def __init__(self, wrapped: Factory) -> None:
        self.wrapped = wrapped
        self.protocols: list[Protocol] = []

    def buildProtocol(self, addr: Any) -> Protocol | None:
        protocol = self.wrapped.buildProtocol(addr)
        if protocol is not None:
            self.protocols.append(protocol)
        return protocol


class FloodClient(Protocol):
    """Writes everything at once and does not read until told to."""

    def __init__(self, payload: bytes, expected: int) -> None:
        self.payload = payload
        self.expected = expected
        self.received = 0
        self.chunks: list[bytes] = []
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.pauseProducing()  # type: ignore[union-attr]
        self.transport.write(self.payload)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.chunks.append(data)
        if self.received >= self.expected and not self.done.called:
            self.done.callback(None)


async def wait_until(condition: Any, what: str) -> None:
    """Poll a condition, with a deadline so the test stops by itself."""
    for _ in range(int(DEADLINE / 0.01)):
        if condition():
            return
        await deferLater(reactor, 0.01)
    raise AssertionError(f"gave up waiting: {what}")


async def connect(port: int, client: Protocol) -> Any:
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    return await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)


async def assert_backpressure(test: Any, factory: Factory, payload: bytes, expected: bytes) -> None:
    """
    A client sends C{payload} and does not read: the server must stop
    reading while it holds about one write buffer, not the flood; once the
    client reads, it gets exactly C{expected}.
    """
    from twisted.internet.endpoints import serverFromString

    recording = Recording(factory)
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(recording)
    test.addCleanup(port.stopListening)
    client = FloodClient(payload, len(expected))
    await connect(port.getHost().port, client)
    await wait_until(lambda: recording.protocols, "the connection")
    server = recording.protocols[0].transport
    await wait_until(lambda: server not in reactor.getReaders(), "the server to stop reading")
    test.assertLess(buffered(server), 4 << 20)
    client.transport.resumeProducing()  # type: ignore[union-attr]
    await client.done
    test.assertTrue(b"".join(client.chunks) == expected, "every reply, in order")
    client.transport.loseConnection()  # type: ignore[union-attr]
