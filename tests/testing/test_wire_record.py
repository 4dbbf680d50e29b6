"""
The wire record where a test author meets it: C{peer.record} and
C{proxy.record} asserted on (on echoapp's reactor thread and in the test's
reactor, so on both reactors as the suite runs), saved as a capture tshark
reads, read back from a real twistd's C{--record}, logged at a trial
test's cleanup; and a failing pytest test's "echoapp wire" section, with
C{--echoapp-record=DIR} keeping each test's capture.
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoapp import testing
from echoapp.testing import Faults
from echoapp.testing._wire import TEST_RECORD_BYTES
from tests.support import DEADLINE, installed_env, tshark_follow, tshark_output
from tests.support import request as support_request


def ask(host: str, port: int, request: bytes) -> bytes:
    """One request to an echo server, its whole answer: raises where the connection is reset."""
    return support_request(host, port, request)


def ask_again_after_a_reset(host: str, port: int, request: bytes) -> bytes:
    """The client under test: it retries once when the server resets it."""
    try:
        return ask(host, port, request)
    except OSError as error:  # the RST may come before the half-close: that is ENOTCONN
        if error.errno not in (errno.ECONNRESET, errno.ENOTCONN, errno.EPIPE):
            raise
        return ask(host, port, request)


def temporary(test: SynchronousTestCase) -> str:
    directory = tempfile.mkdtemp(prefix="echoapp-wire-")
    test.addCleanup(shutil.rmtree, directory, True)
    return directory


def settled(peer: testing.Peer, count: int) -> list[testing.Connection]:
    """The peer's connections once C{count} of them have ended (each side's close is recorded then)."""
    end = time.monotonic() + DEADLINE
    while True:
        found = peer.record.connections
        if sum(c.ended for c in found) >= count or time.monotonic() > end:
            return found
        time.sleep(0.01)


class PeerRecordTests(SynchronousTestCase):
    """C{peer.record} in a synchronous test: the peers run on echoapp's reactor thread."""

    def test_the_client_retried_after_the_reset(self) -> None:
        peer = testing.echo(self, faults=Faults(reset_after_bytes=3, first=1))
        self.assertEqual(ask_again_after_a_reset(peer.host, peer.port, b"request\n"), b"request\n")
        first, second = settled(peer, 2)
        self.assertTrue(first.reset, first.closes)
        self.assertIn("server closed (RST)", first.closes)
        self.assertFalse(second.reset, second.closes)
        # The retry came after the reset, and asked the same again.
        reset_at = min(e.at for e in first.events if e.kind == "close" and "RST" in e.text)
        self.assertGreaterEqual(second.opened, reset_at)
        self.assertEqual([first.from_client, second.from_client], [b"request\n", b"request\n"])
        self.assertEqual(second.from_server, b"request\n")
        self.assertTrue(any(text.startswith("reset") for text in first.faults), first.faults)
        self.assertIn("server closed (RST)", str(peer.record))

    def test_no_request_was_sent_twice_through_the_proxy(self) -> None:
        echo = testing.echo(self)
        proxy = testing.proxy(self, upstream=f"tcp:{echo.host}:{echo.port}", faults=Faults(latency=0.02))
        self.assertEqual(ask(proxy.host, proxy.port, b"GET /once\n"), b"GET /once\n")
        (seen,) = settled(proxy, 1)
        sent = [chunk for c in proxy.record.connections for chunk in c.messages("client->server")]
        self.assertEqual(b"".join(sent).count(b"GET /once"), 1)
        self.assertEqual(seen.listener, "echoapp-proxy")
        self.assertEqual(seen.from_server, b"GET /once\n")
        self.assertTrue(any(text.startswith("latency") for text in seen.faults), seen.faults)
        # The server behind it recorded the same request, once, from the proxy.
        (behind,) = settled(echo, 1)
        self.assertEqual(behind.from_client, b"GET /once\n")

    def test_a_udp_source_is_one_record(self) -> None:
        peer = testing.udp(self)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(5)
            for name in (b"Ann", b"Bob"):
                sock.sendto(name, (peer.host, peer.port))
                sock.recvfrom(100)
            here = sock.getsockname()
        (source,) = peer.record.connections
        self.assertEqual((source.kind, source.client), ("udp", (here[0], here[1])))
        self.assertEqual(source.messages("client->server"), [b"Ann", b"Bob"])
        self.assertEqual(source.messages("server->client"), [b"Hello, Ann!", b"Hello, Bob!"])

    def test_the_record_is_bounded(self) -> None:
        """Always on, so bounded: past L{TEST_RECORD_BYTES} the oldest connections go, counted."""
        peer = testing.echo(self)
        big = b"x" * 20_000
        for _ in range(80):
            self.assertEqual(len(ask(peer.host, peer.port, big)), len(big))
        settled(peer, 80)
        record = peer.record
        kept = record.connections
        self.assertGreater(record.evicted, 0)
        self.assertEqual(len(kept) + record.evicted, 80)
        self.assertLessEqual(len(kept) * 16_384, TEST_RECORD_BYTES)
        # What a connection keeps: the first and last 4 KiB each way, and the count.
        last = kept[-1]
        self.assertEqual((last.client_total, len(last.from_client)), (20_000, 8192))
        self.assertIn("evicted", record.text())

    def test_saved_as_a_capture_tshark_reads(self) -> None:
        peer = testing.greeter(self, faults=Faults(latency=0.01))
        with socket.create_connection((peer.host, peer.port), timeout=5) as sock:
            sock.recv(100)
            sock.sendall(b"Ann\n")
            sock.recv(100)
        settled(peer, 1)
        path = os.path.join(temporary(self), "peer.pcapng")
        peer.record.save(path)
        (connection,) = peer.record.connections
        self.assertEqual(tshark_follow(path), (connection.from_client, connection.from_server))
        said = tshark_output("-r", path, "-T", "fields", "-e", "frame.comment")
        self.assertIn("latency", said)

    def test_a_long_connection_saved_says_what_was_left_out(self) -> None:
        peer = testing.echo(self)
        ask(peer.host, peer.port, bytes(range(256)) * 100)
        settled(peer, 1)
        path = os.path.join(temporary(self), "long.pcapng")
        peer.record.save(path)
        sent, _ = tshark_follow(path)
        self.assertEqual((sent[:4096], sent[-4096:]), ((bytes(range(256)) * 16), (bytes(range(256)) * 16)))
        self.assertEqual(len(sent), 8192)
        said = tshark_output("-r", path, "-T", "fields", "-e", "frame.comment")
        self.assertIn("not kept by the bounded record", said)

    def test_read_back_from_a_twistds_capture(self) -> None:
        path = os.path.join(temporary(self), "twistd.pcapng")
        with testing.Process(
            "echoapp-echo", "--fault", "reset-after-bytes=3,seed=9", "--record", path
        ) as server:
            with self.assertRaises(ConnectionResetError):
                ask(server.host, server.port, b"request\n")
        record = server.record
        assert record is not None
        (connection,) = record.connections
        self.assertEqual(connection.listener, "echoapp-echo")
        self.assertEqual(connection.from_client, b"request\n")
        self.assertTrue(connection.reset)
        self.assertIn("seed 9", str(record))
        self.assertIsNone(testing.Process("echoapp-echo").record)

    def test_a_trial_tests_record_is_in_its_log(self) -> None:
        """trial has no report sections: the record goes to the test's log at cleanup."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        class Inner(SynchronousTestCase):
            def test_talks(self) -> None:
                peer = testing.greeter(self, banner="Hi there")
                with socket.create_connection((peer.host, peer.port), timeout=5) as sock:
                    sock.recv(100)

        result = self.run_inner(Inner("test_talks"))
        self.assertTrue(result.wasSuccessful())
        logged = [e for e in events if "wire record of" in e.get("log_format", "")]
        self.assertEqual(len(logged), 1, logged)
        self.assertIn("test_talks", logged[0]["test"])
        self.assertIn('"Hi there\\r\\n"', logged[0]["text"])

    def run_inner(self, test: SynchronousTestCase) -> Any:
        from twisted.trial.reporter import TestResult

        result = TestResult()
        test.run(result)
        return result


class InTheTestsReactorTests(TestCase):
    """C{peer.record} of a peer in trial's own reactor (the one the suite runs on)."""

    async def test_a_reply_held_by_latency_went_after_it(self) -> None:
        peer = testing.greeter(self, faults=Faults(latency=0.05))

        def talk() -> bytes:
            with socket.create_connection((peer.host, peer.port), timeout=5) as sock:
                return sock.recv(100)

        self.assertEqual(await deferToThread(talk), b"Welcome!\r\n")
        (connection,) = peer.record.connections
        (banner,) = [e for e in connection.events if e.kind == "data"]
        self.assertEqual(banner.data, b"Welcome!\r\n")
        self.assertGreaterEqual(banner.at - connection.opened, 0.04)  # a generous bound on the fault's delay
        self.assertTrue(any(text.startswith("latency") for text in connection.faults), connection.faults)


