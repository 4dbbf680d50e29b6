"""
Real twistd and twist processes, started from an empty directory so that
they run the installed package and plugins, talked to over loopback.
"""

import os
import signal
import socket
import tempfile
import time
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from tests.support import (
    DEADLINE,
    LOOP,
    Twistd,
    installed_env,
    recv_until_closed,
    run_twistd,
    tutorial_client,
    twistd_path,
)

ULOOP = "udp:0:interface=127.0.0.1"


def udp_exchange(port: int, datagram: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(DEADLINE)
        sock.sendto(datagram, ("127.0.0.1", port))
        return sock.recvfrom(70000)[0]


def echo_exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        return recv_until_closed(sock)


class TwistdPluginTests(SynchronousTestCase):
    def running(self, *args: str, expect: int = 1, runner: str = "twistd") -> Twistd:
        process = Twistd(args, runner=runner, expect=expect)
        self.addCleanup(self.stopped_cleanly, process)
        return process

    def stopped_cleanly(self, process: Twistd) -> None:
        code = process.stop()
        # Twisted ends a process stopped by SIGTERM with that signal, after a clean
        # shutdown; one that had to be killed would end with SIGKILL.
        self.assertIn(code, (0, -signal.SIGTERM), process.output)
        self.assertIn("Received SIGTERM, shutting down.", process.output)
        self.assertNotIn("Traceback", process.output)

    def test_help_lists_every_plugin(self) -> None:
        result = run_twistd(["--help"])
        for name in ("echoapp ", "echoapp-tcp", "echoapp-udp", "echoapp-echo", "echoapp-compose"):
            self.assertIn(name, result.stdout)

    def test_tcp(self) -> None:
        server = self.running(
            "echoapp-tcp", "--listen", LOOP, "--banner", "Hello, I am server!", "--reply", "Loop_Msg: {}!"
        )
        replies = tutorial_client(server.address_port("echoapp-tcp"), [b"one", b"exit"])
        self.assertEqual(replies, [b"Hello, I am server!\r\n", b"Loop_Msg: one!", b"Goodbye!"])

    def test_echo(self) -> None:
        server = self.running("echoapp-echo", "--listen", LOOP)
        self.assertEqual(
            echo_exchange(server.address_port("echoapp-echo"), b"\x00\xffabc\r\n" * 1000),
            b"\x00\xffabc\r\n" * 1000,
        )

    def test_udp(self) -> None:
        server = self.running("echoapp-udp", "--listen", ULOOP)
        self.assertEqual(udp_exchange(server.address_port("echoapp-udp"), b"Michael\n"), b"Hello, Michael!\n")

    def test_everything(self) -> None:
        server = self.running(
            "echoapp", "--tcp", LOOP, "--udp", ULOOP, "--echo", LOOP, "--reply", "Hi {}", expect=3
        )
        self.assertEqual(
            tutorial_client(server.address_port("echoapp-tcp"), [b"a"]), [b"Welcome!\r\n", b"Hi a"]
        )
        self.assertEqual(udp_exchange(server.address_port("echoapp-udp"), b"b"), b"Hi b")
        self.assertEqual(echo_exchange(server.address_port("echoapp-echo"), b"c"), b"c")

    def test_compose_with_someone_elses_plugin(self) -> None:
        with tempfile.TemporaryDirectory() as docroot:
            with open(os.path.join(docroot, "index.html"), "w") as page:
                page.write("served by twisted.web")
            server = self.running(
                "echoapp-compose",
                "--service",
                f"echoapp-tcp --listen {LOOP}",
                "--service",
                f"web --listen tcp:0:interface=127.0.0.1 --path {docroot}",
            )
            self.assertEqual(tutorial_client(server.address_port("echoapp-tcp"), [b"x"])[1], b"Hello, x!")
            # twisted.web says where it listens in its own words.
            end = time.monotonic() + DEADLINE
            while "Site starting on" not in server.output and time.monotonic() < end:
                server._read(0.2)
            web_port = int(server.output.split("Site starting on ")[1].split()[0])
            with urllib.request.urlopen(
                f"http://127.0.0.1:{web_port}/index.html", timeout=DEADLINE
            ) as response:
                self.assertEqual(response.read(), b"served by twisted.web")

    def test_compose_the_same_plugin_twice(self) -> None:
        server = self.running(
            "echoapp-compose",
            "--service",
            f"echoapp-tcp --listen {LOOP}",
            "--service",
            f"echoapp-tcp --listen {LOOP} --banner Hi",
            expect=2,
        )
        self.assertEqual(tutorial_client(server.address_port("echoapp-tcp"), [])[0], b"Welcome!\r\n")
        self.assertEqual(tutorial_client(server.address_port("echoapp-tcp-2"), [])[0], b"Hi\r\n")

    def test_twist_runner(self) -> None:
        server = self.running("echoapp-tcp", "--listen", LOOP, runner="twist")
        self.assertEqual(tutorial_client(server.address_port("echoapp-tcp"), [b"t"])[1], b"Hello, t!")

    def test_option_error_is_one_line_without_traceback(self) -> None:
        result = run_twistd(["echoapp-tcp", "--reply", "no placeholder"])
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(
            "--reply: reply template 'no placeholder' must contain exactly one {} placeholder",
            result.stdout + result.stderr,
        )
        self.assertNotIn("Traceback", result.stdout + result.stderr)

    def test_port_in_use_is_one_line_without_traceback(self) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = run_twistd(
                ["--logfile=-", "echoapp-echo", "--listen", f"tcp:{port}:interface=127.0.0.1"]
            )
        self.assertEqual(result.returncode, 1)
        output = result.stdout + result.stderr
        self.assertIn(f"echoapp-echo: cannot listen on tcp:{port}:interface=127.0.0.1: [Errno 98]", output)
        self.assertNotIn("Traceback", output)


class DaemonTests(SynchronousTestCase):
    def test_daemonized_with_pidfile_and_logfile(self) -> None:
        import subprocess

        with tempfile.TemporaryDirectory() as directory:
            pidfile = os.path.join(directory, "echoapp.pid")
            logfile = os.path.join(directory, "echoapp.log")
            subprocess.run(
                [twistd_path(), "--pidfile", pidfile, "--logfile", logfile, "echoapp-tcp", "--listen", LOOP],
                cwd=directory,
                env=installed_env(),
                check=True,
                timeout=DEADLINE,
            )
            end = time.monotonic() + DEADLINE
            text = ""
            while "listening on" not in text and time.monotonic() < end:
                time.sleep(0.05)
                text = open(logfile).read() if os.path.exists(logfile) else ""
            pid = int(open(pidfile).read())
            try:
                port = int(text.split("listening on tcp:127.0.0.1:")[1].split()[0])
                self.assertEqual(tutorial_client(port, [b"daemon"])[1], b"Hello, daemon!")
            finally:
                os.kill(pid, signal.SIGTERM)
            while os.path.exists(pidfile) and time.monotonic() < end:
                time.sleep(0.05)
            self.assertFalse(os.path.exists(pidfile), "twistd removes its pidfile when it stops")


class StartupFailureTests(SynchronousTestCase):
    """
    A port that cannot be had ends start-up promptly, exit status 1, the
    reason on the terminal and no pid file left, in every mode.  A daemon's
    parent used to wait forever: twistd tells it only about Exceptions.
    """

    def start(self, runner_args: list[str], plugin: str, listen: str) -> tuple[int, str, list[str]]:
        import subprocess

        directory = tempfile.mkdtemp()
        self.addCleanup(lambda: [os.remove(os.path.join(directory, n)) for n in os.listdir(directory)])
        runner = twistd_path("twist" if runner_args[:1] == ["twist"] else "twistd")
        result = subprocess.run(
            [runner, *runner_args[1:], plugin, "--listen", listen],
            cwd=directory,
            env=installed_env(),
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            stdin=subprocess.DEVNULL,
        )
        # A daemon removes its pid file just after it tells its parent why it
        # failed (twistd's order), so the parent may exit first: wait, bounded.
        end = time.monotonic() + DEADLINE
        while any(name.endswith(".pid") for name in os.listdir(directory)) and time.monotonic() < end:
            time.sleep(0.05)
        return result.returncode, result.stderr, os.listdir(directory)

    def taken(self, kind: int) -> int:
        sock = socket.socket(socket.AF_INET, kind)
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            sock.listen()
        return int(sock.getsockname()[1])

    def test_daemon_with_tcp_port_taken(self) -> None:
        port = self.taken(socket.SOCK_STREAM)
        code, err, left = self.start(
            ["twistd", "--pidfile=t.pid", "--logfile=t.log"], "echoapp-tcp", f"tcp:{port}:interface=127.0.0.1"
        )
        self.assertEqual(code, 1)
        self.assertIn(f"Address already in use: tcp:{port}:interface=127.0.0.1 (echoapp-tcp)", err)
        self.assertNotIn("t.pid", left)
        self.assertNotIn("Traceback", err)

    def test_daemon_with_udp_port_taken(self) -> None:
        port = self.taken(socket.SOCK_DGRAM)
        code, err, left = self.start(
            ["twistd", "--pidfile=t.pid", "--logfile=t.log"], "echoapp-udp", f"udp:{port}:interface=127.0.0.1"
        )
        self.assertEqual(code, 1)
        self.assertIn(f"Address already in use: udp:{port}:interface=127.0.0.1 (echoapp-udp)", err)
        self.assertNotIn("t.pid", left)

    def test_daemon_with_unusable_unix_path(self) -> None:
        code, err, left = self.start(
            ["twistd", "--pidfile=t.pid", "--logfile=t.log"], "echoapp-echo", "unix:/no/such/dir/echo.sock"
        )
        self.assertEqual(code, 1)
        self.assertIn("unix:/no/such/dir/echo.sock (echoapp-echo)", err)
        self.assertNotIn("t.pid", left)

    def test_foreground_leaves_no_pid_file(self) -> None:
        port = self.taken(socket.SOCK_STREAM)
        code, err, left = self.start(
            ["twistd", "-n", "--pidfile=t.pid", "--logfile=t.log"], "echoapp-tcp", f"tcp:{port}"
        )
        self.assertEqual(code, 1)
        self.assertIn(f"echoapp-tcp: cannot listen on tcp:{port}: [Errno 98] Address already in use", err)
        self.assertNotIn("t.pid", left)

    def test_twist(self) -> None:
        port = self.taken(socket.SOCK_STREAM)
        code, err, _ = self.start(["twist"], "echoapp-tcp", f"tcp:{port}:interface=127.0.0.1")
        self.assertEqual(code, 1)
        self.assertEqual(
            err.strip().splitlines()[-1],
            f"echoapp-tcp: cannot listen on tcp:{port}:interface=127.0.0.1: "
            "[Errno 98] Address already in use",
        )


class OptionErrorTests(SynchronousTestCase):
    """A mistake on the command line: one line naming the option, first, on stderr; no usage dump."""

    cases = {
        "echoapp-tcp": (["--reply", "nope"], "--reply: reply template 'nope' must contain exactly one {}"),
        "echoapp-echo": (["--max-per-peer", "0"], "--max-per-peer: must be a positive whole number, got 0"),
        "echoapp-udp": (
            ["--listen", "udp:x"],
            "--listen: cannot listen on 'udp:x': port 'x' is not a number",
        ),
        "echoapp": (["--bogus"], "option --bogus not recognized"),
        "echoapp-compose": (
            ["--service", "echoapp-tcp --framing x"],
            "--service 'echoapp-tcp --framing x': --framing: unknown framing 'x'",
        ),
    }

    def test_every_plugin(self) -> None:
        for plugin, (args, message) in self.cases.items():
            result = run_twistd([plugin, *args])
            self.assertEqual(result.returncode, 1, plugin)
            lines = result.stderr.splitlines()
            self.assertTrue(lines[0].startswith(f"twistd {plugin}: {message}"), lines[:1])
            self.assertEqual(lines[1:], [f"(twistd {plugin} --help lists every option)"])
            self.assertEqual(result.stdout, "", "no usage dump")
