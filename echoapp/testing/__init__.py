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
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from echoapp import services
from echoapp._faults import FaultPlan, Faults, offered
from echoapp._transports.haproxy import parse_networks
from echoapp._transports.listen import listeners
from echoapp.config import GreeterConfig, TCPLimits, UDPLimits
from echoapp.template import ReplyTemplate
from echoapp.testing._process import TCP_LOOPBACK, UDP_LOOPBACK, Process
from echoapp.testing._proxy import ProxyPeer, proxy

__all__ = ["Faults", "Peer", "Process", "ProxyPeer", "echo", "greeter", "proxy", "udp"]

log = Logger(namespace="echoapp.testing")


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


# A test's traffic is not a flood: the UDP peer answers at these rates
# unless told otherwise (the plugins' own defaults, 50 a second per source
# after a burst of 100, would drop most of a 300-datagram burst).
TEST_UDP_LIMITS = {"rate": 1_000_000.0, "burst": 1_000_000, "global_rate": 1_000_000.0}


def _plan(faults: Faults | None, reactor: Any, where: tuple[str, ...]) -> FaultPlan:
    """Every peer has a plan, so that faults set while it runs reach every connection."""
    faults = faults or Faults()
    faults.check_applies(*where)
    return FaultPlan(faults, reactor)


class Peer:
    """A running service: where it listens, its faults (which may be changed), and how to stop it."""

    def __init__(self, service: MultiService, plan: FaultPlan, where: tuple[str, ...] = ()) -> None:
        self.service = service
        self.plan = plan
        self.where = where

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
        """
        New connections and every open one see the change.

        @raise ValueError: for a fault this service cannot apply.
        """
        faults.check_applies(*self.where)
        self.plan.faults = faults
        # In the test's log, as the start was: the line a failing run is repeated from.
        log.info(
            "{service} faults now: {faults} (seed={seed})",
            service=self.service.name,
            faults=faults,
            seed=self.seed,
        )

    @property
    def seed(self) -> int:
        """The seed of every random choice: pass C{Faults(seed=...)} to repeat a run exactly."""
        return self.plan.seed

    def stop(self) -> Deferred[None]:
        """Stop listening, say goodbye to every client, close: what C{twistd} does on SIGTERM."""
        return maybeDeferred(self.service.stopService)


def _start(test: Any, service: MultiService, plan: FaultPlan, where: tuple[str, ...]) -> Peer:
    service.privilegedStartService()
    service.startService()
    peer = Peer(service, plan, where)
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
    where = offered([listen])
    plan = _plan(faults, reactor, where)
    service = services.tcp_greeter([listen], config, limits, reactor, faults=plan, **stream)
    return _start(test, service, plan, where)


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
    where = offered([listen])
    plan = _plan(faults, reactor, where)
    return _start(test, services.echo([listen], limits, reactor, faults=plan, **stream), plan, where)


def udp(
    test: Any = None,
    *,
    listen: str = UDP_LOOPBACK,
    faults: Faults | None = None,
    reactor: Any = None,
    **options: Any,
) -> Peer:
    """
    The UDP greeter; C{reply} and the UDP limits as options.  Its rate
    limits default to L{TEST_UDP_LIMITS}, so that they drop none of a
    test's datagrams; pass C{rate}, C{burst} or C{global_rate} to test them.
    """
    reply = options.pop("reply", "Hello, {}!")
    reuse_port = bool(options.pop("reuse_port", False))
    (limits,) = _configs({**TEST_UDP_LIMITS, **options}, UDPLimits)
    template = reply if isinstance(reply, ReplyTemplate) else ReplyTemplate.parse(reply)
    where = offered(datagrams=True)
    plan = _plan(faults, reactor, where)
    service = services.udp_greeter([listen], template, limits, reactor, reuse_port, faults=plan)
    return _start(test, service, plan, where)
