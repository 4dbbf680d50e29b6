"""
Connections out made by an asyncio loop itself (L{NativeTCPClientEndpoint}):
echoapp-proxy's upstream side on uvloop.  Driven on a loop of the test's
own, so these run on every reactor.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.testing import AccumulatingProtocol
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from echoapp._transports.native_connect import NativeTCPClientEndpoint
from echoapp._transports.native_tcp import NativeConnection
from tests.support import free_port


class Counting(Factory):
    protocol = AccumulatingProtocol
    protocolConnectionMade = None
    started = stopped = 0

    def doStart(self) -> None:
        self.started += 1

    def doStop(self) -> None:
        self.stopped += 1


class NativeConnectTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.addCleanup(self.loop.close)

    def run_until(self, deferred: Any) -> Any:
        """Turn the loop until C{deferred} has fired; its result (or failure)."""
        results: list[Any] = []
        deferred.addBoth(results.append)
        for _ in range(200):
            if results:
                break
            self.loop.run_until_complete(asyncio.sleep(0.01))
        self.assertTrue(results, "the connection attempt never ended")
        return results[0]

    def test_connects_and_the_protocol_writes_through_the_loop(self) -> None:
        server = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(server.close)
        factory = Counting()
        endpoint = NativeTCPClientEndpoint(self.loop, "127.0.0.1", server.getsockname()[1])
        verifyObject(IStreamClientEndpoint, endpoint)
        protocol = self.run_until(endpoint.connect(factory))
        self.assertIsInstance(protocol, AccumulatingProtocol)
        self.assertIsInstance(protocol.transport, NativeConnection)
        self.assertEqual(protocol.made, 1)
        accepted, _ = server.accept()
        self.addCleanup(accepted.close)
        protocol.transport.write(b"up")
        accepted.sendall(b"down")
        self.loop.run_until_complete(asyncio.sleep(0.05))
        self.assertEqual(accepted.recv(10), b"up")
        self.assertEqual(protocol.data, b"down")
        protocol.transport.loseConnection()
        self.loop.run_until_complete(asyncio.sleep(0.05))
        self.assertEqual(accepted.recv(10), b"", "a FIN")
        self.assertEqual((factory.started, factory.stopped), (1, 1))

    def test_a_refused_connection_fails_the_attempt(self) -> None:
        factory = Counting()
        failure = self.run_until(
            NativeTCPClientEndpoint(self.loop, "127.0.0.1", free_port()).connect(factory)
        )
        self.assertTrue(failure.check(ConnectionRefusedError), failure)
        self.assertEqual((factory.started, factory.stopped), (1, 1))

    def test_a_factory_that_refuses_fails_the_attempt(self) -> None:
        server = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(server.close)
        factory = Counting()
        factory.buildProtocol = lambda addr: None  # type: ignore[method-assign]
        endpoint = NativeTCPClientEndpoint(self.loop, "127.0.0.1", server.getsockname()[1])
        failure = self.run_until(endpoint.connect(factory))
        self.assertTrue(failure.check(ConnectError), failure)

    def test_a_connect_that_takes_too_long_is_a_connect_error(self) -> None:
        self.patch(self.loop, "create_connection", lambda *args, **kwargs: asyncio.sleep(10))
        endpoint = NativeTCPClientEndpoint(self.loop, "127.0.0.1", 1, timeout=0.05)
        failure = self.run_until(endpoint.connect(Counting()))
        self.assertTrue(failure.check(ConnectError), failure)
        self.assertIn("timed out", str(failure.value))

    def test_cancelling_cancels_the_attempt(self) -> None:
        server = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(server.close)
        attempt = NativeTCPClientEndpoint(self.loop, "127.0.0.1", server.getsockname()[1]).connect(Counting())
        attempt.cancel()
        failure = self.run_until(attempt)
        self.assertTrue(failure.check(asyncio.CancelledError, CancelledError), failure)
        self.loop.run_until_complete(asyncio.sleep(0.02))
        self.assertEqual([task for task in asyncio.all_tasks(self.loop) if not task.done()], [])
