"""Scale-out across cores: --reuse-port lets several processes share a port."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from echoapp._tap import tcp, udp
from echoapp._transports.endpoints import check_endpoint
from tests.support import DEADLINE, Twistd, free_port


class ReusePortOptionTests(SynchronousTestCase):
    def test_only_for_tcp(self) -> None:
        self.assertEqual(check_endpoint("tcp:0", reuse_port=True), "tcp:0")
        self.assertEqual(
            check_endpoint(r"tcp6:0:interface=\:\:1", reuse_port=True), r"tcp6:0:interface=\:\:1"
        )
        error = self.assertRaises(ValueError, check_endpoint, "unix:/tmp/x.sock", True)
        self.assertIn("--reuse-port works with tcp: and tcp6: listeners only", str(error))

    def test_flag(self) -> None:
        options = tcp.Options()
        options.parseOptions(["--reuse-port"])
        self.assertTrue(options["reuse-port"])
        options = udp.Options()
        options.parseOptions([])
        self.assertFalse(options["reuse-port"])
        self.assertRaises(
            usage.UsageError, tcp.Options().parseOptions, ["--reuse-port", "--listen", "unix:/tmp/x"]
        )


def answers_until_both(probe: Callable[[], bytes]) -> set[bytes]:
    """Ask until two different processes have answered (bounded in count and time)."""
    seen: set[bytes] = set()
    end = time.monotonic() + DEADLINE
    for _ in range(500):
        if len(seen) == 2 or time.monotonic() > end:
            break
        seen.add(probe())
    return seen


class ReusePortProcessTests(SynchronousTestCase):
    def start_two(self, plugin: str, listen: str, *per_process: tuple[str, str]) -> None:
        for option, value in per_process:
            server = Twistd([plugin, "--reuse-port", "--listen", listen, option, value])
            self.addCleanup(server.stop)

    def test_two_processes_share_a_tcp_port(self) -> None:
        port = free_port(socket.SOCK_STREAM)
        self.start_two("echoapp-tcp", f"tcp:{port}:interface=127.0.0.1", ("--banner", "A"), ("--banner", "B"))

        def probe() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
                return sock.recv(100)

        self.assertEqual(answers_until_both(probe), {b"A\r\n", b"B\r\n"})

    def test_two_processes_share_a_udp_port(self) -> None:
        port = free_port(socket.SOCK_DGRAM)
        self.start_two(
            "echoapp-udp", f"udp:{port}:interface=127.0.0.1", ("--reply", "A {}"), ("--reply", "B {}")
        )

        def probe() -> bytes:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # a new source port each time
                sock.settimeout(DEADLINE)
                sock.sendto(b"x", ("127.0.0.1", port))
                return sock.recvfrom(100)[0]

        self.assertEqual(answers_until_both(probe), {b"A x", b"B x"})
