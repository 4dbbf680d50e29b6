"""
echoapp's peers in a plain synchronous test: a blocking client (redis-py,
a raw socket) called directly from the test's thread, through
C{echoapp_proxy} and C{echoapp_peer}, in a pytest run with and without
pytest-twisted, with async tests in the same session; and the trial helpers
given a test case that never runs the reactor.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from echoapp import testing
from echoapp._twisted import asyncio_loop, global_reactor
from echoapp.testing import Faults
from echoapp.testing._thread import shared
from tests.support import DEADLINE, installed_env, request, serve_on_a_free_port

# What a newcomer writes first: no async, no deferToThread, the client's own
# blocking calls.  Each runs under a deadline of its own (the client's timeout).
SYNC = """
import os
import socket

import pytest

from echoapp.testing import Faults


def exchange(host, port, data):
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := sock.recv(100):
            got += chunk
        return got


def test_a_socket_through_the_proxy_to_a_peer(echoapp_peer, echoapp_proxy):
    echo = echoapp_peer("echo")
    proxy = echoapp_proxy(upstream=f"tcp:{echo.host}:{echo.port}")
    assert exchange(proxy.host, proxy.port, b"hello") == b"hello"
    proxy.faults = Faults(half_close_after_bytes=3)
    assert proxy.faults == Faults(half_close_after_bytes=3)
    assert exchange(proxy.host, proxy.port, b"hello") == b"hel"
    proxy.faults = Faults()
    proxy.down()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((proxy.host, proxy.port), timeout=5)
    proxy.up()
    assert exchange(proxy.host, proxy.port, b"again") == b"again"


def test_a_greeters_faults_set_from_the_tests_thread(echoapp_peer):
    peer = echoapp_peer("greeter", banner="Hi", faults=Faults(stall="answer"))
    with socket.create_connection((peer.host, peer.port), timeout=0.5) as sock:
        with pytest.raises(TimeoutError):
            sock.recv(100)
    peer.faults = Faults()
    with socket.create_connection((peer.host, peer.port), timeout=5) as sock:
        assert sock.recv(100) == b"Hi\\r\\n"
    with pytest.raises(ValueError, match="loss"):
        peer.faults = Faults(loss=0.5)  # one line, raised in the test's thread
    peer.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((peer.host, peer.port), timeout=5)


def test_redis_py_through_the_proxy(echoapp_proxy):
    redis = pytest.importorskip("redis")
    if "ECHOAPP_TEST_REDIS" not in os.environ:
        pytest.skip("no redis-server to proxy")
    proxy = echoapp_proxy(upstream=f"tcp:127.0.0.1:{os.environ['ECHOAPP_TEST_REDIS']}")
    client = redis.Redis(host=proxy.host, port=proxy.port, socket_timeout=5)
    client.set("k", "v")
    assert client.get("k") == b"v"
    proxy.down()
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host=proxy.host, port=proxy.port, socket_timeout=5).get("k")
"""

# The same session's async tests, as pytest-twisted users write them.
ASYNC = """
import socket

import pytest_twisted
from twisted.internet.threads import deferToThread


def banner(host, port):
    with socket.create_connection((host, port), timeout=5) as sock:
        return sock.recv(100)


@pytest_twisted.ensureDeferred
async def test_an_async_test_beside_them(echoapp_peer, echoapp_proxy):
    peer = echoapp_peer("greeter", banner="Hi")
    proxy = echoapp_proxy(upstream=f"tcp:{peer.host}:{peer.port}")
    assert await deferToThread(banner, proxy.host, proxy.port) == b"Hi\\r\\n"
    await proxy.down()
    proxy.up()
    assert await deferToThread(banner, proxy.host, proxy.port) == b"Hi\\r\\n"
    await peer.stop()
"""


def redis_server(test: SynchronousTestCase) -> dict[str, str]:
    """A redis-server on a free loopback port for the run (its port in the environment), if installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        return {}

    def ours(port: int) -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(100) == b"+PONG\r\n"

    command = [binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--port"]
    return {"ECHOAPP_TEST_REDIS": str(serve_on_a_free_port(test, command, ours, "redis-server"))}


def with_redis() -> bool:
    """Does the redis-py test run here (else it skips)?"""
    import importlib.util

    return importlib.util.find_spec("redis") is not None and shutil.which("redis-server") is not None


class PytestTests(SynchronousTestCase):
    """Subprocess pytest runs of the tests above, as a user's suite runs them."""

    def run_pytest(self, files: dict[str, str], *options: str) -> subprocess.CompletedProcess[str]:
        directory = tempfile.mkdtemp(prefix="echoapp-sync-")
        self.addCleanup(shutil.rmtree, directory, True)
        for name, text in files.items():
            with open(os.path.join(directory, name), "w", encoding="utf-8") as out:
                out.write(text)
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-p",
                "no:randomly",
                *options,
                *files,
            ],
            cwd=directory,
            capture_output=True,
            text=True,
            env={**installed_env(), **redis_server(self)},
            timeout=DEADLINE * 6,
        )

    def test_without_pytest_twisted(self) -> None:
        ran = self.run_pytest({"test_sync.py": SYNC}, "-p", "no:twisted")
        self.assertIn(f"{2 + with_redis()} passed", ran.stdout, ran.stdout[-3000:] + ran.stderr[-2000:])

    def test_with_pytest_twisted_and_async_tests_in_the_session(self) -> None:
        # Both orders: async first (pytest-twisted's greenlet already runs the reactor), sync first.
        for files in (
            {"test_async.py": ASYNC, "test_sync.py": SYNC},
            {"test_sync.py": SYNC, "test_async.py": ASYNC},
        ):
            ran = self.run_pytest(files)
            self.assertIn(f"{3 + with_redis()} passed", ran.stdout, ran.stdout[-3000:] + ran.stderr[-2000:])

    def test_on_pytest_twisteds_asyncio_reactor(self) -> None:
        ran = self.run_pytest({"test_async.py": ASYNC, "test_sync.py": SYNC}, "--reactor=asyncio")
        self.assertIn(f"{3 + with_redis()} passed", ran.stdout, ran.stdout[-3000:] + ran.stderr[-2000:])


