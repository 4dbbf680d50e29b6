"""Refused connections on a TLS listener are gone within --close-grace; handshakes are bounded."""

from __future__ import annotations

import socket
import tempfile

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from echoapp import services
from echoapp.config import TCPLimits
from echoapp.descriptors import DESCRIPTORS
from tests.support import DEADLINE, listeners, start


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(100) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


class TLSRefusalTests(TestCase):
    def tls_service(self, **limits: float) -> tuple[int, object]:
        try:
            import OpenSSL  # noqa: F401

            from tests.certs import make_certificates
        except ImportError:
            self.skipTest("TLS needs pyOpenSSL")
        paths = make_certificates(tempfile.mkdtemp())
        listen = f"ssl:0:interface=127.0.0.1:privateKey={paths['server.key']}:certKey={paths['server.pem']}"
        tree = services.tcp_greeter([listen], limits=TCPLimits(**limits))  # type: ignore[arg-type]
        [port] = start(self, tree)
        return port.getHost().port, tree

    def silent(self, port: int) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), DEADLINE)
        self.addCleanup(sock.close)
        sock.setblocking(False)
        return sock

    async def test_refused_silent_clients_are_gone_within_close_grace(self) -> None:
        before = DESCRIPTORS.open
        port, tree = self.tls_service(max_per_peer=1, idle_timeout=30, close_grace=0.5)
        admitted = self.silent(port)
        refused = [self.silent(port) for _ in range(8)]
        for _ in range(int(DEADLINE / 0.05)):
            if all(closed(sock) for sock in refused):
                break
            await deferLater(reactor, 0.05)
        self.assertEqual([closed(sock) for sock in refused], [True] * 8)
        self.assertFalse(closed(admitted), "the admitted client is untouched")
        self.assertEqual(DESCRIPTORS.open, before + 1, "refused connections no longer hold descriptors")
        self.assertEqual(listeners(tree)[0].factory.stats.refused["per-peer"], 8)

    async def test_a_stalled_handshake_is_closed_after_the_idle_timeout(self) -> None:
        port, _ = self.tls_service(idle_timeout=1, close_grace=0.5)
        sock = self.silent(port)
        sock.send(b"\x16\x03\x01\x00\x05")  # the start of a ClientHello record, and nothing more
        for _ in range(int(DEADLINE / 0.05)):
            if closed(sock):
                break
            await deferLater(reactor, 0.05)
        self.assertTrue(closed(sock))
