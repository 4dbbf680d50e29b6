"""
One test per item of L{echoapp._twisted}, the seam for Twisted's internals.
When a Twisted release changes one of them, the failing test's message names
the item and what echoapp relies on: C{python -m twisted.trial
tests.test_twisted_seam} is the first thing to run on a new Twisted.

The C{*FallbackTests} take each internal away (as a release that dropped it
would) and check that the item falls back, says so in one log line naming
it, and costs only its own feature.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
from types import FrameType
from typing import Any

from twisted.internet import endpoints, tcp
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.protocol import Factory
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.logfile import LogFile
from twisted.trial.unittest import SynchronousTestCase

from echoapp import _twisted, signals
from echoapp._process import ACCEPT_BATCH, PROCESS
from echoapp._transports import eager
from echoapp._transports.endpoints import ParseOnlyReactor, check_endpoint
from tests.support import CHECKOUT


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


class FallbackCase(SynchronousTestCase):
    """Each test starts with no item fallen back, and sees the log."""

    def setUp(self) -> None:
        self.patch(PROCESS, "fallen_back", set())
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def assert_said_once(self, item: str) -> str:
        """The one warning that names C{item}, as an operator reads it."""
        lines = [formatEvent(event) for event in self.events if event.get("item") == item]
        self.assertEqual(len(lines), 1, f"{item} should say once that it falls back: {lines}")
        said = next(event for event in self.events if event.get("item") == item)
        self.assertEqual(said["log_level"], LogLevel.warn)
        self.assertIn(f"echoapp._twisted.{item}", lines[0])
        self.assertNotIn("\n", lines[0])
        return lines[0]

    def assert_silent(self) -> None:
        self.assertEqual([formatEvent(event) for event in self.events if "item" in event], [])


class ResolveIPv6FallbackTests(FallbackCase):
    def test_getaddrinfo_instead(self) -> None:
        expected = _twisted.resolve_ipv6("fe80::1%lo", 80)
        self.patch(tcp, "_resolveIPv6", None)
        del tcp._resolveIPv6
        self.assertEqual(_twisted.resolve_ipv6("fe80::1%lo", 80), expected)
        self.assertEqual(_twisted.resolve_ipv6("::1", 4321)[:2], ("::1", 4321))
        line = self.assert_said_once("resolve_ipv6")
        self.assertIn("twisted.internet.tcp._resolveIPv6", line)


class TCPServerParametersFallbackTests(FallbackCase):
    def without_parameters(self) -> None:
        """Every TCP4ServerEndpoint made from now on keeps no C{_port}, as a later Twisted might."""
        made = endpoints.TCP4ServerEndpoint.__init__

        def init(endpoint: Any, *args: Any, **kwargs: Any) -> None:
            made(endpoint, *args, **kwargs)
            del endpoint._port

        self.patch(endpoints.TCP4ServerEndpoint, "__init__", init)

    def test_none(self) -> None:
        self.without_parameters()
        endpoint = endpoints.serverFromString(ParseOnlyReactor(), "tcp:1234")
        self.assertIsNone(_twisted.tcp_server_parameters(endpoint))
        self.assertIsNone(_twisted.tcp_server_parameters(endpoint))
        self.assertIn("--reuse-port is refused", self.assert_said_once("tcp_server_parameters"))

    def test_costs_only_reuse_port(self) -> None:
        self.without_parameters()
        self.assertEqual(check_endpoint("tcp:0:interface=127.0.0.1"), "tcp:0:interface=127.0.0.1")
        with self.assertRaises(ValueError) as raised:
            check_endpoint("tcp:0:interface=127.0.0.1", reuse_port=True)
        self.assertEqual(
            str(raised.exception),
            "cannot listen on 'tcp:0:interface=127.0.0.1': --reuse-port cannot read tcp: descriptions "
            "with this Twisted (see the log)",
        )
        self.assert_said_once("tcp_server_parameters")


class AsyncioLoopFallbackTests(FallbackCase):
    def test_twisteds_own_transports(self) -> None:
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        reactor = AsyncioSelectorReactor(loop)
        self.addCleanup(reactor.waker.connectionLost, None)
        del reactor._asyncioEventloop
        self.assertIsNone(_twisted.asyncio_loop(reactor))
        self.assertIs(eager.eager_reactor(reactor), reactor, "no eager writes on an asyncio reactor")
        self.assertIn("Twisted's own transports", self.assert_said_once("asyncio_loop"))

    def test_other_reactors_are_no_fallback(self) -> None:
        self.assertIsNone(_twisted.asyncio_loop(MemoryReactorClock()))
        self.assert_silent()


class ClientHostFallbackTests(FallbackCase):
    def endpoint(self) -> Any:
        endpoint = endpoints.clientFromString(ParseOnlyReactor(), "tcp:example.com:80")
        del endpoint._host
        return endpoint

    def test_host_from_the_description(self) -> None:
        endpoint = self.endpoint()
        for description, host in (
            ("tcp:example.com:80", "example.com"),
            ("tcp:host=example.org:port=80:timeout=3", "example.org"),
            ("tcp:host=\\:\\:1:port=80", "::1"),
            ("tcp:port=80:host=192.0.2.7", "192.0.2.7"),
        ):
            self.assertEqual(_twisted.client_host(endpoint, description), host, description)
        self.assertIn("the host named in the endpoint string", self.assert_said_once("client_host"))

    def test_without_a_description(self) -> None:
        self.assertIsNone(_twisted.client_host(self.endpoint()))
        self.assert_said_once("client_host")

    def test_unix_is_no_fallback(self) -> None:
        self.assertIsNone(_twisted.client_host(endpoints.clientFromString(ParseOnlyReactor(), "unix:/x")))
        self.assert_silent()


def unreadable_handler(number: int, frame: FrameType | None) -> None:
    """A SIGUSR1 handler whose log file, if any, echoapp cannot see."""


class TwistdLogFileFallbackTests(FallbackCase):
    def setUp(self) -> None:
        super().setUp()
        previous = signal.signal(signal.SIGUSR1, unreadable_handler)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        hup = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, hup)

    def test_none_and_said(self) -> None:
        self.assertIsNone(_twisted.twistd_log_file())
        self.assertIsNone(_twisted.twistd_log_file())
        self.assertIn("SIGUSR1 is left to that handler", self.assert_said_once("twistd_log_file"))

    def test_the_handler_stays(self) -> None:
        """A handler echoapp cannot read still rotates as twistd does: echoapp leaves SIGUSR1 to it."""
        service = signals.SignalService(MemoryReactorClock())
        service.startService()
        self.addCleanup(service.stopService)
        self.assertIs(signal.getsignal(signal.SIGUSR1), unreadable_handler)
        self.assertIsNot(signal.getsignal(signal.SIGHUP), signal.SIG_DFL)

    def test_a_log_file_of_its_own(self) -> None:
        """The public way: a .tac file hands SignalService the LogFile it writes to."""
        directory = tempfile.mkdtemp(prefix="echoapp-seam-")
        log_file = LogFile.fromFullPath(os.path.join(directory, "app.log"))
        self.addCleanup(log_file.close)
        service = signals.SignalService(MemoryReactorClock(), log_file=log_file)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(signal.getsignal(signal.SIGUSR1), service._on_usr1)
        log_file.write("before\n")
        service.rotate()
        self.assertTrue(os.path.exists(log_file.path + ".1"))
        self.assert_silent()


class ProxyHeaderFallbackTests(FallbackCase):
    def setUp(self) -> None:
        super().setUp()
        self.patch(_twisted, "_proxy_parsers", [])
        name = "twisted.protocols.haproxy._v2parser"
        self.addCleanup(sys.modules.__setitem__, name, importlib.import_module(name))
        sys.modules[name] = None  # type: ignore[assignment]

    def test_refused_with_one_line(self) -> None:
        self.assertIsNone(_twisted.proxy_parsers())
        self.assertRaises(ValueError, _twisted.parse_proxy_header, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")
        line = self.assert_said_once("parse_proxy_header")
        self.assertIn("twisted.protocols.haproxy._v2parser", line)
        self.assertIn("haproxy: listeners are refused", line)

    def test_costs_only_haproxy_listeners(self) -> None:
        self.assertEqual(check_endpoint("tcp:0:interface=127.0.0.1"), "tcp:0:interface=127.0.0.1")
        with self.assertRaises(ValueError) as raised:
            check_endpoint("haproxy:tcp:0:interface=127.0.0.1")
        self.assertEqual(
            str(raised.exception),
            "cannot listen on 'haproxy:tcp:0:interface=127.0.0.1': haproxy: needs Twisted's PROXY "
            "protocol parsers, which this Twisted lacks",
        )


class EagerWritesFallbackTests(FallbackCase):
    def test_said_once_with_the_item(self) -> None:
        self.patch(eager, "eager_writes_problem", lambda: "tcp.Server has no _aborting")
        self.patch(PROCESS, "eager_check", [])
        self.assertEqual(eager.eager_problem(), "tcp.Server has no _aborting")
        self.assertEqual(eager.eager_problem(), "tcp.Server has no _aborting")
        line = self.assert_said_once("eager_writes")
        self.assertIn("tcp.Server has no _aborting, so eager writes are off", line)


# Every internal the seam reaches for, taken away before echoapp is imported
# (Twisted's own haproxy package, loaded first, keeps working, as it would
# in a release that renamed its private modules).
WITHOUT_INTERNALS = """
import sys
import twisted.protocols.haproxy
for name in ("_exceptions", "_v1parser", "_v2parser"):
    sys.modules["twisted.protocols.haproxy." + name] = None
