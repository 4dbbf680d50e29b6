"""
The four modes of echoapp-client: C{tcp} (the greeter), C{udp} (the UDP
greeter), C{echo} (a stream through echo, with flow control both ways) and
C{raw} (send bytes, print everything until the server closes).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, error, stdio
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from echoapp._client.connect import LineConnection, Messages, connect, one_line, out
from echoapp._client.options import EXIT_CONNECTION, EXIT_TIMEOUT, ClientError, parse_host_port


async def run_tcp(reactor: Any, options: usage.Options) -> None:
    """
    The tutorial client: read the banner, send each message, print each
    reply; the exit word ends it.
    """
    connection = LineConnection(reactor, options["timeout"])
    await connect(reactor, options["connect"], connection, options["ca"])
    banner = await connection.line("banner")
    if banner is None:
        raise ClientError(
            EXIT_CONNECTION, "the server closed the connection before its banner" + connection.why_closed()
        )
    out(banner + b"\n")
    messages = Messages(reactor, options["messages"])
    while (message := await messages.next()) is not None:
        connection.send_line(message)
        reply = await connection.line("reply")
        if reply is None:
            raise ClientError(EXIT_CONNECTION, "the server closed the connection early")
        out(reply + b"\n")
    exit_word = options["exit-word"].encode("utf-8", "surrogateescape")
    connection.send_line(exit_word)
    while (farewell := await connection.line("close after the exit word")) is not None:
        out(farewell + b"\n")


class _UDPClient(DatagramProtocol):
    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.replies: defer.DeferredQueue[bytes] = defer.DeferredQueue()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if (addr[0], addr[1]) == self.server:
            self.replies.put(datagram)


async def run_udp(reactor: Any, options: usage.Options) -> None:
    """
    One datagram per message and one reply awaited for each, within the
    timeout.
    """
    host, port = parse_host_port(options["to"])
    try:
        address = await reactor.resolve(host) if not _is_ipv6(host) else host
    except error.DNSLookupError:
        raise ClientError(EXIT_CONNECTION, f"unknown host {host!r}") from None
    client = _UDPClient((address, port))
    listening = reactor.listenUDP(0, client, interface="::" if _is_ipv6(address) else "")
    try:
        messages = Messages(reactor, options["messages"], stop=b"bye")
        while (message := await messages.next()) is not None:
            out(await _exchange(reactor, listening, client, message, options) + b"\n")
    finally:
        await listening.stopListening()


def _is_ipv6(host: str) -> bool:
    return ":" in host


async def _exchange(
    reactor: Any, listening: Any, client: _UDPClient, message: bytes, options: usage.Options
) -> bytes:
    for _ in range(int(options["retries"]) + 1):
        try:
            listening.write(message, client.server)
        except Exception as problem:
            raise ClientError(
                EXIT_CONNECTION, f"cannot send to {options['to']}: {one_line(problem)}"
            ) from None
        waiting = client.replies.get()
        waiting.addTimeout(options["timeout"], reactor)
        try:
            return await waiting
        except defer.TimeoutError:
            continue
    raise ClientError(
        EXIT_TIMEOUT, f"no reply from {options['to']} after {int(options['retries']) + 1} tries"
    )


class _Pipe(Protocol):
    """One side of echo mode: what arrives is written to the other side."""

    def __init__(self) -> None:
        self.peer: Any = None
        self.done: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.peer.write(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if not self.done.called:
            self.done.callback(None)


@implementer(IHalfCloseableProtocol)
class _StdinPipe(_Pipe):
    def readConnectionLost(self) -> None:
        """
        The server half-closed: nothing more will come; finish once our own
        messages are sent.
        """
        # End of input: half-close, so the server still sends back the rest
        # while standard output stays open for it.
        self.peer.loseWriteConnection()

    def writeConnectionLost(self) -> None:
        """Standard output went away; the connection's end follows."""


async def run_echo(reactor: Any, options: usage.Options) -> None:
    """
    Standard input to the server and back to standard output, with flow
    control both ways and a half-close at the end of input.
    """
    network = _Pipe()
    transport = (await connect(reactor, options["connect"], network)).transport
    local = _StdinPipe()
    terminal = stdio.StandardIO(local, reactor=reactor)
    network.peer, local.peer = terminal, transport
    # Flow control both ways: neither side reads faster than the other writes.
    transport.registerProducer(terminal, True)
    terminal.registerProducer(transport, True)
    await network.done
    terminal.unregisterProducer()
    terminal.loseConnection()
    await local.done  # standard output flushed and closed


class _Collect(Protocol):
    def __init__(self) -> None:
        self.closed: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        out(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed.callback(None)


async def run_raw(reactor: Any, options: usage.Options) -> None:
    """
    Send the given bytes, print whatever comes back until the server closes
    or the timeout passes.
    """
    collector = _Collect()
    connected = await connect(reactor, options["connect"], collector)
    connected.transport.write(options["data"])
    closed = collector.closed
    closed.addTimeout(options["timeout"], reactor)
    try:
        await closed
    except defer.TimeoutError:
        raise ClientError(
            EXIT_TIMEOUT, f"the server did not close within {options['timeout']:g} seconds"
        ) from None


MODES = {"tcp": run_tcp, "udp": run_udp, "echo": run_echo, "raw": run_raw}