exchange = request


class TrialHelperTests(SynchronousTestCase):
    """
    The trial helpers given a C{SynchronousTestCase}, which never runs the
    reactor: the peers run on echoapp's reactor thread, and the test blocks.
    """

    def test_a_blocking_client_through_a_proxy(self) -> None:
        greeter = testing.greeter(self, banner="Hi")
        with socket.create_connection((greeter.host, greeter.port), timeout=5) as sock:
            self.assertEqual(sock.recv(100), b"Hi\r\n")
        echo = testing.echo(self)
        proxy = testing.proxy(
            self, upstream=f"tcp:{echo.host}:{echo.port}", faults=Faults(half_close_after_bytes=2)
        )
        self.assertEqual(exchange(proxy.host, proxy.port, b"hello"), b"he")
        proxy.faults_upstream = Faults(half_close_after_bytes=3)
        proxy.faults = Faults()
        self.assertEqual((proxy.faults, proxy.faults_upstream), (Faults(), Faults(half_close_after_bytes=3)))
        self.assertEqual(exchange(proxy.host, proxy.port, b"hello"), b"hel")
        self.assertEqual(proxy.name, "echoapp-proxy")
        self.assertEqual(greeter.name, "echoapp-tcp")

    def test_stopped_at_cleanup_and_by_hand(self) -> None:
        peer = testing.echo(self)
        stopped = peer.stop()
        self.assertIsNone(self.successResultOf(stopped), "fired: stopped when stop() returns")
        self.assertRaises(ConnectionRefusedError, socket.create_connection, (peer.host, peer.port), 5)
        self.successResultOf(peer.stop())  # twice: harmless (the cleanup is the second)

    def test_an_error_in_the_reactors_thread_is_raised_in_the_tests(self) -> None:
        peer = testing.udp(self)
        error = self.assertRaises(ValueError, setattr, peer, "faults", Faults(bandwidth=10))
        self.assertNotIn("\n", str(error))
        self.assertEqual(peer.faults, Faults())

    def test_the_threads_reactor_is_of_the_installed_kind(self) -> None:
        """On uvloop where trial runs on uvloop, asyncio's loop on asyncio's, epoll otherwise."""
        mine, installed = shared().reactor, global_reactor()
        loop = asyncio_loop(installed)
        if loop is None:
            self.assertIs(type(mine), type(installed))
        else:
            self.assertIs(type(asyncio_loop(mine)), type(loop))
        self.assertIsNot(mine, installed)

    def test_a_call_from_the_reactors_own_thread_runs_at_once(self) -> None:
        thread = shared()
        inner = thread.call(lambda: thread.call(lambda: thread.inside()))
        self.assertTrue(inner)
        self.assertFalse(thread.inside())
        fired: Deferred[int] = Deferred()
        thread.reactor.callFromThread(thread.reactor.callLater, 0.01, fired.callback, 7)
        self.assertEqual(thread.call(lambda: fired), 7, "a Deferred's result once it fires")


NEVER_GLOBAL = """
import socket, sys, unittest
from echoapp import testing
from echoapp.testing import Faults

class Case(unittest.TestCase):
    def runTest(self):
        peer = testing.greeter(self, faults=Faults(latency=0.01, slice=2), banner="Hi", idle_timeout=5)
        with socket.create_connection((peer.host, peer.port), timeout=5) as sock:
            got = b""
            while len(got) < 4:
                got += sock.recv(100)
        echo = testing.echo(self)
        proxy = testing.proxy(self, upstream=f"tcp:{echo.host}:{echo.port}", faults=Faults(latency=0.01))
        with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
            sock.sendall(b"ab")
            assert sock.recv(100) == b"ab"
        udp = testing.udp(self, faults=Faults(latency=0.01))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(b"u", (udp.host, udp.port))
            assert sock.recvfrom(100)[0] == b"Hello, u!"
        assert got == b"Hi\\r\\n", got
        assert "twisted.internet.reactor" not in sys.modules, "the global reactor was installed"

result = unittest.TextTestRunner().run(Case())
sys.exit(not result.wasSuccessful())
"""


class NeverTheGlobalReactorTests(SynchronousTestCase):
    def test_peers_on_the_thread_never_touch_the_global_reactor(self) -> None:
        """
        Everything a peer on echoapp's thread does goes through that
        thread's reactor: none of it falls back on the global one (which
        would install it, and then be called from the wrong thread).
        """
        ran = subprocess.run(
            [sys.executable, "-c", NEVER_GLOBAL], capture_output=True, text=True, timeout=DEADLINE * 3
        )
        self.assertEqual(ran.returncode, 0, ran.stdout + ran.stderr)
