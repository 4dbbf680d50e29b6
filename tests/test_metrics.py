"""Prometheus metrics and /healthz, counted by the real protocols and served by twisted.web."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import Agent, readBody

from echoapp._limits.connections import Connections
from echoapp._metrics import REGISTRY, TCPStats, UDPStats
from echoapp._protocols.greeter import GreeterFactory
from echoapp._protocols.udp import UDPGreeter
from echoapp.config import GreeterConfig, TCPLimits, UDPLimits
from tests.support import RecordingUDPTransport, fake_connect


def value(name: str, listener: str, service: str = "echoapp-tcp", **labels: str) -> float:
    found = REGISTRY.get_sample_value(name, {"service": service, "listener": listener, **labels})
    return 0.0 if found is None else found


class TCPCountingTests(SynchronousTestCase):
    def test_connections_messages_bytes_and_closes(self) -> None:
        listener = self.id()
        clock = Clock()
        factory = GreeterFactory(
            GreeterConfig(max_line_length=4),
            Connections(TCPLimits(max_per_peer=1, idle_timeout=5)),
            clock,
            stats=TCPStats("echoapp-tcp", listener),
        )
        protocol, transport = fake_connect(factory)
        self.assertEqual(value("echoapp_connections_total", listener), 1)
        self.assertEqual(value("echoapp_connections_open", listener), 1)
        protocol.dataReceived(b"ab\ncd\n")
        self.assertEqual(value("echoapp_messages_total", listener), 2)
        self.assertEqual(value("echoapp_received_bytes_total", listener), 6)
        self.assertEqual(value("echoapp_sent_bytes_total", listener), len(transport.value()))
        fake_connect(factory)  # the same peer again: over --max-per-peer
        self.assertEqual(value("echoapp_connections_refused_total", listener, reason="per-peer"), 1)
        protocol.dataReceived(b"toolong\n")
        self.assertEqual(value("echoapp_lines_too_long_total", listener), 1)
        protocol.connectionLost(None)
        self.assertEqual(value("echoapp_connections_open", listener), 0)
        fake_connect(factory, "127.0.0.5")
        clock.advance(5)
        self.assertEqual(value("echoapp_timeouts_total", listener, kind="idle"), 1)


class UDPCountingTests(SynchronousTestCase):
    def test_answered_and_dropped(self) -> None:
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
