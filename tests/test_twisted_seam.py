"""
One test per item of L{echoapp._twisted}, the seam for Twisted's internals.
When a Twisted release changes one of them, the failing test's message names
the item and what echoapp relies on, so moving the upper bound on Twisted in
setup.cfg starts here: C{python -m twisted.trial tests.test_twisted_seam}.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from twisted.internet import endpoints
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.trial.unittest import SynchronousTestCase

from echoapp import _twisted
from echoapp._transports.endpoints import ParseOnlyReactor


class ResolveIPv6Tests(SynchronousTestCase):
    """twisted.internet.tcp._resolveIPv6: what Twisted's tcp6: binds, scope IDs included."""

    def test_plain_address(self) -> None:
        address = _twisted.resolve_ipv6("::1", 4321)
        self.assertEqual(address[:2], ("::1", 4321), "twisted.internet.tcp._resolveIPv6 changed its result")

    def test_scope_id(self) -> None:
        index = socket.if_nametoindex("lo")
        address = _twisted.resolve_ipv6("fe80::1%lo", 0)
        self.assertEqual(
            (address[0].split("%")[0], address[3]),
            ("fe80::1", index),
            "twisted.internet.tcp._resolveIPv6 no longer resolves a scope ID",
        )


class TCPServerParametersTests(SynchronousTestCase):
    """TCP4ServerEndpoint/TCP6ServerEndpoint keep their description as _port, _interface, _backlog."""

    def test_tcp4(self) -> None:
        endpoint = endpoints.serverFromString(ParseOnlyReactor(), "tcp:1234:interface=127.0.0.2:backlog=7")
        self.assertEqual(
            _twisted.tcp_server_parameters(endpoint),
            (1234, "127.0.0.2", 7),
            "TCP4ServerEndpoint's _port/_interface/_backlog changed",
        )

    def test_tcp6_defaults(self) -> None:
        endpoint = endpoints.serverFromString(ParseOnlyReactor(), "tcp6:80")
        self.assertEqual(
            _twisted.tcp_server_parameters(endpoint),
            (80, "::", 50),
            "TCP6ServerEndpoint's _port/_interface/_backlog changed",
        )


class AsyncioLoopTests(SynchronousTestCase):
    """AsyncioSelectorReactor keeps its loop as _asyncioEventloop."""

    def test_finds_the_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        reactor = AsyncioSelectorReactor(loop)
        self.addCleanup(reactor.waker.connectionLost, None)  # the waker's pipe, never run
        self.assertIs(
            _twisted.asyncio_loop(reactor), loop, "AsyncioSelectorReactor no longer keeps _asyncioEventloop"
        )

    def test_other_reactors_have_none(self) -> None:
        self.assertIsNone(_twisted.asyncio_loop(object()))


class ClientHostTests(SynchronousTestCase):
    """HostnameEndpoint._hostText and TCP4ClientEndpoint._host: the name TLS checks against."""

    def test_hostname_endpoint(self) -> None:
        endpoint = endpoints.clientFromString(ParseOnlyReactor(), "tcp:example.com:80")
        self.assertEqual(_twisted.client_host(endpoint), "example.com", "HostnameEndpoint._hostText changed")

    def test_tcp4_client_endpoint(self) -> None:
        endpoint = endpoints.TCP4ClientEndpoint(ParseOnlyReactor(), "192.0.2.1", 80)
        self.assertEqual(_twisted.client_host(endpoint), "192.0.2.1", "TCP4ClientEndpoint._host changed")

    def test_unix_has_none(self) -> None:
        endpoint = endpoints.clientFromString(ParseOnlyReactor(), "unix:/tmp/x.sock")
        self.assertIsNone(_twisted.client_host(endpoint))


class GlobalReactorTests(SynchronousTestCase):
    def test_is_the_installed_reactor(self) -> None:
        from twisted.internet import reactor

        self.assertIs(_twisted.global_reactor(), reactor)


class TwistdLogFileTests(SynchronousTestCase):
    """twistd keeps its LogFile only in the closure of the SIGUSR1 handler it installs."""

    def test_found_through_the_rotation_handler(self) -> None:
        import signal
        import tempfile

        from twisted.python.logfile import LogFile
        from twisted.scripts._twistd_unix import UnixAppLogger

        previous = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        path = tempfile.mktemp(prefix="echoapp-seam-", suffix=".log")
        logger = UnixAppLogger(
            {"logfile": path, "nodaemon": False, "syslog": False, "prefix": "", "logger": None}
        )
        observer = logger._getLogObserver()
        found = _twisted.twistd_log_file()
        self.assertIsInstance(found, LogFile, "twistd's SIGUSR1 handler no longer holds its LogFile")
        assert found is not None
        self.assertEqual(found.path, path)
        found.close()
        del observer

    def test_none_without_a_log_file(self) -> None:
        import signal

        previous = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        self.assertIsNone(_twisted.twistd_log_file())


