"""TLS listeners serve clients that offer ALPN (curl's default), on both reactors."""

from __future__ import annotations

import socket
import ssl
import tempfile

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from echoapp import services
from tests.support import DEADLINE, make_certificates, start
from tests.transports.test_haproxy import v2


def offer_alpn(port: int, ca: str, header: bytes = b"") -> tuple[str | None, bytes]:
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", port), DEADLINE) as raw:
        raw.sendall(header)
        with context.wrap_socket(raw) as sock:
            return sock.selected_alpn_protocol(), sock.recv(100)


class ALPNTests(TestCase):
    def serve(self, kind: str) -> tuple[int, str]:
        try:
            import OpenSSL  # noqa: F401
        except ImportError:
            self.skipTest("TLS needs pyOpenSSL")
        paths = make_certificates(tempfile.mkdtemp())
        keys = f"privateKey={paths['server.key']}:certKey={paths['server.pem']}"
        [port] = start(self, services.tcp_greeter([f"{kind}:0:interface=127.0.0.1:{keys}"]))
        return port.getHost().port, paths["ca.pem"]

    async def test_a_client_offering_alpn_is_served(self) -> None:
        port, ca = self.serve("ssl")
        self.assertEqual(await deferToThread(offer_alpn, port, ca), (None, b"Welcome!\r\n"))

    async def test_behind_a_balancer_too(self) -> None:
        port, ca = self.serve("haproxy:ssl")
        self.assertEqual(await deferToThread(offer_alpn, port, ca, v2("10.1.1.1")), (None, b"Welcome!\r\n"))
