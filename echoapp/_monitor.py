"""
Watching a running service tree over HTTP: C{/metrics} in the Prometheus
text format and C{/healthz} for load balancers, on a listener of their own
that starts first and stops last.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client.twisted import MetricsResource
from twisted.application.service import IServiceCollection, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web import http
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from echoapp._limits.descriptors import DESCRIPTORS, HoldsDescriptor
from echoapp._metrics import REGISTRY
from echoapp._transports.listen import StreamListenService, UDPListenService, descendants
from echoapp._twisted import LazyReactor
from echoapp.config import MetricsLimits
from echoapp.services import DrainService, named

log = Logger(namespace="echoapp.monitor")


def healthy(root: Any) -> bool:
    """
    Every listener under C{root} is listening and nothing is draining: the
    answer a load balancer wants before it sends traffic here.
    """
    if not root.running:
        return False
    for service in descendants(root):
        if isinstance(service, StreamListenService | UDPListenService) and service.port is None:
            return False
        if isinstance(service, DrainService) and service.connections.draining:
            return False
        if IServiceCollection(service, None) is not None and not service.running:
            return False
    return True


class HealthResource(Resource):
    """
    C{/healthz}: 200 while every listener listens and nothing drains, 503
    otherwise, which is what a load balancer's probe wants to know.
    """

    isLeaf = True

    def __init__(self, check: Callable[[], bool]) -> None:
        super().__init__()
        self.check = check

    def render_GET(self, request: Request) -> bytes:
        """
        The answer to a probe: the status code says it, the body repeats it
        for a person.
        """
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        if self.check():
            return b"ok\n"
        request.setResponseCode(503)
        return b"unavailable\n"


class BusyResource(Resource):
    """What a connection past the cap gets for anything but C{/healthz}."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        """503 with a reason a person reads: the port is full, come back later."""
        request.setResponseCode(503)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"busy: too many connections to the metrics port\n"


BUSY = BusyResource()

# The metrics listener's own limits are L{MetricsLimits} (options): it
# serves a scraper and a balancer's probes, not the public, and must not
# cost the service its descriptors.  Past the connection cap, a few probe
# slots may still ask for /healthz once each, so that clients holding every
# connection cannot keep a balancer's probe out; a connection makes a
# bounded number of requests (a scraper reconnects every few hours; a client
# pipelining thousands gets that many rendered, not thousands).
PAYLOAD_TOO_LARGE = (
    b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 30\r\nConnection: close\r\n\r\nthis endpoint takes no bodies\n"
)


class MonitorChannel(HoldsDescriptor, HTTPChannel):
    """
    An HTTP connection to the metrics listener, held to what a GET needs:
    its head must arrive within C{metrics_head_timeout} (twisted.web's own timeout
    starts again with every byte, so one header byte every 20 s held a
    connection for ever), and a request with a body is answered 413 before
    any of the body is read (a 200 MiB POST was spooled to a file).  It
    counts against the process's descriptor ceiling while it is open.
    """

    factory: MonitorSite
    _head_deadline: IDelayedCall | None = None
    # Past the cap (C{metrics_probe_slots}): one /healthz, then closed.
    probe_only = False
    # The transport's buffer is full (it paused us as its producer).
    _transport_full = False
    # A request that finished while the transport was full: the next
    # pipelined one is not read until the client has taken the answer.
    _finished_while_full: Any = None
    _requests = 0

    def connectionMade(self) -> None:
        self.hold_descriptor()
        self.factory.live += 1
        super().connectionMade()
        self._await_head()

    def _await_head(self) -> None:
        self._head_deadline = self.factory.clock.callLater(
            self.factory.limits.metrics_head_timeout, self._head_too_slow
        )

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        self.transport.abortConnection()  # type: ignore[union-attr]

    def _stop_waiting(self) -> None:
        if self._head_deadline is not None and self._head_deadline.active():
            self._head_deadline.cancel()
        self._head_deadline = None

    def headerReceived(self, line: bytes) -> bool:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip()
        if (name == b"content-length" and value != b"0") or name == b"transfer-encoding":
            self._stop_waiting()
            transport: Any = self.transport
            transport.write(PAYLOAD_TOO_LARGE)
            transport.loseConnection()  # reads stop here: the body is never read
            return False
        return bool(super().headerReceived(line))

    def allHeadersReceived(self) -> None:
        self._stop_waiting()
        super().allHeadersReceived()

    def checkPersistence(self, request: Any, version: bytes) -> bool:
        """
        A probe-only connection answers its one request and closes; any
        other after C{metrics_max_requests}.
        """
        self._requests += 1
        if self.probe_only or self._requests >= self.factory.limits.metrics_max_requests:
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
        and it is cut off after C{metrics_head_timeout} as a slow head is.
        """
        transport: Any = self.transport
        if self._transport_full and transport is not None and not transport.disconnecting:
            self._finished_while_full = request
            if not self._head_deadline:
                self._await_head()  # a client that never reads is cut off as a slow one is
            return
        super().requestDone(request)
        if not self._head_deadline and transport is not None and not transport.disconnecting:
            self._await_head()

    def connectionLost(self, reason: Any = None) -> None:
        self._finished_while_full = None
        self.release_descriptor()
        self.factory.live -= 1
        self._stop_waiting()
        super().connectionLost(reason)


