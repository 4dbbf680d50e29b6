"""
Prometheus metrics and the health check, served over HTTP by twisted.web.

The counters are created once per process, and each listener binds its label
children at start-up (L{TCPStats}, L{UDPStats}), so counting on the hot path
is one C{inc} on an object already at hand, once per received chunk rather
than per message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, disable_created_metrics
from prometheus_client.twisted import MetricsResource
from twisted.application.service import IServiceCollection, MultiService
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

# The *_created series only double every counter's output.
disable_created_metrics()

LABELS = ("service", "listener")

CONNECTIONS_OPEN = Gauge("echoapp_connections_open", "Open TCP connections.", LABELS)
CONNECTIONS = Counter("echoapp_connections", "TCP connections accepted.", LABELS)
REFUSED = Counter("echoapp_connections_refused", "TCP connections refused, by reason.", (*LABELS, "reason"))
MESSAGES = Counter("echoapp_messages", "Messages answered (echo: chunks echoed).", LABELS)
BYTES_IN = Counter("echoapp_received_bytes", "Bytes received.", LABELS)
BYTES_OUT = Counter("echoapp_sent_bytes", "Bytes sent.", LABELS)
TOO_LONG = Counter("echoapp_lines_too_long", "Connections closed for a line over --max-line-length.", LABELS)
TIMEOUTS = Counter("echoapp_timeouts", "Connections closed by a timeout, by kind.", (*LABELS, "kind"))
ANSWERED = Counter("echoapp_datagrams_answered", "UDP datagrams answered.", LABELS)
DROPPED = Counter("echoapp_datagrams_dropped", "UDP datagrams not answered, by reason.", (*LABELS, "reason"))

REFUSAL_REASONS = ("limit", "per-peer", "fd", "draining")
TIMEOUT_KINDS = ("idle", "line", "session")
DROP_REASONS = ("port", "rate", "size", "error")


class TCPStats:
    """One TCP listener's label children, bound once."""

    def __init__(self, service: str, listener: str) -> None:
        self.service = service
        labels = (service, listener)
        self.open = CONNECTIONS_OPEN.labels(*labels)
        self.accepted = CONNECTIONS.labels(*labels)
        self.refused = {reason: REFUSED.labels(*labels, reason) for reason in REFUSAL_REASONS}
        self.messages = MESSAGES.labels(*labels)
        self.bytes_in = BYTES_IN.labels(*labels)
        self.bytes_out = BYTES_OUT.labels(*labels)
        self.too_long = TOO_LONG.labels(*labels)
        self.timeouts = {kind: TIMEOUTS.labels(*labels, kind) for kind in TIMEOUT_KINDS}


class UDPStats:
    """One UDP listener's label children, bound once."""

    def __init__(self, service: str, listener: str) -> None:
        labels = (service, listener)
        self.answered = ANSWERED.labels(*labels)
        self.bytes_in = BYTES_IN.labels(*labels)
        self.bytes_out = BYTES_OUT.labels(*labels)
        self.dropped = {reason: DROPPED.labels(*labels, reason) for reason in DROP_REASONS}


def healthy(root: Any) -> bool:
    """
    Every listener under C{root} is listening and nothing is draining: the
    answer a load balancer wants before it sends traffic here.
    """
    from echoapp.listen import StreamListenService, UDPListenService
    from echoapp.services import DrainService

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


def metrics_site(root: MultiService) -> Site:
    """C{/metrics} in the Prometheus text format and C{/healthz} for C{root}."""
    top = Resource()
    top.putChild(b"metrics", MetricsResource())
    top.putChild(b"healthz", HealthResource(lambda: healthy(root)))
    site = Site(top)
    site.noisy = False
    return site