class ProxyHeaderTests(SynchronousTestCase):
    """twisted.protocols.haproxy._v1parser.V1Parser and _v2parser.V2Parser: feed() and the info they give."""

    def test_v1(self) -> None:
        complete, source, rest = _twisted.parse_proxy_header(b"PROXY TCP4 10.1.2.3 127.0.0.1 5555 9999\r\nhi")
        self.assertEqual((complete, rest), (True, b"hi"), "V1Parser.feed changed")
        self.assertEqual(
            (source.host, source.port), ("10.1.2.3", 5555), "V1Parser's ProxyInfo.source changed"
        )  # type: ignore[union-attr]

    def test_v2_and_local(self) -> None:
        import struct

        prefix = b"\r\n\r\n\x00\r\nQUIT\n"
        addresses = bytes([10, 9, 8, 7, 127, 0, 0, 1]) + struct.pack("!HH", 4444, 9999)
        header = prefix + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses
        complete, source, rest = _twisted.parse_proxy_header(header + b"x")
        self.assertEqual((complete, source.host, rest), (True, "10.9.8.7", b"x"), "V2Parser changed")  # type: ignore[union-attr]
        local = _twisted.parse_proxy_header(prefix + bytes([0x20, 0x00, 0, 0]))
        self.assertEqual(local, (True, None, b""), "V2Parser no longer gives LOCAL a source of None")

    def test_incomplete_and_malformed(self) -> None:
        self.assertEqual(_twisted.parse_proxy_header(b"PROXY TCP4 10.1"), (False, None, b""))
        self.assertEqual(_twisted.parse_proxy_header(b"\r\n\r\n"), (False, None, b""))
        for bad in (b"GET / HTTP/1.1\r\n", b"PROXY TCP4 a b c d\r\n", b"PROXY " + b"x" * 200):
            self.assertRaises(ValueError, _twisted.parse_proxy_header, bad)


class EagerWritesTests(SynchronousTestCase):
    """
    EagerWrites relies on FileDescriptor's write queue (dataBuffer, offset,
    _tempDataLen), its close states (connected, _writeDisconnected,
    _aborting), writeSomeData, TLS, and tcp/unix Port.transport.
    """

    def test_nothing_changed(self) -> None:
        self.assertIsNone(_twisted.eager_writes_problem(), "what eager writes rely on changed in Twisted")

    def test_a_changed_transport_is_named(self) -> None:
        from twisted.internet import tcp

        self.patch(tcp.Port, "transport", object)
        self.assertEqual(_twisted.eager_writes_problem(), "tcp.Port.transport is not tcp.Server")

    def test_a_missing_attribute_is_named(self) -> None:
        from twisted.internet import tcp

        self.patch(tcp.Connection, "writeSomeData", None)
        del tcp.Connection.writeSomeData
        self.assertEqual(_twisted.eager_writes_problem(), "tcp.Server has no writeSomeData")

    def test_queue_change_is_named(self) -> None:
        from twisted.internet import abstract

        self.patch(abstract.FileDescriptor, "write", lambda self, data: None)
        self.assertEqual(
            _twisted.eager_writes_problem(), "FileDescriptor.write no longer queues into _tempDataLen"
        )

    def test_queued(self) -> None:
        from twisted.internet import abstract

        descriptor = abstract.FileDescriptor(reactor=object())  # type: ignore[arg-type]
        descriptor.dataBuffer, descriptor.offset = b"abcdef", 2
        descriptor._tempDataLen = 3
        self.assertEqual(
            _twisted.queued(descriptor), 7, "FileDescriptor's queue is not dataBuffer[offset:] + _tempDataLen"
        )

    def test_adopt_and_mark_tls(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.protocol import Factory, Protocol

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        self.addCleanup(sock.close)
        port = _twisted.adopt_eager_port(
            reactor, sock.fileno(), socket.AF_INET, Factory.forProtocol(Protocol)
        )
        self.addCleanup(port.stopListening)
        self.assertIs(port.transport, _twisted.EagerTCPServer, "tcp.Port._fromListeningDescriptor changed")
        self.assertEqual(_twisted.mark_tls(port)._type, "TLS", "tcp.Port._type changed")


class AcceptBatchTests(SynchronousTestCase):
    """EagerTCPPort caps C{tcp.Port.numberAccepts}, the batch C{Port.doRead} accepts and resizes."""

    def test_the_batch_is_capped(self) -> None:
        from twisted.internet import tcp
        from twisted.internet.protocol import Factory

        self.assertIn("numberAccepts", tcp.Port.doRead.__code__.co_names, "Port.doRead no longer sizes by it")
        port = _twisted.EagerTCPPort(0, Factory(), 50, "127.0.0.1", object())  # type: ignore[arg-type]
        port.numberAccepts += 20 * 100  # what a long flood of full batches did
        self.assertEqual(port.numberAccepts, _twisted.ACCEPT_BATCH)
        port.numberAccepts = 3
        self.assertEqual(port.numberAccepts, 3)


class LazyReactorTests(SynchronousTestCase):
    """The one way echoapp finds the reactor late: given, or the global one when first read."""

    def test_given_or_the_global_one_when_first_read(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.task import Clock

        class Holder:
            clock = _twisted.LazyReactor()

            def __init__(self, clock: Any = None) -> None:
                self._clock = clock

        given = Clock()
        self.assertIs(Holder(given).clock, given)
        late = Holder()
        self.assertIsNone(late._clock, "nothing is looked up until it is read")
        self.assertIs(late.clock, reactor)

    def test_every_late_lookup_uses_it(self) -> None:
        from echoapp import _faults, _monitor, signals
        from echoapp._limits import guard
        from echoapp._transports import proxy_protocol

        for owner, name in (
            (guard.GuardedFactory, "clock"),
            (proxy_protocol.ProxyFactory, "clock"),
            (_monitor.MonitorSite, "clock"),
            (_faults.FaultPlan, "clock"),
            (signals.SignalService, "reactor"),
        ):
            self.assertIsInstance(vars(owner)[name], _twisted.LazyReactor, owner)