class MonitorSite(Site):
    """
    The metrics listener's site: at most C{metrics_max_connections}
    connections (more are closed at once, as are all while the process's
    descriptors are nearly used up).

    Past the cap, C{metrics_probe_slots} more connections may each ask for
    C{/healthz} once: clients that hold every connection (keep-alive
    pollers, or worse) cannot keep a balancer's probe out.

    A load balancer probes C{/healthz} every second or so: an access log
    line for each would bury everything else, so probes are not logged
    (twistd's default observer drops no level, debug included); other
    requests (C{/metrics} scrapes, strays) are, as twisted.web does.
    """

    noisy = False
    # HTTP/1.1 only: twisted.web's default wraps the channel to offer HTTP/2 too.
    protocol = MonitorChannel  # type: ignore[assignment]

    def __init__(
        self, resource: Resource, clock: IReactorTime | None = None, limits: MetricsLimits | None = None
    ) -> None:
        # twisted.web's own timers (a connection's idle timeout) run on the
        # same clock as ours, so a test's Clock leaves no real timer behind.
        super().__init__(resource, reactor=clock)
        self.limits = limits or MetricsLimits()
        self.live = 0
        self._clock = clock

    clock: IReactorTime = LazyReactor()  # type: ignore[assignment]

    def buildProtocol(self, addr: Any) -> Any:
        limits = self.limits
        if self.live >= limits.metrics_max_connections + limits.metrics_probe_slots or DESCRIPTORS.full():
            return None  # the port closes it at once
        channel = super().buildProtocol(addr)
        channel.probe_only = self.live >= limits.metrics_max_connections
        return channel

    def getResourceFor(self, request: Any) -> Resource:
        """Past the cap, C{/healthz} only: anything else is told the port is busy."""
        if request.channel is not None and request.channel.probe_only and request.path != b"/healthz":
            return BUSY
        return super().getResourceFor(request)

    def log(self, request: http.Request) -> None:
        """Probes write no line: a balancer probing every second would add megabytes a day."""
        if request.path != b"/healthz":
            super().log(request)


def metrics_site(root: MultiService, limits: MetricsLimits | None = None) -> Site:
    """C{/metrics} in the Prometheus text format and C{/healthz} for C{root}."""
    top = Resource()
    top.putChild(b"metrics", MetricsResource(registry=REGISTRY))
    top.putChild(b"healthz", HealthResource(lambda: healthy(root)))
    return MonitorSite(top, limits=limits)


class Monitored(MultiService):
    """
    A service tree with its C{/metrics} and C{/healthz} listener, which is
    started first and stopped last, after the tree has drained, so that
    C{/healthz} answers 503 while clients are still being said goodbye to.
    """

    def __init__(
        self,
        inner: MultiService,
        metrics_listen: str,
        reactor: Any = None,
        limits: MetricsLimits | None = None,
    ) -> None:
        super().__init__()
        self.setName(inner.name or "echoapp")
        group = named("echoapp-metrics")
        self.metrics = StreamListenService(metrics_listen, metrics_site(inner, limits), reactor)
        self.metrics.setServiceParent(group)
        group.setServiceParent(self)
        inner.setServiceParent(self)
        self.inner = inner
        self.group = group

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        stopped = maybeDeferred(self.inner.stopService)
        stopped.addBoth(lambda _: self.group.stopService())
        return stopped


def monitored(
    service: MultiService,
    metrics_listen: str | None,
    reactor: Any = None,
    limits: MetricsLimits | None = None,
) -> MultiService:
    """C{service}, with metrics and health over HTTP if C{metrics_listen} is given."""
    return service if metrics_listen is None else Monitored(service, metrics_listen, reactor, limits)
