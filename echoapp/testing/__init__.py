"""
echoapp as a peer for your own tests: the real services, in-process on a
loopback port chosen by the kernel, stopped (and drained) when the test ends;
or a real C{twistd} process, for clients that are not Twisted.  Either can
misbehave on demand (L{Faults}), and a running peer's faults can be changed.

    from echoapp.testing import Faults, greeter

    class ClientTests(TestCase):
        async def test_slow_server(self):
            peer = greeter(self, faults=Faults(latency=0.1), banner="Hi")
            ...connect to peer.host, peer.port...

Options are the plugins' own, by their field names (C{banner},
C{idle_timeout}, C{max_line_length}, C{rate}, ..., C{reuse_port},
C{log_connections}, C{proxy_from}); strings are accepted for the bytes ones
and for C{reply}.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import threading
from collections import deque
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, maybeDeferred

from echoapp import services
from echoapp._faults import FaultPlan, Faults
from echoapp._transports.listen import listeners
from echoapp._transports.proxy_protocol import parse_networks
from echoapp.config import GreeterConfig, TCPLimits, UDPLimits
from echoapp.template import ReplyTemplate
from echoapp.testing._proxy import ProxyPeer, proxy

__all__ = ["Faults", "Peer", "Process", "ProxyPeer", "echo", "greeter", "proxy", "udp"]

TCP_LOOPBACK = "tcp:0:interface=127.0.0.1"
UDP_LOOPBACK = "udp:0:interface=127.0.0.1"


def _configs(options: dict[str, Any], *kinds: type) -> list[Any]:
    """Each config of C{kinds} built from the options that name its fields."""
    left = dict(options)
    built = []
    for kind in kinds:
        values = {}
        for field in dataclasses.fields(kind):
            if field.name not in left:
                continue
            values[field.name] = left.pop(field.name)
        built.append(kind(**values))  # the config checks (and converts) its own fields
    if left:
        known = sorted(f.name for kind in kinds for f in dataclasses.fields(kind))
        raise TypeError(f"unknown option {sorted(left)[0]!r}; these are known: {', '.join(known)}")
    return built


def _stream_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stream options that are no config field: --reuse-port, --log-connections, --proxy-from."""
    left = dict(options)
    stream: dict[str, Any] = {
        "reuse_port": bool(left.pop("reuse_port", False)),
        "log_connections": bool(left.pop("log_connections", False)),
    }
    proxy_from = left.pop("proxy_from", ())
    stream["proxy_from"] = parse_networks([proxy_from] if isinstance(proxy_from, str) else list(proxy_from))
    return stream, left


class Peer:
    """A running service: where it listens, its faults (which may be changed), and how to stop it."""

    def __init__(self, service: MultiService, plan: FaultPlan) -> None:
        self.service = service
        self.plan = plan

    @property
    def addresses(self) -> list[tuple[str, int]]:
        found = []
        for listener in listeners(self.service):
            if listener.port is not None:
                host: Any = listener.port.getHost()
                found.append((host.host, host.port))
        return found

    @property
    def host(self) -> str:
        return self.addresses[0][0]

    @property
    def port(self) -> int:
        return self.addresses[0][1]

    @property
    def faults(self) -> Faults:
        return self.plan.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        """New connections, and later replies on open ones, see the change."""
        self.plan.faults = faults

    @property
    def seed(self) -> int:
        """The seed of every random choice: pass C{Faults(seed=...)} to repeat a run exactly."""
        return self.plan.seed

    def stop(self) -> Deferred[None]:
        """Stop listening, say goodbye to every client, close: what C{twistd} does on SIGTERM."""
        return maybeDeferred(self.service.stopService)


def _start(test: Any, service: MultiService, plan: FaultPlan) -> Peer:
    service.privilegedStartService()
    service.startService()
    peer = Peer(service, plan)
    if test is not None:
        test.addCleanup(peer.stop)
    return peer


