"""
Resets that keep their promise (L{echoapp._faults.resets}), seen by real clients over loopback.
"""

from __future__ import annotations

import asyncio
import socket

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from echoapp import testing
from echoapp._faults import (
    Faults,
)
from tests.support import recv_until_closed


class ResetTests(TestCase):
    """An asyncio reader and a socket reader see the RST."""

    async def test_asyncio_reader_sees_the_reset(self) -> None:
        peer = testing.greeter(self, faults=Faults(reset_after_bytes=20))

        async def client() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", peer.port)
            writer.write(b"Michael\n")
            got = b""
            try:
                while True:
                    data = await reader.read(100)
                    if not data:
                        return got
                    got += data
            finally:
                writer.close()

        with self.assertRaises(ConnectionResetError):
            await deferToThread(asyncio.run, client())

    async def test_socket_reader_sees_a_reset_after_a_time(self) -> None:
        peer = testing.greeter(self, faults=Faults(reset_after=0.3))

        def client() -> None:
            with socket.create_connection(("127.0.0.1", peer.port), timeout=10) as sock:
                recv_until_closed(sock)

        with self.assertRaises(ConnectionResetError):
            await deferToThread(client)
