"""
L{echoapp.testing}: echoapp peers for other people's tests, as a trial user
writes them: in-process on port 0 and stopped at cleanup, or a real twistd.
"""

from __future__ import annotations

import asyncio
import socket
import sys

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoapp import testing
from echoapp.testing import Faults


def talk(port: int, send: bytes = b"", want: int = 100) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        if send:
            sock.sendall(send)
        got = b""
        while len(got) < want:
            try:
                data = sock.recv(want)
            except ConnectionResetError:  # a refusal may be a reset
                break
            if not data:
                break
            got += data
        return got


class InProcessTests(TestCase):
    async def test_greeter_with_plugin_options(self) -> None:
        peer = testing.greeter(self, banner="Hi", reply="Yo {}", max_line_length=100)
        self.assertEqual(peer.host, "127.0.0.1")
        self.assertEqual(await deferToThread(talk, peer.port, b"Bob\n", 11), b"Hi\r\nYo Bob\n")

    async def test_echo_and_udp(self) -> None:
        echo = testing.echo(self)
        self.assertEqual(await deferToThread(talk, echo.port, b"ping", 4), b"ping")
        udp = testing.udp(self, reply="{}!")

        def exchange() -> bytes:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(5)
                sock.sendto(b"u", ("127.0.0.1", udp.port))
                return sock.recvfrom(100)[0]

        self.assertEqual(await deferToThread(exchange), b"u!")

    async def test_stop_drains_and_closes_the_port(self) -> None:
        peer = testing.greeter()
        port = peer.port
        await peer.stop()
        with self.assertRaises(ConnectionRefusedError):
            await deferToThread(talk, port)

    async def test_faults_in_one_line_and_changed_while_running(self) -> None:
        peer = testing.greeter(self, faults=Faults(stall="answer"))
        self.assertEqual(peer.faults, Faults(stall="answer"))
        with self.assertRaises(TimeoutError):
            await deferToThread(socket.create_connection(("127.0.0.1", peer.port), timeout=0.5).recv, 10)
        peer.faults = Faults()
        self.assertEqual(await deferToThread(talk, peer.port, b"", 10), b"Welcome!\r\n")
        self.assertIsInstance(peer.seed, int)

    async def test_every_plugin_option_including_the_stream_ones(self) -> None:
        peer = testing.greeter(
            self, listen="haproxy:tcp:0:interface=127.0.0.1", proxy_from="127.0.0.1", log_connections=True
        )
        header = b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 9999\r\n"
        self.assertEqual(await deferToThread(talk, peer.port, header, 10), b"Welcome!\r\n")
        elsewhere = testing.greeter(self, listen="haproxy:tcp:0:interface=127.0.0.1", proxy_from="10.0.0.0/8")
        self.assertNotIn(b"Welcome", await deferToThread(talk, elsewhere.port, header, 10), "not believed")

    async def test_echo_takes_the_stream_options_as_the_greeter_does(self) -> None:
        header = b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 9999\r\n"
        trusting = testing.echo(self, listen="haproxy:tcp:0:interface=127.0.0.1", proxy_from="127.0.0.1")
        self.assertEqual(await deferToThread(talk, trusting.port, header + b"ping", 4), b"ping")
        elsewhere = testing.echo(self, listen="haproxy:tcp:0:interface=127.0.0.1", proxy_from="10.0.0.0/8")
        self.assertEqual(await deferToThread(talk, elsewhere.port, header + b"ping", 4), b"", "not believed")
        with self.assertRaises(ValueError) as raised:
            testing.echo(self, faults=Faults(stall_handshake=True))
        self.assertIn("needs an ssl: listener", str(raised.exception))

    def test_unknown_option_says_which_are_known(self) -> None:
        with self.assertRaises(TypeError) as raised:
            testing.greeter(self, banana=1)
        self.assertIn("unknown option 'banana'; these are known: banner,", str(raised.exception))


