"""Throttled summaries are flushed when the service stops, on both reactors."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from echoapp import services
from echoapp.config import TCPLimits, UDPLimits
from tests.support import DEADLINE, listeners, start


async def wait_for(condition: Any) -> None:
    for _ in range(int(DEADLINE / 0.02)):
        if condition():
            return
        await deferLater(reactor, 0.02)
    raise AssertionError("gave up waiting")


class FlushAtStopTests(TestCase):
    def counts(self, prefix: str) -> list[object]:
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self._events = events
        return [e["count"] for e in events if str(e.get("log_format", "")).startswith(prefix)]

    def logged(self, prefix: str) -> list[object]:
        return [e["count"] for e in self._events if str(e.get("log_format", "")).startswith(prefix)]

    async def test_refusals_held_back_are_logged_at_stop(self) -> None:
        self.counts("Refused")
        tree = services.tcp_greeter(["tcp:0:interface=127.0.0.1"], limits=TCPLimits(max_per_peer=1))
        [port] = start(self, tree)
        stats = listeners(tree)[0].factory.stats
        for _ in range(4):
            sock = socket.create_connection(("127.0.0.1", port.getHost().port), DEADLINE)
            self.addCleanup(sock.close)
        await wait_for(lambda: stats.refused["per-peer"] == 3)
        self.assertEqual(self.logged("Refused"), [1], "the first at once, the rest held back")
        await tree.stopService()
        self.assertEqual(self.logged("Refused"), [1, 2], "the rest when the service stops")

    async def test_udp_drops_held_back_are_logged_at_stop(self) -> None:
        self.counts("Dropped")
        tree = services.udp_greeter(["udp:0:interface=127.0.0.1"], limits=UDPLimits(rate=1, burst=1))
        [port] = start(self, tree)
        stats = listeners(tree)[0].protocol.stats
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(6):
                sock.sendto(b"hi", ("127.0.0.1", port.getHost().port))
            await wait_for(lambda: stats.dropped["rate"] == 5)
        self.assertEqual(self.logged("Dropped"), [1])
        await tree.stopService()
        self.assertEqual(self.logged("Dropped"), [1, 4])


class HealthProbeLogTests(TestCase):
    async def test_probes_at_debug_other_requests_as_usual(self) -> None:
        from twisted.logger import LogLevel, formatEvent
        from twisted.web.client import Agent, readBody

        from echoapp import monitor

        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        monitored = monitor.Monitored(
            services.tcp_greeter(["tcp:0:interface=127.0.0.1"]), "tcp:0:interface=127.0.0.1"
        )
        start(self, monitored)
        base = f"http://127.0.0.1:{listeners(monitored)[0].port.getHost().port}"
        for path in (b"/healthz", b"/healthz", b"/metrics"):
            response = await Agent(reactor).request(b"GET", base.encode() + path)
            await readBody(response)
        await wait_for(lambda: any("/metrics" in formatEvent(e) for e in events))
        healthz = [e for e in events if "/healthz" in formatEvent(e)]
        self.assertEqual([e.get("log_level") for e in healthz], [LogLevel.debug, LogLevel.debug])
