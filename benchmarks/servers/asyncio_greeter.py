"""A hand-written asyncio greeter (with --echo, echo); with --uvloop, on uvloop."""

import asyncio
import sys


class Greeter(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""
        transport.write(b"Welcome!\r\n")

    def data_received(self, data: bytes) -> None:
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        if lines:
            self.transport.write(b"".join(b"Hello, " + line + b"!\n" for line in lines))


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def main(port: int) -> None:
    protocol = Echo if "--echo" in sys.argv else Greeter
    server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", port, backlog=4096)
    await server.serve_forever()


if "--uvloop" in sys.argv:
    import uvloop

    uvloop.install()
asyncio.run(main(int(sys.argv[1])))