from twisted.internet import tcp
del tcp._resolveIPv6
import importlib, pkgutil, echoapp
for module in pkgutil.walk_packages(echoapp.__path__, "echoapp."):
    if module.name != "echoapp.__main__":
        importlib.import_module(module.name)
importlib.import_module("twisted.plugins.echoapp_plugins")
from echoapp._transports.endpoints import check_endpoint
print(check_endpoint("tcp6:0:interface=\\:\\:1"))
"""


class WithoutInternalsTests(SynchronousTestCase):
    def test_every_module_imports(self) -> None:
        """A Twisted without the private modules echoapp reads still imports all of echoapp."""
        result = subprocess.run(
            [sys.executable, "-c", WITHOUT_INTERNALS],
            cwd=CHECKOUT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        self.assertEqual(result.stdout, "tcp6:0:interface=\\:\\:1\n")


class AcceptBatchTests(SynchronousTestCase):
    """EagerTCPPort caps C{tcp.Port.numberAccepts}, the batch C{Port.doRead} accepts and resizes."""

    def test_the_batch_is_capped(self) -> None:
        from twisted.internet import tcp
        from twisted.internet.protocol import Factory

        self.assertIn("numberAccepts", tcp.Port.doRead.__code__.co_names, "Port.doRead no longer sizes by it")
        port = _twisted.EagerTCPPort(0, Factory(), 50, "127.0.0.1", object())  # type: ignore[arg-type]
        port.numberAccepts += 20 * 100  # what a long flood of full batches did
        self.assertEqual(port.numberAccepts, ACCEPT_BATCH)
        port.numberAccepts = 3
        self.assertEqual(port.numberAccepts, 3)


class ReactorArrivesOnceTests(SynchronousTestCase):
    """
    The reactor arrives once, when the service is made (options hold values
    and make nothing, so nothing is made before twistd installs the chosen
    reactor): each part that keeps time takes the one given, else the
    global reactor there and then, never later.
    """

    def test_given_or_the_global_one_when_made(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.task import Clock
        from twisted.web.resource import Resource

        from echoapp import signals
        from echoapp._faults import FaultPlan
        from echoapp._http import BoundedSite, SiteLimits
        from echoapp._limits import guard
        from echoapp._protocols import udp
        from echoapp._transports import haproxy
        from echoapp.template import DEFAULT_REPLY

        makers = {
            "GuardedFactory": lambda clock: guard.GuardedFactory(clock=clock),
            "HAProxyFactory": lambda clock: haproxy.HAProxyFactory(Factory(), clock=clock),
            "BoundedSite": lambda clock: BoundedSite(Resource(), SiteLimits(), clock),
            "UDPGreeter": lambda clock: udp.UDPGreeter(DEFAULT_REPLY, clock=clock),
            "SignalService": lambda clock: signals.SignalService(clock),
            "FaultPlan": lambda clock: FaultPlan(None, clock),
        }
        for name, make in makers.items():
            given = Clock()
            made = make(given)
            held = getattr(made, "clock", None) or made.reactor
            self.assertIs(held, given, name)
            made = make(None)
            self.assertIs(getattr(made, "clock", None) or made.reactor, reactor, name)
            self.assertFalse(hasattr(_twisted, "LazyReactor"), "nothing finds the reactor late")
