"""Prometheus metrics and /healthz, counted by the real protocols and served by twisted.web."""

from __future__ import annotations

from prometheus_client import REGISTRY
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody

from echoapp import monitor, services
from echoapp.config import GreeterConfig, TCPLimits, UDPLimits
from echoapp.greeter import GreeterFactory
from echoapp.metrics import TCPStats, UDPStats
from echoapp.monitor import healthy
from echoapp.udp import UDPGreeter
from tests.support import listeners, start
from tests.test_limits import connect

LOOP = "tcp:0:interface=127.0.0.1"


def value(name: str, listener: str, service: str = "echoapp-tcp", **labels: str) -> float:
    found = REGISTRY.get_sample_value(name, {"service": service, "listener": listener, **labels})
    return 0.0 if found is None else found


class TCPCountingTests(SynchronousTestCase):
    def test_connections_messages_bytes_and_closes(self) -> None:
        listener = self.id()
        clock = Clock()
        factory = GreeterFactory(
            GreeterConfig(max_line_length=4),
            TCPLimits(max_per_peer=1, idle_timeout=5),
            clock,
            stats=TCPStats("echoapp-tcp", listener),
        )
        protocol, transport = connect(factory)
        self.assertEqual(value("echoapp_connections_total", listener), 1)
        self.assertEqual(value("echoapp_connections_open", listener), 1)
        protocol.dataReceived(b"ab\ncd\n")
        self.assertEqual(value("echoapp_messages_total", listener), 2)
        self.assertEqual(value("echoapp_received_bytes_total", listener), 6)
        self.assertEqual(value("echoapp_sent_bytes_total", listener), len(transport.value()))
        connect(factory)  # the same peer again: over --max-per-peer
        self.assertEqual(value("echoapp_connections_refused_total", listener, reason="per-peer"), 1)
        protocol.dataReceived(b"toolong\n")
        self.assertEqual(value("echoapp_lines_too_long_total", listener), 1)
        protocol.connectionLost(None)
        self.assertEqual(value("echoapp_connections_open", listener), 0)
        connect(factory, "127.0.0.5")
        clock.advance(5)
        self.assertEqual(value("echoapp_timeouts_total", listener, kind="idle"), 1)


class UDPCountingTests(SynchronousTestCase):
    def test_answered_and_dropped(self) -> None:
        from tests.test_udp import RecordingUDPTransport

        listener = self.id()
        protocol = UDPGreeter(
            limits=UDPLimits(rate=1, burst=1), clock=Clock(), stats=UDPStats("echoapp-udp", listener)
        )
        protocol.makeConnection(RecordingUDPTransport())  # type: ignore[arg-type]
        protocol.datagramReceived(b"hi", ("127.0.0.1", 40000))
        protocol.datagramReceived(b"hi", ("127.0.0.1", 40000))
        protocol.datagramReceived(b"hi", ("127.0.0.1", 53))
        self.assertEqual(value("echoapp_datagrams_answered_total", listener, "echoapp-udp"), 1)
        self.assertEqual(value("echoapp_datagrams_dropped_total", listener, "echoapp-udp", reason="rate"), 1)
        self.assertEqual(value("echoapp_datagrams_dropped_total", listener, "echoapp-udp", reason="port"), 1)
        self.assertEqual(value("echoapp_sent_bytes_total", listener, "echoapp-udp"), len(b"Hello, hi!"))


async def get(url: str) -> tuple[int, bytes]:
    response = await Agent(reactor).request(b"GET", url.encode())
    return response.code, await readBody(response)


class MetricsServiceTests(TestCase):
    def serve(self, limits: TCPLimits | None = None) -> tuple[monitor.Monitored, int, int]:
        inner = services.tcp_greeter([LOOP], limits=limits)
        monitored = monitor.Monitored(inner, LOOP)
        start(self, monitored)
        metrics_port, greeter_port = (listener.port.getHost().port for listener in listeners(monitored))
        return monitored, metrics_port, greeter_port

    async def _scrape(self) -> None:
        from twisted.internet.threads import deferToThread

        from tests.support import tutorial_client

        _, metrics, greeter = self.serve()
        await deferToThread(tutorial_client, greeter, [b"counted"])
        code, body = await get(f"http://127.0.0.1:{metrics}/metrics")
        self.assertEqual(code, 200)
        self.assertIn(
            b'echoapp_connections_total{listener="tcp:0:interface=127.0.0.1",service="echoapp-tcp"}', body
        )
        self.assertIn(b"# TYPE echoapp_datagrams_dropped_total counter", body)
        self.assertEqual(await get(f"http://127.0.0.1:{metrics}/healthz"), (200, b"ok\n"))

    def test_metrics_and_health_over_http(self) -> Deferred[None]:
        return ensureDeferred(self._scrape())

    async def _draining(self) -> None:
        from twisted.application.service import MultiService, Service

        class SlowToDrain(Service):
            """Stands for connections that take their time to leave."""

            def __init__(self) -> None:
                self.drained: Deferred[None] = Deferred()

            def stopService(self) -> Deferred[None]:
                super().stopService()
                return self.drained

        inner = MultiService()
        slow = SlowToDrain()
        slow.setServiceParent(inner)
        monitored = monitor.Monitored(inner, LOOP)
        [listener] = start(self, monitored)
        url = f"http://127.0.0.1:{listener.getHost().port}/healthz"
        self.assertEqual(await get(url), (200, b"ok\n"))
        stopping = monitored.stopService()
        self.assertEqual(await get(url), (503, b"unavailable\n"))
        self.assertNoResult(stopping)
        slow.drained.callback(None)
        await stopping
        self.assertFalse(monitored.metrics.running, "the metrics listener stops after the drain")

    def test_healthz_is_503_while_draining(self) -> Deferred[None]:
        return ensureDeferred(self._draining())

    def test_draining_connections_are_unhealthy(self) -> None:
        monitored, _, _ = self.serve()
        self.assertTrue(healthy(monitored.inner))
        [drain] = [child for child in monitored.inner if isinstance(child, services.DrainService)]
        drain.connections.draining = True
        self.assertFalse(healthy(monitored.inner))
        drain.connections.draining = False


class HealthTests(SynchronousTestCase):
    def test_not_healthy_until_started(self) -> None:
        service = services.echo(["tcp:0:interface=127.0.0.1"])
        self.assertFalse(healthy(service))
