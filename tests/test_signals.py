"""
Signals an operator and the usual tools send to a running daemon: SIGHUP
reopens the log file, SIGUSR1 copes with a log moved away, and a second
SIGTERM during a drain is quiet (the shipped logrotate rule, against a real
daemon: tests/test_deploy.py).  Real twistd processes, on the
reactor this test run uses.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.support import DEADLINE, LOOP, Twistd, installed_env, same_reactor, tutorial_client, twistd_path


def wait_for(condition: object, what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not condition():  # type: ignore[operator]
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.05)


def read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as log:
            return log.read()
    except FileNotFoundError:
        return ""


class LogFileDaemon:
    """twistd -n with --logfile FILE in a directory of its own."""

    def __init__(self, test: SynchronousTestCase, plugin: list[str] | None = None) -> None:
        self.directory = tempfile.mkdtemp(prefix="echoapp-signals-")
        test.addCleanup(shutil.rmtree, self.directory, True)
        self.log = os.path.join(self.directory, "echoapp.log")
        plugin = plugin or ["echoapp-tcp", "--listen", LOOP, "--log-connections"]
        args = [*same_reactor([]), *plugin]
        self.process = subprocess.Popen(
            [twistd_path(), "-n", "--pidfile=", f"--logfile={self.log}", *args],
            cwd=self.directory,
            env=installed_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        test.addCleanup(self.stop)
        wait_for(lambda: "listening on" in read(self.log), "twistd to listen")
        self.port = int(re.search(r"listening on tcp:127.0.0.1:(\d+)", read(self.log)).group(1))  # type: ignore[union-attr]

    def visit(self, word: bytes) -> None:
        self.assertion = tutorial_client(self.port, [word])
        assert self.assertion[1] == b"Hello, %s!" % word

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class LogReopenTests(SynchronousTestCase):
    def moved_then(self, number: int, plugin: list[str] | None = None) -> None:
        daemon = LogFileDaemon(self, plugin)
        daemon.visit(b"before")
        wait_for(lambda: "closed" in read(daemon.log), "the first visit's close line")
        moved = daemon.log + ".1"
        os.rename(daemon.log, moved)
        daemon.process.send_signal(number)
        wait_for(lambda: os.path.exists(daemon.log), "a new log file")
        daemon.visit(b"after")
        wait_for(lambda: "Connection from" in read(daemon.log), "the new file to be written")
        self.assertIsNone(daemon.process.poll(), "still running")
        old, new = read(moved), read(daemon.log)
        self.assertEqual(old.count("Connection from"), 2, "the first visit's open and close, no more")
        self.assertGreaterEqual(new.count("Connection from"), 1)
        self.assertNotIn("Traceback", old + new)

    def test_sighup_after_the_file_was_moved(self) -> None:
        self.moved_then(signal.SIGHUP)

    def test_sigusr1_after_the_file_was_moved(self) -> None:
        self.moved_then(signal.SIGUSR1)

    def test_sighup_with_several_of_our_plugins_composed(self) -> None:
        """Each composed plugin brings signal handling; the first to start handles the process's."""
        self.moved_then(
            signal.SIGHUP,
            [
                "echoapp-compose",
                "--service",
                f"echoapp-tcp --listen {LOOP} --log-connections",
                "--service",
                f"echoapp-echo --listen {LOOP}",
            ],
        )

    def test_sighup_without_a_log_file_does_not_kill(self) -> None:
        server = Twistd(["echoapp-tcp", "--listen", LOOP])
        server.process.send_signal(signal.SIGHUP)
        self.assertTrue(server.wait_for(lambda: "no log file to reopen" in server.output), server.output)
        self.assertEqual(tutorial_client(server.address_port("echoapp-tcp"), [b"hup"])[1], b"Hello, hup!")
        server.stop()


class SecondSignalTests(SynchronousTestCase):
    def test_a_second_sigterm_during_a_drain_is_quiet(self) -> None:
        server = Twistd(["echoapp-echo", "--listen", LOOP, "--close-grace", "2"])
        port = server.address_port("echoapp-echo")
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as slow:
            slow.setblocking(False)
            for _ in range(2):  # echo fills its buffers towards a reader that never reads
                try:
                    while True:
                        slow.send(b"x" * 65536)
                except BlockingIOError:
                    time.sleep(0.3)
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            server.process.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            server.process.send_signal(signal.SIGINT)
            server.stop()
        self.assertNotIn("Traceback", server.output)
        self.assertNotIn("ReactorNotRunning", server.output)
        self.assertEqual(server.output.count("again: still stopping"), 1)
