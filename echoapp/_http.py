"""
A bounded HTTP site for the ports an operator talks to (the metrics port,
echoapp-proxy's API): twisted.web's L{Site}, held to what a few trusted
clients need, so that clients who connect and wait, trickle, pipeline
without reading or send large bodies cannot take the process's descriptors
or keep the operator out.

The rules, each a reason twisted.web alone does not give:
  - at most C{max_connections} connections, each counted against the
    process's descriptor ceiling (L{HoldsDescriptor}); past the cap
    C{probe_slots} more may each make one request the site allows a
    probe (C{/healthz}, or the operator's own call);
  - a request must arrive whole (head and body) within C{head_timeout}:
    twisted.web's own timeout starts again with every byte, so one header
    byte every 20 s held a connection for ever;
  - when every slot is taken, a newcomer displaces the connection that has
    waited longest for a request, once it has waited C{grace}: idle
    keep-alive and slow clients cannot keep a probe or an operator out for
    longer than that, and the newcomer, which sends its request at once,
    is not displaced before it is answered;
  - a body over C{max_body} is answered 413 before any of it is read;
  - a connection makes at most C{max_requests} requests, and the next
    pipelined request is not read while the client does not read answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from echoapp._limits.descriptors import DESCRIPTORS, HoldsDescriptor
from echoapp._twisted import global_reactor


@dataclass(frozen=True)
class SiteLimits:
    """What one bounded site allows; see the module's docstring for why each exists."""

    max_connections: int = 64
    probe_slots: int = 4
    max_requests: int = 100
    head_timeout: float = 10.0
    max_body: int = 0  # bytes; 0: the site takes no bodies
    grace: float = 1.0  # seconds a waiting connection is safe from being displaced


def payload_too_large(content_type: bytes, body: bytes) -> bytes:
    """A whole 413 answer that closes the connection, written before any of the body is read."""
    return (
        b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: " + content_type + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )


# A request line or header over the line receiver's bound, as Go's server answers it.
HEADER_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n\r\n431 Request Header Fields Too Large"
)


class BoundedRequest(Request):
    """
    A request whose body stops being kept past the site's C{max_body} (a
    chunked flood is cut, not spooled), and that leaves out twisted.web's
    C{Server} header where the site says so.
    """

    _received = 0

    def handleContentChunk(self, data: bytes) -> None:
        self._received += len(data)
        channel: Any = self.channel
        if channel is not None and self._received > channel.site.bounds.max_body:
            channel.refuse_body()
            return
        super().handleContentChunk(data)

    def write(self, data: bytes) -> None:
        channel: Any = self.channel
        if not self.startedWriting and channel is not None and not channel.site.server_header:
            self.responseHeaders.removeHeader(b"server")
        super().write(data)


