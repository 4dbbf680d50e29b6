"""The metrics listener: /metrics, /healthz, its own limits and its logs."""

from __future__ import annotations

import socket
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody
from twisted.web.resource import Resource

from echoapp import _monitor as monitor
from echoapp import services
from echoapp._limits.descriptors import DESCRIPTORS
from echoapp._monitor import healthy
from echoapp.config import MetricsLimits, TCPLimits
from tests.support import DEADLINE, LOOP, listeners, start, tutorial_client, wait_until


def exchange(port: int, data: bytes) -> bytes:
    """Send C{data} (and no more) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), DEADLINE) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


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

    async def test_metrics_and_health_over_http(self) -> None:
        _, metrics, greeter = self.serve()
        await deferToThread(tutorial_client, greeter, [b"counted"])
        code, body = await get(f"http://127.0.0.1:{metrics}/metrics")
        self.assertEqual(code, 200)
        self.assertIn(
            b'echoapp_connections_total{listener="tcp:0:interface=127.0.0.1",service="echoapp-tcp"}', body
        )
        self.assertIn(b"# TYPE echoapp_datagrams_dropped_total counter", body)
        self.assertEqual(await get(f"http://127.0.0.1:{metrics}/healthz"), (200, b"ok\n"))

    async def test_healthz_is_503_while_draining(self) -> None:
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


class MetricsLimitTests(TestCase):
    def serve(self, **limits: Any) -> tuple[int, int]:
        monitored = monitor.Monitored(services.tcp_greeter([LOOP]), LOOP, limits=MetricsLimits(**limits))
        start(self, monitored)
        metrics, greeter = (listener.port.getHost().port for listener in listeners(monitored))
        return metrics, greeter

    async def test_a_body_is_refused_before_it_is_read(self) -> None:
        metrics, _ = self.serve()
        head = b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 209715200\r\n\r\n"
        answer = await deferToThread(exchange, metrics, head)  # the 200 MiB never come
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 Payload Too Large\r\n"), answer[:80])

    async def test_a_chunked_body_too(self) -> None:
        metrics, _ = self.serve()
        head = b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n"
        answer = await deferToThread(exchange, metrics, head)
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:80])

    async def test_other_methods_are_not_allowed(self) -> None:
        metrics, _ = self.serve()
        answer = await deferToThread(
            exchange, metrics, b"POST /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 405 "), answer[:80])

    async def test_a_slow_head_is_cut_off(self) -> None:
        metrics, _ = self.serve(metrics_head_timeout=0.5)
        sock = socket.create_connection(("127.0.0.1", metrics), DEADLINE)
        self.addCleanup(sock.close)
        sock.setblocking(False)
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
        for index in range(len(head)):  # a byte every 50 ms: twisted.web's own timeout never fires
            try:
                sock.send(head[index : index + 1])
                if sock.recv(100) == b"":
                    break
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                break
            await deferLater(reactor, 0.05)
        self.assertLess(index, 200, "closed long before the head could finish")

    async def test_connection_cap_and_descriptors(self) -> None:
        metrics, greeter = self.serve(metrics_max_connections=2, metrics_probe_slots=1)
        before = DESCRIPTORS.open
        held = [socket.create_connection(("127.0.0.1", metrics), DEADLINE) for _ in range(5)]
        for sock in held:
            self.addCleanup(sock.close)
            sock.setblocking(False)
        closed = 0
        for _ in range(int(DEADLINE / 0.05)):
            closed = 0
            for sock in held:
                try:
                    closed += sock.recv(1) == b""
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    closed += 1
            if closed >= 2 and DESCRIPTORS.open == before + 3:
                break
            await deferLater(reactor, 0.05)
        self.assertEqual(closed, 2, "over the cap and its probe slot: closed at once")
        self.assertEqual(DESCRIPTORS.open, before + 3, "metrics connections hold counted descriptors")
        hello = await deferToThread(tutorial_client, greeter, [b"still"])
        self.assertEqual(hello[1], b"Hello, still!", "the service itself is untouched")


class HealthProbeLogTests(TestCase):
    async def test_probes_write_no_line_other_requests_as_usual(self) -> None:
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        monitored = monitor.Monitored(
            services.tcp_greeter(["tcp:0:interface=127.0.0.1"]), "tcp:0:interface=127.0.0.1"
        )
        start(self, monitored)
        base = f"http://127.0.0.1:{listeners(monitored)[0].port.getHost().port}"
        for path in (b"/healthz", b"/healthz", b"/metrics"):
            response = await Agent(reactor).request(b"GET", base.encode() + path)
            await readBody(response)
        await wait_until(lambda: any("/metrics" in formatEvent(e) for e in events), "the /metrics log line")
        healthz = [e for e in events if "/healthz" in formatEvent(e)]
        self.assertEqual(healthz, [], "twistd's default observer drops no level: probes log nothing")


def channel(site: monitor.MonitorSite) -> tuple[Any, StringTransport]:
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    assert protocol is not None
    protocol.callLater = site.clock.callLater  # twisted.web's own timeout, on the fake clock too
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def site(**limits: Any) -> monitor.MonitorSite:
    top = Resource()
    top.putChild(b"healthz", monitor.HealthResource(lambda: True))
    top.putChild(b"metrics", monitor.HealthResource(lambda: True))
    return monitor.MonitorSite(top, Clock(), MetricsLimits(**limits))


PROBE = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


class PipeliningTests(SynchronousTestCase):
    def test_no_pipelined_request_is_answered_while_the_transport_is_full(self) -> None:
        protocol, transport = channel(site())
        protocol.pauseProducing()  # as the transport does when its buffer is full
        protocol.dataReceived(PROBE * 100)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 "), 1, "one answer, then it waits")
        protocol.resumeProducing()  # the client read
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 "), 100)

    def test_requests_per_connection_are_bounded(self) -> None:
        protocol, transport = channel(site(metrics_max_requests=5))
        protocol.dataReceived(PROBE * 20)
        self.assertEqual(transport.value().count(b"HTTP/1.1 200 "), 5)
        self.assertTrue(transport.value().endswith(b"ok\n"))
        self.assertEqual(transport.value().count(b"Connection: close"), 1, "the last says so")
        self.assertTrue(transport.disconnecting)

    def test_a_client_that_never_reads_is_cut_off(self) -> None:
        monitored = site()
        protocol, transport = channel(monitored)
        protocol.pauseProducing()
        protocol.dataReceived(PROBE * 3)
        monitored.clock.advance(monitored.limits.metrics_head_timeout)  # type: ignore[attr-defined]
        self.assertTrue(transport.disconnected)
        protocol.connectionLost(None)


class ProbeSlotTests(SynchronousTestCase):
    def test_a_probe_gets_through_while_clients_hold_every_connection(self) -> None:
        monitored = site(metrics_max_connections=3, metrics_probe_slots=1)
        for _ in range(3):
            protocol, transport = channel(monitored)  # keep-alive pollers
            protocol.dataReceived(PROBE)
            self.assertFalse(transport.disconnecting)
        probe, transport = channel(monitored)
        probe.dataReceived(PROBE)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 OK\r\n"), transport.value())
        self.assertIn(b"\r\nConnection: close\r\n", transport.value())
        self.assertTrue(transport.disconnecting, "one probe per slot, then closed")
        self.assertIsNone(monitored.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50001)), "past the slots")

    def test_past_the_cap_only_probes_are_answered(self) -> None:
        monitored = site(metrics_max_connections=1, metrics_probe_slots=1)
        channel(monitored)  # holds the one connection
        protocol, transport = channel(monitored)
        protocol.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 503 "), transport.value())
        self.assertTrue(transport.disconnecting)
