"""
One test per item of L{echoapp._twisted}, the seam for Twisted's internals.
When a Twisted release changes one of them, the failing test's message names
the item and what echoapp relies on, so moving the upper bound on Twisted in
setup.cfg starts here: C{python -m twisted.trial tests.test_twisted_seam}.
"""

from __future__ import annotations

import asyncio
import socket

from twisted.internet import endpoints
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.trial.unittest import SynchronousTestCase

from echoapp import _twisted
from echoapp.endpoints import ParseOnlyReactor


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
