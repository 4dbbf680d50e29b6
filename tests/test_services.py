"""
The service trees (echoapp.services): what each builder assembles, how
listeners of one service share its limits, and what stopping does.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.application.service import IServiceCollection
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoapp import services
from echoapp.config import GreeterConfig, TCPLimits, UDPLimits
from echoapp.services import DrainService
from echoapp.template import ReplyTemplate
from tests.support import DEADLINE, LOOP, ULOOP, described, listeners, start, tutorial_client


async def wait_for(condition: Any) -> None:
    for _ in range(int(DEADLINE / 0.02)):
        if condition():
            return
        await deferLater(reactor, 0.02)
    raise AssertionError("gave up waiting")


class TreeTests(SynchronousTestCase):
    def test_each_builder_names_its_service_and_listens_once_per_description(self) -> None:
        tree = services.tcp_greeter([LOOP, "tcp:1:interface=127.0.0.2"])
        self.assertEqual(tree.name, "echoapp-tcp")
        self.assertEqual(
            described(tree), [("echoapp-tcp", LOOP), ("echoapp-tcp", "tcp:1:interface=127.0.0.2")]
        )
        self.assertIsInstance(
            next(iter(IServiceCollection(tree))), DrainService, "drains after the listeners stop"
        )
        self.assertEqual(services.echo([LOOP]).name, "echoapp-echo")
        self.assertEqual(
            described(services.udp_greeter([ULOOP, "udp:2"])),
            [("echoapp-udp", ULOOP), ("echoapp-udp", "udp:2")],
        )

    def test_everything_is_the_three_with_one_message_config(self) -> None:
        config = GreeterConfig(reply=ReplyTemplate.parse("Loop_Msg: {}!"))
        tree = services.everything([LOOP], [ULOOP], [LOOP], config)
        self.assertEqual(tree.name, "echoapp")
        self.assertEqual([child.name for child in tree], ["echoapp-tcp", "echoapp-udp", "echoapp-echo"])
        tcp, udp, _ = listeners(tree)
        self.assertIs(tcp.factory.config, config)
        self.assertIs(udp.protocol.reply, config.reply, "the UDP greeter answers like the TCP one")

    def test_listeners_of_one_service_share_its_limits_and_have_their_own_counts(self) -> None:
        tree = services.tcp_greeter([LOOP, "tcp:1:interface=127.0.0.2"], limits=TCPLimits(max_connections=1))
        first, second = listeners(tree)
        self.assertIs(first.factory.connections, second.factory.connections)
        self.assertEqual(first.factory.connections.limits.max_connections, 1)
        self.assertIsNot(first.factory.stats, second.factory.stats)
        self.assertEqual(second.factory.stats.labels, ["echoapp-tcp", "tcp:1:interface=127.0.0.2"])

    def test_udp_listeners_know_each_others_ports(self) -> None:
        tree = services.udp_greeter([ULOOP, ULOOP], limits=UDPLimits())
        first, second = listeners(tree)
        self.assertIs(first.protocol.own_ports, second.protocol.own_ports)


class LimitsAcrossListenersTests(TestCase):
    async def test_the_total_counts_across_listeners(self) -> None:
        tree = services.tcp_greeter([LOOP, LOOP], limits=TCPLimits(max_connections=1))
        first, second = (port.getHost().port for port in start(self, tree))
        held = socket.create_connection(("127.0.0.1", first), DEADLINE)
        self.addCleanup(held.close)
        self.assertEqual(await deferToThread(held.recv, 100), b"Welcome!\r\n")
        refused = await deferToThread(tutorial_client, second, [])
        self.assertEqual(refused, [b"ERROR: too many connections\r\n"])


class DrainTests(TestCase):
    async def test_stopping_says_goodbye_and_waits_for_the_client(self) -> None:
        tree = services.tcp_greeter([LOOP], limits=TCPLimits(close_grace=DEADLINE))
        [port] = start(self, tree)
        sock = socket.create_connection(("127.0.0.1", port.getHost().port), DEADLINE)
        self.addCleanup(sock.close)
        sock.setblocking(False)
        connections = listeners(tree)[0].factory.connections
        await wait_for(lambda: connections.live)
        stopping = tree.stopService()
        received = b""
        for _ in range(int(DEADLINE / 0.02)):
            try:
                received += sock.recv(100)
            except BlockingIOError:
                pass
            if received.endswith(b"Goodbye!\r\n"):
                break
            await deferLater(reactor, 0.02)
        self.assertEqual(received, b"Welcome!\r\nGoodbye!\r\n")
        await stopping
        self.assertEqual(connections.live, set(), "the drain ends once the client is gone")


class FlushAtStopTests(TestCase):
    def counts(self, prefix: str) -> list[object]:
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
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
