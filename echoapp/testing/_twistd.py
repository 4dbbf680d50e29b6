"""
A real C{twistd} (or C{twist}) process, for clients of any kind: the one
subprocess harness, used by echoapp's own tests as by its users.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence

from echoapp.testing._wire import KeptRecord, Record, direct

TCP_LOOPBACK = "tcp:0:interface=127.0.0.1"
UDP_LOOPBACK = "udp:0:interface=127.0.0.1"

# What to add, for a plugin given no address of its own, so that it
# listens on loopback ports the kernel picks: option, value, and the
# options that, given, mean the user chose.
_LOOPBACK: dict[str, list[tuple[str, str]]] = {
    "echoapp-tcp": [("--listen", TCP_LOOPBACK)],
    "echoapp-echo": [("--listen", TCP_LOOPBACK)],
    "echoapp-udp": [("--listen", UDP_LOOPBACK)],
    "echoapp": [("--tcp", TCP_LOOPBACK), ("--udp", UDP_LOOPBACK), ("--echo", TCP_LOOPBACK)],
}
# The line every echoapp listener logs once it listens: service, address.
LISTENING = re.compile(r"(echoapp[\w-]*) listening on (\S+)")
_SEED = re.compile(r"\(seed=(\d+)\)")
_TWISTD = "from twisted.scripts.twistd import run; run()"


def _given(option: str, args: Sequence[str]) -> bool:
    return any(arg == option or arg.startswith(option + "=") for arg in args)


def host_and_port(address: str) -> tuple[str, int]:
    """C{tcp:127.0.0.1:9999} or C{tcp6:[::1]:9999}, as a listening line gives it, as C{(host, port)}."""
    _, _, rest = address.partition(":")
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0


class Process:
    """
    A real C{twistd -n} running a plugin, on loopback ports chosen by the
    kernel unless told where; a context manager that stops it on exit.

        with Process("echoapp-tcp", "--fault", "latency=100ms") as server:
            socket.create_connection((server.host, server.port))

    C{plugin} is any installed twistd plugin (C{echoapp}, C{echoapp-compose},
    someone else's), C{args} its own options, C{reactor} twistd's
    C{--reactor}, C{options} twistd's other options (before the plugin name,
    where twistd wants them).  C{runner="twist"} uses C{twist} instead.
    C{plugin=None} takes C{args} as the whole command line after twistd's
    own C{-n --pidfile= --logfile=-}.  It is ready when C{expect} listening
    lines have been logged (every address the plugin opens, by default one,
    three for C{echoapp}); an early exit raises L{RuntimeError} with
    twistd's own last words.

    @ivar addresses: service name -> the addresses it said it listens on.
    @ivar seed: the seed its faults use (from its log), or L{None}.
    """

    def __init__(
        self,
        plugin: str | None = "echoapp-tcp",
        *args: str,
        reactor: str | None = None,
        options: Sequence[str] = (),
        runner: str = "twistd",
        expect: int | None = None,
        timeout: float = 30.0,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        preexec_fn: Callable[[], object] | None = None,
        keep_lines: int = 1000,
    ) -> None:
        self.plugin = plugin
        self.args = list(args)
        self.reactor = reactor
        self.options = list(options)
        self.runner = runner
        self.timeout = timeout
        self.cwd = cwd
        self.env = dict(os.environ if env is None else env)
        self.preexec_fn = preexec_fn
        added = len(self._loopback()) // 2  # option, value
        self.expect = expect if expect is not None else max(added, 1)
        self.process: subprocess.Popen[str] | None = None
        self.addresses: dict[str, list[str]] = {}
        self.host = ""
        self.port = 0
        self.seed: int | None = None
        self._lines: deque[str] = deque(maxlen=keep_lines)  # its log, the last lines
        self._changed = threading.Condition()
        self._drained = threading.Event()

    def _loopback(self) -> list[str]:
        """The loopback addresses added for a plugin told none (nothing for other plugins)."""
        added: list[str] = []
        for option, value in _LOOPBACK.get(self.plugin or "", []):
            if not _given(option, self.args):
                added += [option, value]
        return added

    def command(self) -> list[str]:
        """
        twistd's (or twist's) own entry point, run by this Python, so the
        process runs the same installation as the caller.
        """
        reactor = [f"--reactor={self.reactor}"] if self.reactor else []
        tail = [] if self.plugin is None else [self.plugin, *self._loopback()]
        if self.runner == "twist":
            head = [sys.executable, "-m", "twisted", "--log-file=-", "--log-format=text"]
        else:
            head = [sys.executable, "-c", _TWISTD, "-n", "--pidfile=", "--logfile=-"]
        return [*head, *reactor, *self.options, *tail, *self.args]

    @property
    def output(self) -> str:
        """What it logged (the last C{keep_lines} lines)."""
        with self._changed:
            return "".join(self._lines)

    def start(self) -> Process:
        """Start it, and return once it says where it listens (at most C{timeout} seconds)."""
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            cwd=self.cwd,
            env=self.env,
            preexec_fn=self.preexec_fn,
        )
        # Its log is read by a thread for as long as it runs: the addresses
        # are in it, and a full pipe would stop the server.
        threading.Thread(target=self._drain, daemon=True).start()
        ready = self.wait_for(lambda: sum(map(len, self.addresses.values())) >= self.expect)
        if not ready:
            code = self.process.poll()
            if code is None and self._drained.is_set():  # its output ended: it is exiting
                try:
                    code = self.process.wait(self.timeout)
                except subprocess.TimeoutExpired:
                    code = None
            self.stop()
            said = self.output[-2000:].strip()
            if code is not None:
                # twistd's own error: the last line that is not a hint in brackets
                words = [line for line in said.splitlines() if line.strip() and not line.startswith("(")]
                last = words[-1] if words else ""
                raise RuntimeError(f"{self.name} exited with status {code} before listening: {last}\n{said}")
            raise RuntimeError(f"{self.name} did not say where it listens within {self.timeout:g}s: {said}")
        return self

    @property
    def name(self) -> str:
        """What is run, for messages: the plugin, or the command line given."""
        return self.plugin or " ".join(self.args[:3])

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self._lines.append(line)
                for service, address in LISTENING.findall(line):
                    if address not in self.addresses.setdefault(service, []):
                        self.addresses[service].append(address)
                        if not self.port:
                            self.host, self.port = host_and_port(address)
                seed = _SEED.search(line)
                if seed and self.seed is None:
                    self.seed = int(seed.group(1))
                self._changed.notify_all()
        with self._changed:
            self._drained.set()
            self._changed.notify_all()

    def wait_for(self, condition: Callable[[], bool], timeout: float | None = None) -> bool:
        """Wait until C{condition()} holds (checked as lines arrive): False at the timeout or its exit."""
        end = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._changed:
            while not condition():
                left = end - time.monotonic()
                if left <= 0 or self._drained.is_set():
                    return condition()
                self._changed.wait(min(left, 0.5))
        return True

    def address_port(self, service: str, index: int = 0) -> int:
        """The port of the C{index}th address C{service} listens on."""
        return host_and_port(self.addresses[service][index])[1]

    def stop(self) -> int | None:
        """
        Terminate the process (twistd drains its clients first) and wait;
        kill it if it does not exit in time.  Its exit status, negative for a
        signal, as L{subprocess} gives it.
        """
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(self.timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._drained.wait(self.timeout)
        if process.stdout is not None:
            process.stdout.close()
        return process.returncode

    @property
    def record_file(self) -> str | None:
        """The capture its C{--record FILE} writes, if it was given one."""
        for index, arg in enumerate(self.args):
            if arg.startswith("--record="):
                return arg.partition("=")[2]
            if arg == "--record" and index + 1 < len(self.args):
                return self.args[index + 1]
        return None

    @property
    def record(self) -> Record | None:
        """
        Its wire record, read back from its C{--record} capture (L{None}
        without one): whole once it has stopped (the file is closed after
        its drain); while it runs, what it has written so far (each
        connection once it has closed).
        """
        path = self.record_file
        if path is None:
            return None
        from echoapp.testing._readback import read_capture  # dpkt, imported when read

        with self._changed:
            listeners = {
                ("udp" if address.startswith("udp") else "tcp", *host_and_port(address)): service
                for service, addresses in self.addresses.items()
                for address in addresses
            }
        note = f"seed {self.seed}" if self.seed is not None else ""
        try:
            with open(os.path.join(self.cwd or "", path), "rb") as capture:
                recorder = read_capture(capture, listeners, note)
        except FileNotFoundError:
            return None
        return KeptRecord(recorder, direct)

    def __enter__(self) -> Process:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
