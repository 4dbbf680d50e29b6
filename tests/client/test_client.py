"""
echoapp-client as a user runs it: a real subprocess against real servers
(echoapp's own, in-process on port 0, and twisted.web for raw mode).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.process import reapAllProcesses
from twisted.internet.protocol import DatagramProtocol, Factory, ProcessProtocol, Protocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from echoapp import services
from echoapp._client.options import EXIT_CONNECTION, EXIT_TIMEOUT, EXIT_USAGE, parse_host_port, unescape
from echoapp.config import GreeterConfig
from tests.support import LOOP, installed_env, make_certificates, start, twistd_path


class _Collect(ProcessProtocol):
    def __init__(self, stdin: bytes | None) -> None:
        self.stdin = stdin
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.done: Deferred[tuple[bytes, str, int]] = Deferred()

    def connectionMade(self) -> None:
        if self.stdin is not None:
            self.transport.write(self.stdin)  # type: ignore[union-attr]
            self.transport.closeStdin()  # type: ignore[union-attr]

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def processEnded(self, reason: Any) -> None:
        code = reason.value.exitCode
        if code is None:
            code = -reason.value.signal
        self.done.callback((b"".join(self.out), b"".join(self.err).decode(), code))


def client(*args: str, stdin: bytes | None = b"", module: bool = False) -> tuple[_Collect, Any]:
    """
    Run echoapp-client (the installed console script) with C{args}.

    No C{path=}: in the test's own working directory Twisted starts the
    child with posix_spawn rather than running Python in a fork of this
    threaded process.  C{-I} keeps the checkout off C{python -m}'s path.
    """
    collect = _Collect(stdin)
    command = (
        [sys.executable, "-I", "-m", "echoapp", *args] if module else [twistd_path("echoapp-client"), *args]
    )
    process = reactor.spawnProcess(collect, command[0], command, env=installed_env())  # type: ignore[attr-defined]
    # Twisted reaps a child when SIGCHLD wakes the reactor, but a child that
    # closes its pipes just before it exits can leave that to the signal
    # alone, and the wakeup can be lost (uvloop takes the signal wakeup fd
    # while its loop runs): the test then waits on a zombie.  Poll as well.
    reaper = LoopingCall(reapAllProcesses)
    reaper.start(0.1, now=False)
    collect.done.addBoth(lambda result: (reaper.stop(), result)[1])
    return collect, process


def run(*args: str, stdin: bytes | None = b"", module: bool = False) -> Deferred[tuple[bytes, str, int]]:
    return client(*args, stdin=stdin, module=module)[0].done


def scratch(test: TestCase) -> str:
    """A fresh directory outside the work tree (pytest runs trial's mktemp in the checkout)."""
    import shutil
    import tempfile

    directory = tempfile.mkdtemp(prefix="echoapp-test-")
    test.addCleanup(shutil.rmtree, directory, True)
    return directory


def client_peak_memory(pid: int | None) -> int:
    """VmHWM of the client once it runs (exec resets it; a forked copy of us does not count)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            if b"echoapp-client" not in cmdline.read():
                return 0
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, TypeError):
        pass
    return 0


class ClientTestCase(TestCase):
    def serve_all(self, config: GreeterConfig | None = None) -> dict[str, int]:
        service = services.everything([LOOP], ["udp:0:interface=127.0.0.1"], [LOOP], config)
        ports = start(self, service)
        return dict(zip(["tcp", "udp", "echo"], [port.getHost().port for port in ports], strict=True))

    def assertClean(self, err: str) -> None:
        self.assertNotIn("Traceback", err)
        self.assertLessEqual(err.count("\n"), 1, err)


class TCPModeTests(ClientTestCase):
    async def test_one_shot(self) -> None:
        ports = self.serve_all()
        out, err, code = await run("tcp", "--connect", f"tcp:127.0.0.1:{ports['tcp']}", "Michael", "caf\xe9")
        self.assertEqual(
            (out, err, code), (b"Welcome!\nHello, Michael!\nHello, caf\xc3\xa9!\nGoodbye!\n", "", 0)
        )

    async def test_interactive_from_stdin(self) -> None:
        ports = self.serve_all(GreeterConfig(banner=b"Hello, I am server!", exit_word=b"quit", farewell=b""))
        out, err, code = await run(
            "tcp", "-c", f"tcp:127.0.0.1:{ports['tcp']}", "--exit-word", "quit", stdin=b"one\ntwo\r\nthree"
        )
        self.assertEqual(
            (out, err, code), (b"Hello, I am server!\nHello, one!\nHello, two!\nHello, three!\n", "", 0)
        )

    async def test_unix_endpoint(self) -> None:
        path = os.path.join(scratch(self), "greeter.sock")
        start(self, services.tcp_greeter([f"unix:{path}"]))
        out, _, code = await run("tcp", "-c", f"unix:{path}", "sock")
        self.assertEqual((out, code), (b"Welcome!\nHello, sock!\nGoodbye!\n", 0))


class UDPModeTests(ClientTestCase):
    async def test_one_shot(self) -> None:
        ports = self.serve_all()
        out, err, code = await run("udp", "--to", f"127.0.0.1:{ports['udp']}", "x", "y")
        self.assertEqual((out, err, code), (b"Hello, x!\nHello, y!\n", "", 0))

    async def test_interactive_from_stdin(self) -> None:
        ports = self.serve_all()
        out, _, code = await run("udp", "--to", f"127.0.0.1:{ports['udp']}", stdin=b"a\nbye\nnever\n")
        self.assertEqual((out, code), (b"Hello, a!\n", 0))

    async def test_lost_datagram_is_sent_again(self) -> None:
        class DropsTheFirst(DatagramProtocol):
            seen = 0

            def datagramReceived(self, datagram: bytes, addr: Any) -> None:
                self.seen += 1
                if self.seen > 1:
                    self.transport.write(b"second try " + datagram, addr)  # type: ignore[union-attr]

        server = DropsTheFirst()
        port = reactor.listenUDP(0, server, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        out, _, code = await run(
            "udp", "--to", f"127.0.0.1:{port.getHost().port}", "-t", "0.3", "-r", "2", "m"
        )
        self.assertEqual((out, code, server.seen), (b"second try m\n", 0, 2))

    async def test_timeout(self) -> None:
        silent = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(silent.stopListening)
        out, err, code = await run(
            "udp", "--to", f"127.0.0.1:{silent.getHost().port}", "-t", "0.2", "-r", "1", "m"
        )
        self.assertEqual((out, code), (b"", EXIT_TIMEOUT))
        self.assertIn("echoapp-client: no reply from 127.0.0.1:", err)
        self.assertIn("after 2 tries", err)
        self.assertClean(err)


class EchoModeTests(ClientTestCase):
    async def test_large_stream_round_trips_in_bounded_memory(self) -> None:
        ports = self.serve_all()
        payload = os.urandom(1 << 20) * 96  # 96 MiB
        collect, process = client("echo", "--connect", f"tcp:127.0.0.1:{ports['echo']}", stdin=payload)
        peak = 0
        while not collect.done.called:
            peak = max(peak, client_peak_memory(process.pid))
            await deferLater(reactor, 0.05)
        out, err, code = await collect.done
        self.assertEqual((len(out), err, code), (len(payload), "", 0))
        self.assertTrue(out == payload, "echo mode must round-trip byte-exact")
        self.assertGreater(peak, 0)
        self.assertLess(peak, 64 << 20, "the client held the stream in memory")


class RawModeTests(ClientTestCase):
    async def test_http_get_against_twisted_web(self) -> None:
        root = Resource()
        root.putChild(b"hello", Data(b"served by twisted.web", "text/plain"))
        port = await serverFromString(reactor, LOOP).listen(Site(root))
        self.addCleanup(port.stopListening)
        request = "GET /hello HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n"
        out, err, code = await run(
            "raw", "--connect", f"tcp:127.0.0.1:{port.getHost().port}", "--send", request
        )
        self.assertEqual((err, code), ("", 0))
        self.assertTrue(out.startswith(b"HTTP/1.1 200 OK\r\n"), out)
        self.assertTrue(out.endswith(b"\r\n\r\nserved by twisted.web"), out)

    async def test_raw_bytes_and_python_dash_m(self) -> None:
        ports = self.serve_all()
        out, _, code = await run(
            "raw", "-c", f"tcp:127.0.0.1:{ports['tcp']}", "-s", "\\xff\\r\\nexit\\n", module=True
        )
        self.assertEqual((out, code), (b"Welcome!\r\nHello, \xff!\r\nGoodbye!\n", 0))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ErrorTests(ClientTestCase):
    async def expect(self, code: int, message: str, *args: str) -> None:
        _, err, got = await run(*args)
        self.assertEqual(got, code, err)
        self.assertIn(message, err)
        self.assertTrue(err.startswith("echoapp-client: "), err)
        self.assertNotIn("Traceback", err)

    async def test_connection_refused(self) -> None:
        port = closed_port()
        await self.expect(
            EXIT_CONNECTION,
            f"connection refused by 'tcp:127.0.0.1:{port}'",
            "tcp",
            "-c",
            f"tcp:127.0.0.1:{port}",
        )

    async def test_unknown_host(self) -> None:
        await self.expect(
            EXIT_CONNECTION,
            "unknown host in 'tcp:no-such-host.invalid:9'",
            "tcp",
            "-c",
            "tcp:no-such-host.invalid:9",
        )

    async def test_bad_endpoint(self) -> None:
        await self.expect(EXIT_USAGE, "bad endpoint 'bogus:1'", "echo", "-c", "bogus:1")

    async def test_usage_errors(self) -> None:
        await self.expect(EXIT_USAGE, "name a mode")
        await self.expect(EXIT_USAGE, "option --bogus not recognized", "tcp", "--bogus")
        await self.expect(EXIT_USAGE, "--timeout must be a positive number, got '0'", "tcp", "--timeout", "0")
        await self.expect(EXIT_USAGE, "raw needs --connect ENDPOINT", "raw")
        await self.expect(EXIT_USAGE, "--to 'nowhere': expected HOST:PORT", "udp", "--to", "nowhere", "x")

    async def test_timeout_waiting_for_the_server(self) -> None:
        port = await serverFromString(reactor, LOOP).listen(Factory.forProtocol(Protocol))
        self.addCleanup(port.stopListening)
        await self.expect(
            EXIT_TIMEOUT,
            "no banner within 0.3 seconds",
            "tcp",
            "-c",
            f"tcp:127.0.0.1:{port.getHost().port}",
            "-t",
            "0.3",
        )

    async def test_server_closing_early(self) -> None:
        class Rude(Protocol):
            def connectionMade(self) -> None:
                self.transport.write(b"Welcome!\r\n")  # type: ignore[union-attr]
                self.transport.loseConnection()  # type: ignore[union-attr]

        port = await serverFromString(reactor, LOOP).listen(Factory.forProtocol(Rude))
        self.addCleanup(port.stopListening)
        await self.expect(
            EXIT_CONNECTION,
            "the server closed the connection early",
            "tcp",
            "-c",
            f"tcp:127.0.0.1:{port.getHost().port}",
            "x",
        )

    async def test_ctrl_c_exits_quietly(self) -> None:
        ports = self.serve_all()
        collect, process = client("tcp", "-c", f"tcp:127.0.0.1:{ports['tcp']}", stdin=None)
        for _ in range(200):  # wait for the banner: the client is then waiting on stdin
            if collect.out:
                break
            await deferLater(reactor, 0.05)
        process.signalProcess(signal.SIGINT)
        out, err, code = await collect.done
        self.assertEqual((out, err, code), (b"Welcome!\n", "", 130))

    async def test_help_for_every_mode(self) -> None:
        out, _, code = await run("--help")
        self.assertEqual(code, 0)
        for mode in (b"tcp", b"udp", b"echo", b"raw", b"Exit status"):
            self.assertIn(mode, out)
        for mode, options in [
            ("tcp", [b"--connect", b"--exit-word", b"--timeout", b"--ca"]),
            ("udp", [b"--to", b"--timeout", b"--retries"]),
            ("echo", [b"--connect"]),
            ("raw", [b"--connect", b"--send", b"--timeout"]),
        ]:
            out, _, code = await run(mode, "--help")
            self.assertEqual(code, 0)
            for option in options:
                self.assertIn(option, out, mode)


class ParsingTests(SynchronousTestCase):
    def test_unescape(self) -> None:
        self.assertEqual(unescape("a\\r\\n\\t\\0\\\\\\x41\\xff"), b"a\r\n\t\0\\A\xff")

    def test_unknown_escape(self) -> None:
        from twisted.python.usage import UsageError

        self.assertRaises(UsageError, unescape, "\\q")

    def test_host_port(self) -> None:
        self.assertEqual(parse_host_port("127.0.0.1:9999"), ("127.0.0.1", 9999))
        self.assertEqual(parse_host_port("[::1]:53"), ("::1", 53))
        self.assertEqual(parse_host_port("localhost:1"), ("localhost", 1))


class TLSTests(ClientTestCase):
    def serve_tls(self) -> tuple[int, dict[str, str]]:
        try:
            import OpenSSL  # noqa: F401

        except ImportError:
            self.skipTest("TLS needs pyOpenSSL (pip install 'echoapp[tls]')")
        paths = make_certificates(scratch(self))
        listen = f"ssl:0:interface=127.0.0.1:privateKey={paths['server.key']}:certKey={paths['server.pem']}"
        [port] = start(self, services.tcp_greeter([listen]))
        return port.getHost().port, paths

    async def test_tls_with_ca(self) -> None:
        port, paths = self.serve_tls()
        for host in ("127.0.0.1", "localhost"):
            out, err, code = await run("tcp", "-c", f"tcp:{host}:{port}", "--ca", paths["ca.pem"], "secret")
            self.assertEqual((out, err, code), (b"Welcome!\nHello, secret!\nGoodbye!\n", "", 0))

    async def test_tls_with_the_wrong_ca_fails_cleanly(self) -> None:
        port, _ = self.serve_tls()
        other = make_other_ca(scratch(self))
        out, err, code = await run("tcp", "-c", f"tcp:127.0.0.1:{port}", "--ca", other, "secret")
        self.assertEqual((out, code), (b"", EXIT_CONNECTION))
        self.assertIn("echoapp-client: the server closed the connection before its banner (", err)
        self.assertIn("certificate verify failed", err)
        self.assertClean(err)

    async def test_tls_endpoint_with_ca(self) -> None:
        """tls:HOST:PORT with --ca is TLS once, not TLS inside TLS."""
        port, paths = self.serve_tls()
        out, err, code = await run("tcp", "-c", f"tls:localhost:{port}", "--ca", paths["ca.pem"], "secret")
        self.assertEqual((out, err, code), (b"Welcome!\nHello, secret!\nGoodbye!\n", "", 0))

    async def test_missing_ca_file(self) -> None:
        port, _ = self.serve_tls()
        _, err, code = await run("tcp", "-c", f"tcp:127.0.0.1:{port}", "--ca", "/no/such/ca.pem")
        self.assertEqual(code, EXIT_USAGE)
        self.assertIn("echoapp-client: --ca '/no/such/ca.pem': No such file or directory", err)


class CommandLineTests(ClientTestCase):
    """What people type: options anywhere, IPv6 as they write it, the version."""

    async def test_options_after_the_messages(self) -> None:
        ports = self.serve_all()
        out, err, code = await run("udp", "hello", "--to", f"127.0.0.1:{ports['udp']}", "--timeout", "5")
        self.assertEqual((out, err, code), (b"Hello, hello!\n", "", 0))

    async def test_double_dash_ends_the_options(self) -> None:
        ports = self.serve_all()
        out, err, code = await run("tcp", "--connect", f"tcp:127.0.0.1:{ports['tcp']}", "--", "-1")
        self.assertEqual((out, err, code), (b"Welcome!\nHello, -1!\nGoodbye!\n", "", 0))

    async def test_an_option_without_its_value(self) -> None:
        _, err, code = await run("udp", "hello", "--to")
        self.assertEqual(code, EXIT_USAGE)
        self.assertIn("echoapp-client: option --to needs a value", err)

    async def test_ipv6_hosts_as_people_write_them(self) -> None:
        [port] = start(self, services.tcp_greeter(["tcp6:0:interface=\\:\\:1"]))
        number = port.getHost().port
        for description in (f"tcp6:[::1]:{number}", f"tcp:[::1]:{number}", f"tcp6:\\:\\:1:{number}"):
            out, err, code = await run("tcp", "-c", description, "six")
            self.assertEqual((out, err, code), (b"Welcome!\nHello, six!\nGoodbye!\n", "", 0), description)

    async def test_version_is_echoapps(self) -> None:
        import echoapp
        import twisted

        out, err, code = await run("--version")
        self.assertEqual(
            (out.decode(), err, code),
            (f"echoapp-client {echoapp.__version__} (Twisted {twisted.__version__})\n", "", 0),
        )

    async def test_usage_names_the_program(self) -> None:
        out, _, code = await run("--help")
        self.assertEqual(code, 0)
        self.assertEqual(out.decode().splitlines()[0], "Usage: echoapp-client tcp|udp|echo|raw [options]")


def make_other_ca(directory: str) -> str:
    return make_certificates(directory)["ca.pem"]