class BoundedChannel(HoldsDescriptor, HTTPChannel):
    """One connection to a L{BoundedSite}, held to the site's limits."""

    site: BoundedSite
    _head_deadline: IDelayedCall | None = None
    # Past the cap (the probe slots): one request, then closed.
    probe_only = False
    # The transport's buffer is full (it paused us as its producer).
    _transport_full = False
    # A request that finished while the transport was full: the next
    # pipelined one is not read until the client has taken the answer.
    _finished_while_full: Any = None
    _requests = 0

    def connectionMade(self) -> None:
        self.hold_descriptor()
        super().connectionMade()
        self._await_request()

    def _await_request(self) -> None:
        site = self.site
        self._head_deadline = site.clock.callLater(site.bounds.head_timeout, self.cut)
        site.waiting.pop(self, None)
        site.waiting[self] = site.clock.seconds()

    def cut(self) -> None:
        """Too slow, or displaced: aborted, its descriptor given back as it closes."""
        self._stop_waiting()
        self.site.channels.discard(self)
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()

    def _stop_waiting(self) -> None:
        if self._head_deadline is not None and self._head_deadline.active():
            self._head_deadline.cancel()
        self._head_deadline = None
        self.site.waiting.pop(self, None)

    def refuse_body(self) -> None:
        """413, written before the body is read; reads stop here."""
        self._stop_waiting()
        transport: Any = self.transport
        if transport is not None and not transport.disconnecting:
            transport.write(self.site.too_large)
            transport.loseConnection()

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        A request line or a header over C{MAX_LENGTH} (16 KiB): a 431, as Go's
        server answers, rather than the line receiver's close without a word.
        """
        self._stop_waiting()
        transport: Any = self.transport
        if transport is not None and not transport.disconnecting:
            transport.write(HEADER_TOO_LARGE)
            transport.loseConnection()

    def headerReceived(self, line: bytes) -> bool:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip()
        limit = self.site.bounds.max_body
        if name == b"content-length" and value != b"0" and not (value.isdigit() and int(value) <= limit):
            self.refuse_body()
            return False
        if name == b"transfer-encoding" and not limit:
            self.refuse_body()
            return False
        return bool(super().headerReceived(line))

    def allContentReceived(self) -> None:
        self._stop_waiting()
        super().allContentReceived()

    def checkPersistence(self, request: Any, version: bytes) -> bool:
        """A probe-only connection answers its one request and closes; any other after C{max_requests}."""
        self._requests += 1
        if self.probe_only or self._requests >= self.site.bounds.max_requests:
            request.responseHeaders.setRawHeaders(b"connection", [b"close"])
            return False
        return bool(super().checkPersistence(request, version))

    def pauseProducing(self) -> None:
        self._transport_full = True
        super().pauseProducing()

    def resumeProducing(self) -> None:
        self._transport_full = False
        super().resumeProducing()
        finished, self._finished_while_full = self._finished_while_full, None
        if finished is not None:
            self._stop_waiting()
            self.requestDone(finished)

    def requestDone(self, request: Any) -> None:
        """
        The next pipelined request waits while the transport is full.
        twisted.web reads one request at a time, but as each is answered it
        parses the next from what it already holds, whether or not the
        client reads the answers: 64 connections pipelining 3,000
        C{/metrics} each and reading nothing kept a core busy rendering and
        grew memory by hundreds of MB.  Held here, a client that does not
        read costs one answer beyond the transport's buffer, and what
        twisted.web buffers of its requests (it stops reading past 16 KiB),
        and it is cut off after C{head_timeout} as a slow head is.
        """
        transport: Any = self.transport
        if self._transport_full and transport is not None and not transport.disconnecting:
            self._finished_while_full = request
            if not self._head_deadline:
                self._await_request()  # a client that never reads is cut off as a slow one is
            return
        super().requestDone(request)
        if not self._head_deadline and transport is not None and not transport.disconnecting:
            self._await_request()

    def connectionLost(self, reason: Any = None) -> None:
        self._finished_while_full = None
        self.release_descriptor()
        self.site.channels.discard(self)
        self._stop_waiting()
        super().connectionLost(reason)


class Busy(Resource):
    """What a probe slot answers to a request that is not a probe: the port is full, come back later."""

    isLeaf = True

    def __init__(self, text: bytes) -> None:
        super().__init__()
        self.text = text

    def render(self, request: Request) -> bytes:
        request.setResponseCode(503)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return self.text


class BoundedSite(Site):
    """
    A L{Site} held to L{SiteLimits} (see the module's docstring); a port
    that serves something else says so in L{probe}, L{busy} and
    L{too_large}.
    """

    noisy = False
    # HTTP/1.1 only: twisted.web's default wraps the channel to offer HTTP/2 too.
    protocol = BoundedChannel  # type: ignore[assignment]
    requestFactory = BoundedRequest
    # twisted.web's "Server: TwistedWeb/..." header, or none.
    server_header = True
    busy: Resource = Busy(b"busy: too many connections\n")
    too_large = payload_too_large(b"text/plain; charset=utf-8", b"this endpoint takes no bodies\n")

    def __init__(self, resource: Resource, limits: SiteLimits, clock: IReactorTime | None = None) -> None:
        # twisted.web's own timers (a connection's idle timeout) run on the
        # same clock as ours, so a test's Clock leaves no real timer behind.
        super().__init__(resource, reactor=clock)
        self.bounds = limits
        self.clock: IReactorTime = clock if clock is not None else global_reactor()
        self.channels: set[BoundedChannel] = set()
        # Connections waiting for a request, oldest first, and since when.
        self.waiting: dict[BoundedChannel, float] = {}

    @property
    def live(self) -> int:
        """Connections open now and not displaced."""
        return len(self.channels)

    def probe(self, request: Request) -> bool:
        """Whether a probe-only connection may have C{request} answered (any, unless a port says)."""
        return True

    def _displace(self) -> bool:
        """Cut the connection that has waited longest for a request, if it has waited C{grace}."""
        for channel, since in self.waiting.items():
            if self.clock.seconds() - since >= self.bounds.grace:
                channel.cut()
                return True
            return False
        return False

    def buildProtocol(self, addr: Any) -> Any:
        limits = self.bounds
        full = self.live >= limits.max_connections + limits.probe_slots or DESCRIPTORS.full()
        if full and not self._displace():
            return None  # the port closes it at once
        channel = super().buildProtocol(addr)
        channel.probe_only = self.live >= limits.max_connections
        self.channels.add(channel)
        return channel

    def getResourceFor(self, request: Any) -> Resource:
        """Past the cap, probes only: anything else is told the port is busy."""
        if request.channel is not None and request.channel.probe_only and not self.probe(request):
            return self.busy
        return super().getResourceFor(request)
