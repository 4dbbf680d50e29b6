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
from echoapp._transports.listen import StreamListenService, UDPListenService
from echoapp._twisted import global_reactor
from echoapp.services import DrainService, named

log = Logger(namespace="echoapp.monitor")


def healthy(root: Any) -> bool:
    """
    Every listener under C{root} is listening and nothing is draining: the
    answer a load balancer wants before it sends traffic here.
    """
    if not root.running:
        return False
    for service in IServiceCollection(root, []):
        if isinstance(service, StreamListenService | UDPListenService) and service.port is None:
            return False
        if isinstance(service, DrainService) and service.connections.draining:
            return False
        if IServiceCollection(service, None) is not None and not healthy(service):
            return False
    return True


class HealthResource(Resource):
    isLeaf = True

    def __init__(self, check: Callable[[], bool]) -> None:
        super().__init__()
        self.check = check

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        if self.check():
            return b"ok\n"
        request.setResponseCode(503)
        return b"unavailable\n"


# The metrics listener's own limits: it serves a scraper and a balancer's
# probes, not the public, and must not cost the service its descriptors.
MAX_METRICS_CONNECTIONS = 64
HEAD_TIMEOUT = 10.0  # seconds for a whole request head, from connect or the last response
PAYLOAD_TOO_LARGE = (
    b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 30\r\nConnection: close\r\n\r\nthis endpoint takes no bodies\n"
)


class MonitorChannel(HoldsDescriptor, HTTPChannel):
    """
    An HTTP connection to the metrics listener, held to what a GET needs:
    its head must arrive within L{HEAD_TIMEOUT} (twisted.web's own timeout
    starts again with every byte, so one header byte every 20 s held a
    connection for ever), and a request with a body is answered 413 before
    any of the body is read (a 200 MiB POST was spooled to a file).  It
    counts against the process's descriptor ceiling while it is open.
    """

    factory: MonitorSite
    _head_deadline: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self.hold_descriptor()
        self.factory.live += 1
        super().connectionMade()
        self._await_head()

    def _await_head(self) -> None:
        self._head_deadline = self.factory.clock.callLater(HEAD_TIMEOUT, self._head_too_slow)

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

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        transport: Any = self.transport
        if not self._head_deadline and transport is not None and not transport.disconnecting:
            self._await_head()

    def connectionLost(self, reason: Any = None) -> None:
        self.release_descriptor()
        self.factory.live -= 1
        self._stop_waiting()
        super().connectionLost(reason)


class MonitorSite(Site):
    """
    The metrics listener's site: at most L{MAX_METRICS_CONNECTIONS}
    connections (more are closed at once, as are all while the process's
    descriptors are nearly used up).

    A load balancer probes C{/healthz} every second or so: an access log
    line for each would bury everything else, so probes are logged at debug
    level; other requests (C{/metrics} scrapes, strays) as twisted.web does.
    """

    noisy = False
    # HTTP/1.1 only: twisted.web's default wraps the channel to offer HTTP/2 too.
    protocol = MonitorChannel  # type: ignore[assignment]

    def __init__(self, resource: Resource, clock: IReactorTime | None = None) -> None:
        super().__init__(resource)
        self.live = 0
        self._clock = clock

    @property
    def clock(self) -> IReactorTime:
        if self._clock is None:
            self._clock = global_reactor()
        return self._clock

    def buildProtocol(self, addr: Any) -> Any:
        if self.live >= MAX_METRICS_CONNECTIONS or DESCRIPTORS.full():
            return None  # the port closes it at once
        return super().buildProtocol(addr)

    def log(self, request: http.Request) -> None:
        if request.path == b"/healthz":
            log.debug("{method} /healthz: {code}", method=request.method, code=request.code)
        else:
            super().log(request)


def metrics_site(root: MultiService) -> Site:
    """C{/metrics} in the Prometheus text format and C{/healthz} for C{root}."""
    top = Resource()
    top.putChild(b"metrics", MetricsResource())
    top.putChild(b"healthz", HealthResource(lambda: healthy(root)))
    return MonitorSite(top)


class Monitored(MultiService):
    """
    A service tree with its C{/metrics} and C{/healthz} listener, which is
    started first and stopped last, after the tree has drained, so that
    C{/healthz} answers 503 while clients are still being said goodbye to.
    """

    def __init__(self, inner: MultiService, metrics_listen: str, reactor: Any = None) -> None:
        super().__init__()
        self.setName(inner.name or "echoapp")
        group = named("echoapp-metrics")
        self.metrics = StreamListenService(metrics_listen, metrics_site(inner), reactor)
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


def monitored(service: MultiService, metrics_listen: str | None, reactor: Any = None) -> MultiService:
    """C{service}, with metrics and health over HTTP if C{metrics_listen} is given."""
    return service if metrics_listen is None else Monitored(service, metrics_listen, reactor)
