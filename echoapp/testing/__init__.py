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

Where a peer runs: in the test's reactor when the test runs it (trial's
C{TestCase}, or no test given); for any other test (trial's
C{SynchronousTestCase}, C{unittest}, the pytest fixtures) on a reactor of
echoapp's own in a thread, so that the test may block on a client while the
peer serves.  A peer's methods may be called from the test's thread either
way.

Options are the plugins' own: whole configs (C{config=GreeterConfig(...)},
C{limits=TCPLimits(...)}) or their fields by name (C{banner},
C{idle_timeout}, C{max_line_length}, C{rate}, ...), over the config given;
strings are accepted for the bytes ones and for C{reply}.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar
from unittest import TestCase

from twisted.application.service import MultiService
from twisted.internet.interfaces import IReactorTime

from echoapp import services
from echoapp._faults import Faults, offered
from echoapp._record import Recorder
from echoapp._transports.haproxy import parse_networks
from echoapp.config import GreeterConfig, TCPLimits, UDPLimits
from echoapp.template import ReplyTemplate
from echoapp.testing._peer import Peer, ProxyPeer, ServicePeer, place, started
from echoapp.testing._proxy import proxy
from echoapp.testing._twistd import TCP_LOOPBACK, UDP_LOOPBACK, Process
from echoapp.testing._wire import TEST_RECORD_BYTES, Connection, Record, WireEvent, capture_for

__all__ = [
    "Connection",
    "Faults",
    "Peer",
    "Process",
    "ProxyPeer",
    "Record",
    "WireEvent",
    "echo",
    "greeter",
    "proxy",
    "udp",
]

C = TypeVar("C", GreeterConfig, TCPLimits, UDPLimits)


def _config(kind: type[C], given: C | None, fields: dict[str, object]) -> C:
    """
    C{given} (or the defaults) with the C{fields} of C{kind} named in
    C{fields} replaced, which are taken out of it: the config checks (and
    converts) its own fields.
    """
    names = [field.name for field in dataclasses.fields(kind) if field.name in fields]
    values = {name: fields.pop(name) for name in names}
    return dataclasses.replace(given, **values) if given is not None else kind(**values)  # type: ignore[arg-type]


def _no_more(fields: dict[str, object], *kinds: type) -> None:
    if fields:
        known = sorted(f.name for kind in kinds for f in dataclasses.fields(kind))
        raise TypeError(f"unknown option {sorted(fields)[0]!r}; these are known: {', '.join(known)}")


# A test's traffic is not a flood: the UDP peer answers at these rates
# unless told otherwise (the plugins' own defaults, 50 a second per source
# after a burst of 100, would drop most of a 300-datagram burst).
TEST_UDP_LIMITS = UDPLimits(rate=1_000_000.0, burst=1_000_000, global_rate=1_000_000.0)


def _faults(faults: Faults | None, where: tuple[str, ...]) -> Faults:
    """
    Faults (none is C{Faults()}) for every peer, so that each has a plan and
    faults set while it runs reach every connection.
    """
    faults = faults or Faults()
    faults.check_applies(*where)
    return faults


def _running(
    service: MultiService,
    where: tuple[str, ...],
    test: TestCase | None,
    clock: IReactorTime,
) -> ServicePeer:
    """
    C{service} started, its every connection recorded (bounded: L{Peer.record}),
    and streamed to a capture file too where the test asks for one.
    """
    plan = services.fault_plan(service)
    assert plan is not None, "given faults, every service keeps a plan"
    recorder = Recorder(clock, TEST_RECORD_BYTES)
    services.recorded(service, recorder, capture_for(test))
    service.privilegedStartService()
    service.startService()
    return ServicePeer(service, plan, where, recorder)


def greeter(
    test: TestCase | None = None,
    *,
    listen: str = TCP_LOOPBACK,
    faults: Faults | None = None,
    reactor: IReactorTime | None = None,
    config: GreeterConfig | None = None,
    limits: TCPLimits | None = None,
    reuse_port: bool = False,
    log_connections: bool = False,
    proxy_from: str | Sequence[str] = (),
    **fields: object,
) -> Peer:
    """
    The welcome/echo/exit greeter.  With a C{test}, it is stopped at the
    test's cleanup; without, call L{Peer.stop}.  C{fields} are fields of
    L{GreeterConfig} and L{TCPLimits} by name (C{banner="Hi"}); an unknown
    one is a L{TypeError} that lists the known ones.
    """
    config = _config(GreeterConfig, config, fields)
    build = partial(services.tcp_greeter, config=config, limits=_config(TCPLimits, limits, fields))
    _no_more(fields, GreeterConfig, TCPLimits)
    return _stream_peer(test, build, listen, faults, reactor, reuse_port, log_connections, proxy_from)


def echo(
    test: TestCase | None = None,
    *,
    listen: str = TCP_LOOPBACK,
    faults: Faults | None = None,
    reactor: IReactorTime | None = None,
    limits: TCPLimits | None = None,
    reuse_port: bool = False,
    log_connections: bool = False,
    proxy_from: str | Sequence[str] = (),
    **fields: object,
) -> Peer:
    """RFC 862 echo; as L{greeter}, with the fields of L{TCPLimits}."""
    build = partial(services.echo, limits=_config(TCPLimits, limits, fields))
    _no_more(fields, TCPLimits)
    return _stream_peer(test, build, listen, faults, reactor, reuse_port, log_connections, proxy_from)


def _stream_peer(
    test: TestCase | None,
    build: Callable[..., MultiService],
    listen: str,
    faults: Faults | None,
    reactor: IReactorTime | None,
    reuse_port: bool,
    log_connections: bool,
    proxy_from: str | Sequence[str],
) -> Peer:
    """
    A peer of a TCP service C{build} makes, its configs already given: what
    L{greeter} and L{echo} share, from PROXY trust to the running peer.
    """
    networks = parse_networks([proxy_from] if isinstance(proxy_from, str) else list(proxy_from))
    where = offered([listen])
    on, thread = place(test, reactor)

    def start() -> Peer:
        service = build(
            [listen], reactor=on, faults=_faults(faults, where),
            reuse_port=reuse_port, log_connections=log_connections, proxy_from=networks,
        )  # fmt: skip
        return _running(service, where, test, on)

    return started(test, thread, start)


def udp(
    test: TestCase | None = None,
    *,
    listen: str = UDP_LOOPBACK,
    faults: Faults | None = None,
    reactor: IReactorTime | None = None,
    reply: str | ReplyTemplate = "Hello, {}!",
    limits: UDPLimits | None = None,
    reuse_port: bool = False,
    **fields: object,
) -> Peer:
    """
    The UDP greeter; C{reply} and the fields of L{UDPLimits} as options.
    Its rate limits default to L{TEST_UDP_LIMITS}, so that they drop none
    of a test's datagrams; pass C{rate}, C{burst} or C{global_rate} (or
    C{limits}) to test them.
    """
    limits = _config(UDPLimits, limits or TEST_UDP_LIMITS, fields)
    _no_more(fields, UDPLimits)
    template = reply if isinstance(reply, ReplyTemplate) else ReplyTemplate.parse(reply)
    where = offered(datagrams=True)
    on, thread = place(test, reactor)

    def start() -> Peer:
        service = services.udp_greeter(
            [listen], template, limits, on, reuse_port, faults=_faults(faults, where)
        )
        return _running(service, where, test, on)

    return started(test, thread, start)
