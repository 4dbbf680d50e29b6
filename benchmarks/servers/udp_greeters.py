"""UDP greeters to compare with echoapp-udp: asyncio (--uvloop: on uvloop) or a blocking loop (--blocking)."""

import asyncio
import socket
import sys
from typing import Any


def blocking(port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    while True:
        data, addr = sock.recvfrom(65535)
        sock.sendto(b"Hello, " + data.rstrip(b"\r\n") + b"!" + data[len(data.rstrip(b"\r\n")) :], addr)


class Greeter(asyncio.DatagramProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        message = data.rstrip(b"\r\n")
        self.transport.sendto(b"Hello, " + message + b"!" + data[len(message) :], addr)


async def main(port: int) -> None:
    await asyncio.get_running_loop().create_datagram_endpoint(Greeter, local_addr=("127.0.0.1", port))
    await asyncio.Event().wait()


port = int(sys.argv[1])
if "--blocking" in sys.argv:
    blocking(port)
else:
    if "--uvloop" in sys.argv:
        import uvloop

        uvloop.install()
    asyncio.run(main(port))
