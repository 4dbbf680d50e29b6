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
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from echoapp._http import BoundedSite, Busy, SiteLimits
from echoapp._metrics import REGISTRY
from echoapp._transports.listen import StreamListenService, UDPListenService, descendants
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


BUSY = Busy(b"busy: too many connections to the metrics port\n")


class MonitorSite(BoundedSite):
    """
    The metrics listener's site, a L{BoundedSite} held to L{MetricsLimits}
    (options): it serves a scraper and a balancer's probes, not the
    public, and must not cost the service its descriptors.  Past the cap,
    the probe slots may each ask for C{/healthz} once, so that clients
    holding every connection cannot keep a balancer's probe out; a body is
    refused unread (a 200 MiB POST was spooled to a file).

    A load balancer probes C{/healthz} every second or so: an access log
    line for each would bury everything else, so probes are not logged
    (twistd's default observer drops no level, debug included); other
    requests (C{/metrics} scrapes, strays) are, as twisted.web does.
    """

    busy = BUSY

    def __init__(
        self, resource: Resource, clock: IReactorTime | None = None, limits: MetricsLimits | None = None
    ) -> None:
        self.limits = limits or MetricsLimits()
        bounds = SiteLimits(
            max_connections=self.limits.metrics_max_connections,
            probe_slots=self.limits.metrics_probe_slots,
            max_requests=self.limits.metrics_max_requests,
            head_timeout=self.limits.metrics_head_timeout,
        )
        super().__init__(resource, bounds, clock)

    def probe(self, request: Request) -> bool:
        """Past the cap, C{/healthz} only."""
        return request.path == b"/healthz"

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
