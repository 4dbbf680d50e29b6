"""
Helpers the tests share: servers started in-process on port 0, the classic
blocking-socket tutorial client, and real twistd subprocesses.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from typing import Any

from twisted.application.service import IServiceCollection, MultiService
from twisted.trial.unittest import TestCase

from echoapp._twisted import asyncio_loop
from echoapp.listen import StreamListenService, UDPListenService

DEADLINE = 20.0  # seconds; a bound so that nothing hangs, never an assertion


def start(test: TestCase, service: MultiService) -> list[Any]:
    """
    Start a service tree in-process, stop it when the test ends, and return
    the ports its listeners bound (in tree order).
    """
    service.privilegedStartService()
    service.startService()
    test.addCleanup(service.stopService)
    return [listener.port for listener in listeners(service)]


def listeners(service: Any) -> list[Any]:
    found: list[Any] = []
    if isinstance(service, StreamListenService | UDPListenService):
        found.append(service)
    for child in IServiceCollection(service, []):
        found.extend(listeners(child))
    return found


def tutorial_client(port: int, messages: Sequence[bytes], host: str = "127.0.0.1") -> list[bytes]:
    """
    The socket-tutorial client: read the banner, then for each message
    send() it (no newline added) and recv(1024) the answer.
    """
    received = []
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        received.append(sock.recv(1024))
        for message in messages:
            sock.send(message)
            received.append(sock.recv(1024))
    return received


def recv_until_closed(sock: socket.socket, limit: int = 1 << 24) -> bytes:
    chunks = []
    total = 0
    while total < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def twistd_path(name: str = "twistd") -> str:
    """The runner installed beside this Python (the venv CI made), not the source tree."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return beside if os.path.exists(beside) else (shutil.which(name) or name)


LISTENING = re.compile(r"(echoapp[\w-]*) listening on (\S+)")


def same_reactor(args: Sequence[str]) -> list[str]:
    """
    C{--reactor=uvloop} when this test run is on uvloop (and C{args} names
    no reactor), so the subprocess tests, the attacks among them, prove the
    native transports too.
    """
    from twisted.internet import reactor

    loop = asyncio_loop(reactor)
    if loop is None or type(loop).__module__.split(".")[0] != "uvloop":
        return []
    if any(arg.startswith("--reactor") for arg in args):
        return []
    return ["--reactor=uvloop"]


class Twistd:
    """
    A real C{twistd -n} (or C{twist}) subprocess, run from an empty
    directory without PYTHONPATH so it uses the installed package and
    plugins: a packaging mistake fails here.
    """

    def __init__(
        self, args: Sequence[str], runner: str = "twistd", expect: int = 1, preexec: Any = None
    ) -> None:
        self.directory = tempfile.mkdtemp(prefix="echoapp-test-")
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        args = [*same_reactor(args), *args]
        if runner == "twistd":
            command = [twistd_path(), "-n", "--pidfile=", "--logfile=-", *args]
        else:
            command = [twistd_path(runner), "--log-file=-", "--log-format=text", *args]
        self.process = subprocess.Popen(
            command,
            cwd=self.directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec,
        )
        self.output = ""
        self.addresses: dict[str, list[str]] = {}
        self._wait_for(lambda: sum(map(len, self.addresses.values())) >= expect)

    def _read(self, timeout: float) -> bool:
        """Read what the process printed within C{timeout}; False at its end."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return True
        data = os.read(fd, 65536)
        if not data:
            return False
        self.output += data.decode("utf-8", "replace")
        for service, address in LISTENING.findall(self.output):
            if address not in self.addresses.setdefault(service, []):
                self.addresses[service].append(address)
        return True

    def _wait_for(self, condition: Any) -> None:
        end = time.monotonic() + DEADLINE
        while not condition():
            if time.monotonic() > end or not self._read(0.2):
                self.stop()
                raise AssertionError(f"twistd did not get ready:\n{self.output}")

    def port(self, service: str, index: int = 0) -> int:
        return int(self.addresses[service][index].rsplit(":", 1)[1])

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            remaining, _ = self.process.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            remaining, _ = self.process.communicate()
        self.output += remaining.decode("utf-8", "replace")
        shutil.rmtree(self.directory, ignore_errors=True)
        return self.process.returncode


def run_twistd(args: Iterable[str]) -> subprocess.CompletedProcess[str]:
    """Run twistd to completion (for option errors and --help)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    with tempfile.TemporaryDirectory() as directory:
        return subprocess.run(
            [twistd_path(), "-n", "--pidfile=", *args],
            cwd=directory,
            env=env,
            capture_output=True,
            text=True,
            timeout=DEADLINE * 3,
            stdin=subprocess.DEVNULL,
        )
