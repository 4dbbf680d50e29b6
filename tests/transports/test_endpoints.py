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
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoapp import services
from echoapp.testing._process import LISTENING
from tests.support import (
    DEADLINE,
    installed_env,
    make_certificates,
    recv_until_closed,
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