class PeerHookTests(SynchronousTestCase):
    """
    A L{testing.Peer} declares what each kind of peer provides (its hooks);
    every kind must provide each, or a property fails only when a test reads it.
    """

    def hooks(self, *kinds: type) -> set[str]:
        declared = {name for kind in kinds for name in vars(kind).get("__annotations__", {})}
        return declared - {"_thread"}

    def test_every_kind_of_peer_provides_every_hook(self) -> None:
        from echoapp.testing._peer import ServicePeer
        from echoapp.testing._proxy import RunningProxy

        self.assertIn("_addresses", self.hooks(testing.Peer))
        self.assertIn("_down", self.hooks(testing.ProxyPeer))
        for peer, kinds in [
            (ServicePeer, (testing.Peer,)),
            (RunningProxy, (testing.Peer, testing.ProxyPeer)),
        ]:
            missing = {hook for hook in self.hooks(*kinds) if not callable(getattr(peer, hook, None))}
            self.assertEqual(missing, set(), peer)


class ProcessTests(SynchronousTestCase):
    def test_the_all_in_one_plugin(self) -> None:
        """C{echoapp} gets loopback ports for its three services, not a --listen it does not have."""
        with testing.Process("echoapp") as server:
            self.assertEqual(sorted(server.addresses), ["echoapp-echo", "echoapp-tcp", "echoapp-udp"])
            for addresses in server.addresses.values():
                self.assertTrue(addresses[0].split(":")[1] == "127.0.0.1", addresses)
            echo_port = server.address_port("echoapp-echo")
            with socket.create_connection(("127.0.0.1", echo_port), timeout=5) as sock:
                sock.sendall(b"ping")
                self.assertEqual(sock.recv(4), b"ping")

    def test_a_reactor_of_ones_choice(self) -> None:
        """twistd's --reactor goes before the plugin name, where twistd reads it."""
        server = testing.Process("echoapp-tcp", reactor="uvloop")
        self.assertLess(server.command().index("--reactor=uvloop"), server.command().index("echoapp-tcp"))
        with server:
            self.assertIn("uvloop", server.output)
            self.assertTrue(server.port)

    def test_the_seed_is_known(self) -> None:
        with testing.Process("echoapp-tcp", "--fault", "latency=1ms") as server:
            self.assertIsInstance(server.seed, int)
            self.assertIn(f"(seed={server.seed})", server.output)

    def test_asyncio_client_against_a_real_twistd(self) -> None:
        with testing.Process("echoapp-tcp", "--fault", "reset-after-bytes=10") as server:

            async def client() -> bytes:
                reader, writer = await asyncio.open_connection(server.host, server.port)
                try:
                    banner = await reader.readline()
                    writer.write(b"Bob\n")
                    await reader.read(100)
                    return banner
                finally:
                    writer.close()

            with self.assertRaises(ConnectionResetError):
                asyncio.run(client())
            process = server.process
        assert process is not None
        self.assertIsNotNone(process.poll(), "stopped on leaving the with block")

    def test_udp_process(self) -> None:
        with testing.Process("echoapp-udp") as server:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(5)
                sock.sendto(b"u", (server.host, server.port))
                self.assertEqual(sock.recvfrom(100)[0], b"Hello, u!")

    def test_a_process_that_fails_to_start_says_why(self) -> None:
        with self.assertRaises(RuntimeError) as raised:
            testing.Process("echoapp-tcp", "--max-line-length", "banana").start()
        first = str(raised.exception).splitlines()[0]
        self.assertIn("echoapp-tcp exited with status 1 before listening: ", first)
        self.assertIn("--max-line-length: must be a positive whole number, got 'banana'", first)

    def test_a_process_that_never_listens_is_stopped_at_the_timeout(self) -> None:
        class Silent(testing.Process):
            def command(self) -> list[str]:
                return [sys.executable, "-c", "import time; print('starting', flush=True); time.sleep(60)"]

        silent = Silent(timeout=1)
        with self.assertRaises(RuntimeError) as raised:
            silent.start()
        self.assertIn("did not say where it listens within 1s: starting", str(raised.exception))
        assert silent.process is not None
        self.assertIsNotNone(silent.process.poll(), "stopped, not left running")
