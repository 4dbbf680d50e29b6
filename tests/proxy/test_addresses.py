"""
A proxy's addresses (L{echoapp._proxy.addresses}): toxiproxy's HOST:PORT
form and endpoint strings, TCP and UDP, and what each stream of a proxy can
have its faults applied to.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from echoapp._faults import DATAGRAM, PLAIN, STREAM, TLS
from echoapp._proxy.addresses import (
    check,
    is_udp,
    offered_by,
    plain_tcp,
    udp_listen_description,
    udp_upstream,
)
from echoapp._proxy.schema import ProxySpec
from echoapp._transports.endpoints import UDPListen


class AddressTests(SynchronousTestCase):
    def test_plain_tcp_upstreams_a_loop_can_connect_to(self) -> None:
        for given, meant in [
            ("127.0.0.1:6379", ("127.0.0.1", 6379)),
            ("[::1]:80", ("::1", 80)),
            ("localhost:99", ("localhost", 99)),
            ("tcp:127.0.0.1:80", ("127.0.0.1", 80)),
            ("tcp:host=\\:\\:1:port=80", ("::1", 80)),
            (":6379", None),  # this host: Twisted's endpoint knows it, the loop's getaddrinfo does not
            ("tcp:host=h:port=80:timeout=3", None),
            ("tls:h:80", None),
            ("unix:/run/x.sock", None),
            ("tcp:h:0", None),
        ]:
            self.assertEqual(plain_tcp(given), meant, given)

    def test_what_each_stream_can_have(self) -> None:
        def where(listen: str, upstream: str, stream: str) -> tuple[str, ...]:
            return offered_by(ProxySpec("p", listen, upstream), stream)

        self.assertEqual(where("127.0.0.1:0", "127.0.0.1:1", "downstream"), (STREAM, PLAIN))
        self.assertEqual(where("ssl:0:privateKey=k", "127.0.0.1:1", "downstream"), (STREAM, TLS))
        self.assertEqual(where("haproxy:ssl:0:privateKey=k", "127.0.0.1:1", "downstream"), (STREAM, TLS))
        self.assertEqual(where("127.0.0.1:0", "tls:h:443", "upstream"), (STREAM, TLS))
        self.assertEqual(where("127.0.0.1:0", "unix:/x", "upstream"), (STREAM, PLAIN))
        self.assertEqual(where("udp:0", "udp:127.0.0.1:53", "upstream"), (DATAGRAM,))

    def test_a_tls_upstream_is_checked_without_a_warning(self) -> None:
        """Parsed without the reactor; Twisted warned that the stand-in had no pluggable resolver."""
        check(ProxySpec("p", "127.0.0.1:0", "tls:localhost:443"))
        self.assertEqual([warning["message"] for warning in self.flushWarnings()], [])

    def test_udp_by_type_or_by_address(self) -> None:
        self.assertTrue(is_udp(ProxySpec("p", "127.0.0.1:0", "127.0.0.1:53", protocol="udp")))
        self.assertTrue(is_udp(ProxySpec("p", "udp:127.0.0.1:0", "127.0.0.1:53")))
        self.assertTrue(is_udp(ProxySpec("p", "127.0.0.1:0", "udp:127.0.0.1:53")))
        self.assertFalse(is_udp(ProxySpec("p", "127.0.0.1:0", "127.0.0.1:53")))

    def test_listen_addresses(self) -> None:
        """toxiproxy's HOST:PORT, the upstream's udp:HOST:PORT, and echoapp's own udp: descriptions."""
        for given, meant in [
            ("127.0.0.1:0", "udp:0:interface=127.0.0.1"),
            ("udp:127.0.0.1:53", "udp:53:interface=127.0.0.1"),
            ("udp:[::1]:53", "udp:53:interface=::1"),
            (":5353", "udp:5353"),
            ("udp:5353", "udp:5353"),
            ("udp:5353:interface=127.0.0.2", "udp:5353:interface=127.0.0.2"),
        ]:
            self.assertEqual(str(UDPListen.parse(udp_listen_description(given))), meant, given)

    def test_upstream_addresses(self) -> None:
        self.assertEqual(udp_upstream("udp:10.0.0.1:53"), ("10.0.0.1", 53))
        self.assertEqual(udp_upstream("[::1]:53"), ("::1", 53))
        for bad in ("udp:dns.example:53", "udp:10.0.0.1:0", "10.0.0.1"):
            with self.assertRaises(ValueError):
                udp_upstream(bad)