# A session that fails on purpose, with every fixture; and one test that passes.
FAILING = """
import socket

from echoapp.testing import Faults


def talk(host, port, data):
    with socket.create_connection((host, port), timeout=5) as sock:
        got = sock.recv(100)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(100):
            got += chunk
        return got


def test_peer_fails(echoapp_peer):
    peer = echoapp_peer("greeter", faults=Faults(latency=0.01, seed=4242))
    assert talk(peer.host, peer.port, b"Zed\\n") == b"something else"


def test_proxy_fails(echoapp_peer, echoapp_proxy):
    echo = echoapp_peer("echo")
    proxy = echoapp_proxy(upstream=f"tcp:127.0.0.1:{echo.port}", faults=Faults(reset_after_bytes=4))
    with socket.create_connection((proxy.host, proxy.port), timeout=5) as sock:
        sock.sendall(b"through the proxy\\n")
        assert sock.recv(100) == b"something else"


def test_process_fails(echoapp_process):
    server = echoapp_process("echoapp-tcp", "--fault", "latency=10ms,seed=77")
    assert talk(server.host, server.port, b"Proc\\n") == b"something else"


def test_passes_and_asserts_on_the_record(echoapp_peer):
    peer = echoapp_peer("echo")
    with socket.create_connection((peer.host, peer.port), timeout=5) as sock:
        sock.sendall(b"once\\n")
        assert sock.recv(100) == b"once\\n"
    (connection,) = peer.record.connections
    assert connection.from_client == b"once\\n"
"""


