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
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from echoapp.listen import StreamListenService, UDPListenService
from echoapp.services import DrainService, named

log = Logger()


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


class MonitorSite(Site):
    """
    A load balancer probes C{/healthz} every second or so: an access log
    line for each would bury everything else, so probes are logged at debug
    level; other requests (C{/metrics} scrapes, strays) as twisted.web does.
    """

    noisy = False

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
