"""The metrics listener's own limits: bodies, slow heads, a connection cap, counted descriptors."""

from __future__ import annotations

import socket

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from echoapp import monitor, services
from echoapp.descriptors import DESCRIPTORS
from tests.support import DEADLINE, listeners, start, tutorial_client

LOOP = "tcp:0:interface=127.0.0.1"


def exchange(port: int, data: bytes) -> bytes:
    """Send C{data} (and no more) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), DEADLINE) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


class MetricsLimitTests(TestCase):
    def serve(self) -> tuple[int, int]:
        monitored = monitor.Monitored(services.tcp_greeter([LOOP]), LOOP)
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
        self.patch(monitor, "HEAD_TIMEOUT", 0.5)
        metrics, _ = self.serve()
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
        self.patch(monitor, "MAX_METRICS_CONNECTIONS", 3)
        metrics, greeter = self.serve()
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
        self.assertEqual(closed, 2, "over the cap: closed at once")
        self.assertEqual(DESCRIPTORS.open, before + 3, "metrics connections hold counted descriptors")
        hello = await deferToThread(tutorial_client, greeter, [b"still"])
        self.assertEqual(hello[1], b"Hello, still!", "the service itself is untouched")
