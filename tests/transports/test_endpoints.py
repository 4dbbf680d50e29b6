"""
The services over every kind of endpoint people deploy them on: IPv6, UNIX
sockets, TLS (see also the client's TLS tests) and systemd socket activation.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import tempfile

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoapp import services
from echoapp._tap import echo, everything, tcp
from echoapp._transports.endpoints import UDPListen, check_endpoint
from echoapp.testing._twistd import LISTENING
from tests.support import (
    DEADLINE,
    installed_env,
    make_certificates,
    recv_until_closed,
    run_twistd,
    start,
    twistd_path,
)


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


class InProcessEndpointTests(TestCase):
    def converse(self, family: int, address: object) -> bytes:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(DEADLINE)
            sock.connect(address)
            sock.sendall(b"there\r\nexit\r\n")
            return recv_until_closed(sock)

    def test_tcp6(self) -> Deferred[None]:
        if not has_ipv6_loopback():
            self.skipTest("no IPv6 loopback here")
        [port] = start(self, services.tcp_greeter([r"tcp6:0:interface=\:\:1"]))
        d = deferToThread(self.converse, socket.AF_INET6, ("::1", port.getHost().port))
        d.addCallback(self.assertEqual, b"Welcome!\r\nHello, there!\r\nGoodbye!\r\n")
        return d

    def test_unix(self) -> Deferred[None]:
        directory = tempfile.mkdtemp(prefix="echoapp-test-")
        self.addCleanup(os.rmdir, directory)
        path = os.path.join(directory, "echo.sock")
        start(self, services.echo([f"unix:{path}"]))

        def converse() -> bytes:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(DEADLINE)
                sock.connect(path)
                sock.sendall(b"\x00unix\xff")
                sock.shutdown(socket.SHUT_WR)
                return recv_until_closed(sock)

        return deferToThread(converse).addCallback(self.assertEqual, b"\x00unix\xff")

    def test_tls_with_the_standard_library_client(self) -> Deferred[None]:
        try:
            import OpenSSL  # noqa: F401

        except ImportError:
            self.skipTest("TLS needs pyOpenSSL (pip install 'echoapp[tls]')")
        directory = tempfile.mkdtemp(prefix="echoapp-test-")
        paths = make_certificates(directory)
        listen = f"ssl:0:interface=127.0.0.1:privateKey={paths['server.key']}:certKey={paths['server.pem']}"
        [port] = start(self, services.tcp_greeter([listen]))

        def converse() -> bytes:
            context = ssl.create_default_context(cafile=paths["ca.pem"])
            with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=DEADLINE) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as sock:
                    sock.sendall(b"tls\nexit\n")
                    data = b""
                    while chunk := sock.recv(1024):
                        data += chunk
                    return data

        return deferToThread(converse).addCallback(self.assertEqual, b"Welcome!\r\nHello, tls!\nGoodbye!\n")


class SystemdActivationTests(SynchronousTestCase):
    def test_inherited_socket(self) -> None:
        """
        systemd hands the listening socket over as fd 3 with LISTEN_FDS=1
        and LISTEN_PID set to the service's pid; twistd takes it through
        the systemd: endpoint string.
        """
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def hand_over() -> None:
            os.dup2(listener.fileno(), 3)
            os.set_inheritable(3, True)

        env = installed_env()
        env["LISTEN_FDS"] = "1"
        env["LISTEN_FDNAMES"] = "echoapp.socket"  # systemd 227+ names them; Twisted requires it
        script = 'export LISTEN_PID=$$; exec "$@"'  # the shell's pid is twistd's pid after exec
        command = [
            twistd_path(),
            "-n",
            "--pidfile=",
            "--logfile=-",
            "echoapp-tcp",
            "--listen",
            "systemd:domain=INET:index=0",
        ]
        process = subprocess.Popen(
            ["sh", "-c", script, "sh", *command],
            env=env,
            cwd=tempfile.gettempdir(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=hand_over,
            close_fds=False,
        )
        listener.close()
        try:
            output = b""
            assert process.stdout is not None
            while not LISTENING.search(output.decode(errors="replace")):
                line = process.stdout.readline()
                if not line:
                    break
                output += line
            self.assertIn(f"echoapp-tcp listening on tcp:127.0.0.1:{port}".encode(), output)
            with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
                sock.sendall(b"activated\nexit\n")
                self.assertEqual(recv_until_closed(sock), b"Welcome!\r\nHello, activated!\nGoodbye!\n")
        finally:
            process.terminate()
            process.communicate(timeout=DEADLINE)


# Every description mistake a person makes, and the one line that says what
# to write instead: no Twisted function names, no Python exception text.
MISTAKES = {
    # unescaped IPv6 colons
    "tcp:9999:interface=::1": "an IPv6 address's colons end the option unless escaped: "
    "write 'tcp:9999:interface=\\:\\:1' (quoted in a shell)",
    "tcp6:9999:interface=fe80::1%lo:backlog=5": "an IPv6 address's colons end the option unless escaped: "
    "write 'tcp6:9999:interface=fe80\\:\\:1%lo:backlog=5' (quoted in a shell)",
    "haproxy:tcp:port=80:interface=::": "an IPv6 address's colons end the option unless escaped: "
    "write 'haproxy:tcp:port=80:interface=\\:\\:' (quoted in a shell)",
    # a missing port or path
    "tcp:interface=127.0.0.1": "no port: write tcp:PORT, e.g. tcp:9999:interface=127.0.0.1",
    "tcp": "no port: write tcp:PORT, e.g. tcp:9999:interface=127.0.0.1",
    "ssl:": "no port: write ssl:PORT, e.g. ssl:9443:privateKey=key.pem:certKey=cert.pem",
    "unix:": "no path: write unix:PATH, e.g. unix:/run/echoapp.sock",
    "haproxy:": "haproxy: needs the endpoint it reads from: write e.g. haproxy:tcp:9999:interface=127.0.0.1",
    # an unknown kind
    "tcpp:9999": "unknown kind 'tcpp': write one of tcp:9999:interface=127.0.0.1, "
    "tcp6:9999:interface=\\:\\:1, "
    "ssl:9443:privateKey=key.pem:certKey=cert.pem, unix:/run/echoapp.sock, systemd:domain=INET:index=0, "
    "or haproxy: before any of them",
    "": "no endpoint: write one of tcp:9999:interface=127.0.0.1, tcp6:9999:interface=\\:\\:1, "
    "ssl:9443:privateKey=key.pem:certKey=cert.pem, unix:/run/echoapp.sock, systemd:domain=INET:index=0, "
    "or haproxy: before any of them",
    # a bad option
    "tcp:9999:interfac=127.0.0.1": "tcp: has no option 'interfac'; did you mean interface=? "
    "it takes port, interface, backlog",
    "tcp:9999:interface=127.0.0.1:interface=10.0.0.1": "interface= is given twice: write it once",
    "tcp:9999:127.0.0.1:7:8": "too many values without a KEY=: write options as KEY=VALUE, "
    "e.g. tcp:9999:interface=127.0.0.1",
    # a bad number
    "tcp:99x99": "port '99x99' is not a number from 0 to 65535: write e.g. tcp:9999:interface=127.0.0.1",
    "tcp6:70000": "port '70000' is not a number from 0 to 65535: write e.g. tcp6:9999:interface=\\:\\:1",
    "tcp:port=-1": "port '-1' is not a number from 0 to 65535: write e.g. tcp:9999:interface=127.0.0.1",
    "tcp:9999:backlog=lots": "backlog 'lots' is not a whole number from 1 to 65535: write e.g. backlog=128",
    # listen() takes a C int: Python's "signed integer is greater than maximum", before
    "tcp:9999:backlog=99999999999999999999": "backlog '99999999999999999999' is not a whole number "
    "from 1 to 65535: write e.g. backlog=128",
    "unix:/tmp/x.sock:mode=rw": "mode 'rw' is not an octal file mode: write e.g. mode=660",
    "systemd:domain=INET:index=first": "index 'first' is not a whole number: write e.g. "
    "systemd:domain=INET:index=0",
}

UDP_MISTAKES = {
    "udp:": "port '' is not a number from 0 to 65535 (expected udp:PORT[:interface=ADDRESS])",
    "tcp:9999": "not a UDP listen description (expected udp:PORT[:interface=ADDRESS])",
    "udp:9x": "port '9x' is not a number from 0 to 65535 (expected udp:PORT[:interface=ADDRESS])",
    "udp:9999:iface=::1": "unknown parameter 'iface': udp: takes interface= only "
    "(expected udp:PORT[:interface=ADDRESS])",
    "udp:9999:interface=zzz": "interface 'zzz' is not an IP address (expected udp:PORT[:interface=ADDRESS])",
}

INTERNALS = ("()", "_parse", "Errno", "invalid literal", "Traceback", "argument")


class DescriptionMistakeTests(SynchronousTestCase):
    """Each mistake gets one line in echoapp's words, naming what to write instead."""

    def test_each_mistake(self) -> None:
        for description, why in MISTAKES.items():
            with self.assertRaises(ValueError, msg=description) as raised:
                check_endpoint(description)
            self.assertEqual(str(raised.exception), f"cannot listen on {description!r}: {why}")
            for internal in INTERNALS:
                self.assertNotIn(internal, why, description)

    def test_each_udp_mistake(self) -> None:
        for description, why in UDP_MISTAKES.items():
            with self.assertRaises(ValueError, msg=description) as raised:
                UDPListen.parse(description)
            self.assertEqual(str(raised.exception), f"cannot listen on {description!r}: {why}")

    def test_a_missing_file_is_named(self) -> None:
        with self.assertRaises(ValueError) as raised:
            check_endpoint("ssl:9443:privateKey=/nonexistent/key.pem")
        self.assertEqual(
            str(raised.exception),
            "cannot listen on 'ssl:9443:privateKey=/nonexistent/key.pem': cannot read /nonexistent/key.pem: "
            "No such file or directory (ssl: reads privateKey=KEY.pem:certKey=CERT.pem)",
        )

    def test_what_is_right_stays_right(self) -> None:
        for description in (
            "tcp:9999:interface=\\:\\:1",
            "tcp6:0:interface=\\:\\:1",
            "tcp:9999:127.0.0.1",
            "tcp:9999:127.0.0.1:7",
            "tcp:interface=127.0.0.1:9999",
            "tcp:port=80:backlog=7",
            "tcp:0",
            "unix:/tmp/echoapp.sock:mode=660",
            "haproxy:tcp:9999:interface=127.0.0.1",
        ):
            self.assertEqual(check_endpoint(description), description)
        self.assertEqual(UDPListen.parse("udp:9999:interface=::1"), UDPListen(9999, "::1"))

    def test_through_every_stream_plugins_command_line(self) -> None:
        for module, option in ((tcp, "--listen"), (echo, "--listen"), (everything, "--echo")):
            for description, why in MISTAKES.items():
                with self.assertRaises(usage.UsageError) as raised:
                    module.Options().parseOptions([option, description])
                self.assertEqual(str(raised.exception), f"{option}: cannot listen on {description!r}: {why}")

    def test_through_twistd(self) -> None:
        result = run_twistd(["echoapp-tcp", "--listen", "tcp:9999:interface=::1"])
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr.splitlines()[0],
            "twistd echoapp-tcp: --listen: cannot listen on 'tcp:9999:interface=::1': an IPv6 address's "
            "colons end the option unless escaped: write 'tcp:9999:interface=\\:\\:1' (quoted in a shell)",
        )
        self.assertEqual(result.stdout, "")
