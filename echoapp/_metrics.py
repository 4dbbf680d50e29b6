"""
Prometheus metrics: what every listener counts, and the collector that
turns the counts into metrics when C{/metrics} is scraped.  The HTTP side
(C{/metrics}, C{/healthz}) is L{echoapp._monitor}; this module is a leaf that
the protocols import.

Counting happens on the hot path, so it is plain integer arithmetic on a
per-listener object (L{TCPStats}, L{UDPStats}) bound at start-up; nothing is
locked or looked up per chunk.  L{StatsCollector} turns the live objects into
Prometheus metrics only when C{/metrics} is scraped.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from echoapp._process import PROCESS
from echoapp._reasons import DROPS, REFUSALS, TIMEOUTS

LABELS = ["service", "listener"]


class _Stats:
    """One listener's counts, known to the collector from the start: what every kind counts."""

    def __init__(self, service: str, listener: str) -> None:
        self.service = service
        self.labels = [service, listener]
        self.bytes_in = 0
        self.bytes_out = 0
        PROCESS.stats.add(self)


class TCPStats(_Stats):
    """One TCP listener's counts."""

    def __init__(self, service: str, listener: str) -> None:
        super().__init__(service, listener)
        self.open = self.accepted = self.messages = self.too_long = 0
        self.refused = dict.fromkeys(REFUSALS, 0)
        self.timeouts = dict.fromkeys(TIMEOUTS, 0)


class UDPStats(_Stats):
    """One UDP listener's counts."""

    def __init__(self, service: str, listener: str) -> None:
        super().__init__(service, listener)
        self.answered = 0
        self.dropped = dict.fromkeys(DROPS, 0)


# name, help, kind, the stats attribute it reads, the label its dict is keyed by
METRICS: list[tuple[str, str, type, str, str | None]] = [
    ("echoapp_connections_open", "Open TCP connections.", GaugeMetricFamily, "open", None),
    ("echoapp_connections", "TCP connections accepted.", CounterMetricFamily, "accepted", None),
    (
        "echoapp_connections_refused",
        "TCP connections refused, by reason.",
        CounterMetricFamily,
        "refused",
        "reason",
    ),
    ("echoapp_messages", "Replies sent (echo: chunks echoed).", CounterMetricFamily, "messages", None),
    (
        "echoapp_lines_too_long",
        "Connections closed for a too long line.",
        CounterMetricFamily,
        "too_long",
        None,
    ),
    (
        "echoapp_timeouts",
        "Connections closed by a timeout, by kind.",
        CounterMetricFamily,
        "timeouts",
        "kind",
    ),
    ("echoapp_datagrams_answered", "UDP datagrams answered.", CounterMetricFamily, "answered", None),
    (
        "echoapp_datagrams_dropped",
        "UDP datagrams not answered, by reason.",
        CounterMetricFamily,
        "dropped",
        "reason",
    ),
    ("echoapp_received_bytes", "Bytes received.", CounterMetricFamily, "bytes_in", None),
    ("echoapp_sent_bytes", "Bytes sent.", CounterMetricFamily, "bytes_out", None),
]


class StatsCollector(Collector):
    """
    The metrics of every live listener, read at scrape time and summed by
    labels (two listeners with the same description make one series).
    """

    def collect(self) -> Iterator[Metric]:
        live = list(PROCESS.stats)
        for name, text, kind, attribute, key in METRICS:
            totals: dict[tuple[str, ...], float] = {}
            for stats in live:
                value = getattr(stats, attribute, None)
                if value is None:
                    continue
                for extra, count in value.items() if key else [((), value)]:
                    labels = (*stats.labels, *((extra,) if key else ()))
                    totals[labels] = totals.get(labels, 0) + count
            family = kind(name, text, labels=LABELS + ([key] if key else []))
            for labels, total in totals.items():
                family.add_metric(list(labels), total)
            yield family


# echoapp's own registry, which its metrics listener serves (L{echoapp._monitor}):
# never prometheus_client's global one, where a program that merely imports
# echoapp (its pytest plugin, a test peer) would find echoapp_* series in
# its own /metrics.  The process, platform and GC collectors are shared
# with the global registry, so /metrics still shows them.
REGISTRY = CollectorRegistry(auto_describe=True)
REGISTRY.register(StatsCollector())
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)