class FailingReportTests(SynchronousTestCase):
    """A user's failing pytest session: its report shows what went over the wire."""

    def setUp(self) -> None:
        self.directory = temporary(self)
        with open(os.path.join(self.directory, "test_client.py"), "w", encoding="utf-8") as out:
            out.write(FAILING)
        self.kept = os.path.join(self.directory, "wire")
        self.ran = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
             f"--echoapp-record={self.kept}", "test_client.py"],
            cwd=self.directory, capture_output=True, text=True, env=installed_env(), timeout=DEADLINE * 6,
        )  # fmt: skip
        self.out = self.ran.stdout

    def section(self, test: str) -> str:
        """The "echoapp wire" section of C{test}'s failure."""
        failure = self.out.split(f"_ {test} _", 1)[1].split("\n___", 1)[0].split("= short test summary", 1)[0]
        return failure.split("echoapp wire", 1)[1]

    def test_each_failure_shows_its_wire_and_each_capture_is_kept(self) -> None:
        self.assertEqual(self.ran.returncode, 1, self.out[-3000:] + self.ran.stderr[-2000:])
        self.assertIn("3 failed, 1 passed", self.out)
        peer = self.section("test_peer_fails")
        self.assertIn('server->client  10 B  "Welcome!\\r\\n"', peer)
        self.assertIn('client->server   4 B  "Zed\\n"', peer)
        self.assertIn("fault: latency", peer)
        self.assertIn("seed 4242", peer)
        proxy = self.section("test_proxy_fails")
        self.assertIn("echoapp-proxy on 127.0.0.1:", proxy)
        self.assertIn('"through the proxy\\n"', proxy)
        self.assertIn("server closed (RST)", proxy)
        self.assertIn("fault: reset", proxy)
        process = self.section("test_process_fails")
        self.assertIn("echoapp-tcp (twistd, from its --record capture)", process)
        self.assertIn('"Proc\\n"', process)
        self.assertIn("fault: latency", process)
        self.assertIn("seed 77", process)
        self.assertEqual(self.out.count("echoapp wire"), 3)  # the failures' only
        self.check_captures()

    def check_captures(self) -> None:
        """C{--echoapp-record=DIR} kept a capture per peer of each test, passing too: tshark reads it."""
        names = sorted(os.path.basename(path) for path in glob.glob(os.path.join(self.kept, "*.pcapng")))
        self.assertEqual(
            names,
            [
                "test_client.py_test_passes_and_asserts_on_the_record.pcapng",
                "test_client.py_test_peer_fails.pcapng",
                "test_client.py_test_process_fails.pcapng",
                "test_client.py_test_proxy_fails.2.pcapng",  # the proxy, started second
                "test_client.py_test_proxy_fails.pcapng",
            ],
        )
        sent, received = tshark_follow(os.path.join(self.kept, "test_client.py_test_peer_fails.pcapng"))
        self.assertEqual(sent, b"Zed\n")
        self.assertTrue(received.startswith(b"Welcome!\r\n"), received)
        said = tshark_output("-r", os.path.join(self.kept, "test_client.py_test_process_fails.pcapng"),
                             "-T", "fields", "-e", "frame.comment")  # fmt: skip
        self.assertIn("latency", said)
