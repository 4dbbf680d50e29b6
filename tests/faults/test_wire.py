"""
Each fault against unmodified real clients over loopback: a Python socket, C{echoapp-client} and C{nc}.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from echoapp import testing
from echoapp._faults import (
    Faults,
)
from tests.support import DEADLINE, installed_env, make_certificates, recv_until_closed


class RealClientTests(TestCase):
    """Unmodified clients meet each fault, over loopback, in a thread (the reactor serves meanwhile)."""

    async def test_read_timeout_fails_on_2s_latency_and_passes_on_100ms(self) -> None:
        def ask(port: int) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                return sock.recv(100)

        slow = testing.greeter(self, faults=Faults(latency=2))
        with self.assertRaises(TimeoutError):
            await deferToThread(ask, slow.port)
        quick = testing.greeter(self, faults=Faults(latency=0.1))
        self.assertEqual(await deferToThread(ask, quick.port), b"Welcome!\r\n")

    async def test_slow_close_keeps_the_connection_open_after_the_farewell(self) -> None:
        peer = testing.greeter(self, faults=Faults(slow_close=2))

        def client() -> tuple[bytes, bool, bytes]:
            with socket.create_connection(("127.0.0.1", peer.port), timeout=10) as sock:
                sock.sendall(b"exit\n")
                got = b""
                while not got.endswith(b"Goodbye!\n"):
                    got += sock.recv(100)
                sock.settimeout(0.5)
                try:
                    still_open = sock.recv(100) != b""
                except TimeoutError:
                    still_open = True
                sock.settimeout(10)
                return got, still_open, recv_until_closed(sock)

        got, still_open, rest = await deferToThread(client)
        self.assertEqual(got, b"Welcome!\r\nGoodbye!\n")
        self.assertTrue(still_open, "no FIN right after the farewell")
        self.assertEqual(rest, b"", "then the close")

    async def test_one_recv_per_message_breaks_under_slicing(self) -> None:
        peer = testing.greeter(self, banner="", faults=Faults(slice=3, slice_delay=0.02))

        def client() -> list[bytes]:
            reads: list[bytes] = []
            with socket.create_connection(("127.0.0.1", peer.port), timeout=DEADLINE) as sock:
                sock.sendall(b"Bob\n")
                while not b"".join(reads).endswith(b"\n"):
                    reads.append(sock.recv(100))
            return reads

        reads = await deferToThread(client)
        self.assertEqual(reads[0], b"Hel", "one recv() is not one message")
        self.assertGreater(len(reads), 1)
        self.assertEqual(b"".join(reads), b"Hello, Bob!\n", "reassembled, every byte is there")

    async def test_half_close_and_bandwidth_with_nc(self) -> None:
        if shutil.which("nc") is None:
            self.skipTest("nc is not installed (Debian: netcat-openbsd)")
        peer = testing.greeter(self, faults=Faults(half_close_after_bytes=10, bandwidth=64))

        def client() -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(["nc", "-d", "127.0.0.1", str(peer.port)], capture_output=True, timeout=20)

        result = await deferToThread(client)
        self.assertEqual(result.stdout, b"Welcome!\r\n", "ten bytes at 64 B/s, then a FIN, and nc is done")

    async def test_echoapp_client_times_out_on_stall_answer(self) -> None:
        peer = testing.greeter(self, faults=Faults(stall="answer"))
        args = ["echoapp-client", "tcp", "--connect", f"tcp:127.0.0.1:{peer.port}", "--timeout", "1", "hi"]
        result = await deferToThread(
            subprocess.run, args, capture_output=True, text=True, env=installed_env()
        )
        self.assertEqual(result.returncode, 4, result.stderr)

    async def test_stall_read_fills_the_clients_send_buffer(self) -> None:
        peer = testing.greeter(self, faults=Faults(stall="read"))

        def client() -> None:
            with socket.create_connection(("127.0.0.1", peer.port), timeout=1) as sock:
                sock.sendall(b"x" * (64 << 20))

        with self.assertRaises(TimeoutError):
            await deferToThread(client)
        [listener] = [child for child in peer.service if hasattr(child, "factory")]
        self.assertEqual(listener.factory.stats.bytes_in, 0, "the server read nothing of it")

    async def test_refuse_and_change_while_running(self) -> None:
        peer = testing.greeter(self)

        def banner() -> bytes:
            with socket.create_connection(("127.0.0.1", peer.port), timeout=5) as sock:
                return recv_until_closed(sock, 10)

        self.assertEqual(await deferToThread(banner), b"Welcome!\r\n")
        peer.faults = Faults(refuse=True)
        self.assertEqual(await deferToThread(banner), b"", "accepted, then closed at once")

    async def test_tls_handshake_stalls(self) -> None:
        paths = make_certificates(self.mktemp() + "-certs")
        listen = f"ssl:0:interface=127.0.0.1:privateKey={paths['server.key']}:certKey={paths['server.pem']}"
        peer = testing.greeter(self, listen=listen, faults=Faults(stall_handshake=True))

        def client() -> None:
            context = ssl.create_default_context(cafile=paths["ca.pem"])
            with socket.create_connection(("127.0.0.1", peer.port), timeout=1) as raw:
                with context.wrap_socket(raw, server_hostname="localhost"):
                    pass

        with self.assertRaises(TimeoutError):
            await deferToThread(client)