def greeter(
    test: Any = None,
    *,
    listen: str = TCP_LOOPBACK,
    faults: Faults | None = None,
    reactor: Any = None,
    **options: Any,
) -> Peer:
    """
    The welcome/echo/exit greeter.  With a trial C{test}, it is stopped at
    the test's cleanup; without, call L{Peer.stop}.
    """
    stream, options = _stream_options(options)
    config, limits = _configs(options, GreeterConfig, TCPLimits)
    plan = FaultPlan(faults or Faults(), reactor)
    return _start(test, services.tcp_greeter([listen], config, limits, reactor, faults=plan, **stream), plan)


def echo(
    test: Any = None,
    *,
    listen: str = TCP_LOOPBACK,
    faults: Faults | None = None,
    reactor: Any = None,
    **options: Any,
) -> Peer:
    """RFC 862 echo; as L{greeter}."""
    stream, options = _stream_options(options)
    (limits,) = _configs(options, TCPLimits)
    plan = FaultPlan(faults or Faults(), reactor)
    return _start(test, services.echo([listen], limits, reactor, faults=plan, **stream), plan)


def udp(
    test: Any = None,
    *,
    listen: str = UDP_LOOPBACK,
    faults: Faults | None = None,
    reactor: Any = None,
    **options: Any,
) -> Peer:
    """The UDP greeter; C{reply} and the UDP limits as options."""
    reply = options.pop("reply", "Hello, {}!")
    reuse_port = bool(options.pop("reuse_port", False))
    (limits,) = _configs(options, UDPLimits)
    template = reply if isinstance(reply, ReplyTemplate) else ReplyTemplate.parse(reply)
    plan = FaultPlan(faults or Faults(), reactor)
    service = services.udp_greeter([listen], template, limits, reactor, reuse_port, faults=plan)
    return _start(test, service, plan)


_LISTENING = re.compile(r"(echoapp[\w-]*) listening on (?:tcp|udp|ssl):(\[?[\w.:]+\]?):(\d+)")


class Process:
    """
    A real C{twistd} running one of echoapp's plugins on a loopback port
    chosen by the kernel, for clients of any kind (plain sockets, asyncio,
    other languages).  A context manager: the process is stopped on exit.

        with Process("echoapp-tcp", "--fault", "latency=100ms") as server:
            socket.create_connection((server.host, server.port))
    """

    def __init__(self, plugin: str = "echoapp-tcp", *args: str, timeout: float = 30.0) -> None:
        self.plugin = plugin
        self.args = list(args)
        self.timeout = timeout
        self.process: subprocess.Popen[str] | None = None
        self.host = ""
        self.port = 0
        self.output: deque[str] = deque(maxlen=1000)  # its log, the last lines
        self._listening = threading.Event()

    def command(self) -> list[str]:
        """twistd's own entry point, run by this Python (twistd has no C{__main__})."""
        loopback = UDP_LOOPBACK if self.plugin == "echoapp-udp" else TCP_LOOPBACK
        listen = [] if "--listen" in self.args else ["--listen", loopback]
        command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
        return [*command, "-n", "--pidfile=", "--logfile=-", self.plugin, *listen, *self.args]

    def start(self) -> Process:
        """Start it, and return once it says where it listens (at most C{timeout} seconds)."""
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ)
        )
        # Its log is read by a thread for as long as it runs: the address is
        # in it, and a full pipe would stop the server.
        self._listening = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._listening.wait(self.timeout) or not self.port:
            self.stop()
            said = "".join(list(self.output))[-2000:]
            raise RuntimeError(f"{self.plugin} did not say where it listens within {self.timeout:g}s: {said}")
        return self

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            match = None if self.port else _LISTENING.search(line)
            if match:
                self.host, self.port = match.group(2).strip("[]"), int(match.group(3))
                self._listening.set()
        self._listening.set()  # it ended: start() need not wait any longer

    def stop(self) -> None:
        """
        Terminate the twistd process (it drains its clients) and wait; kill
        it if it does not exit in time.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(self.timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Process:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
