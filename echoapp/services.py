"""
The service trees every entry point runs: the twistd plugins in
L{echoapp.tap} and the C{.tac} files both build their applications here, so
a deployment shape is a few lines of configuration and no copied logic.

Each builder returns a named L{MultiService} with one listening child per
address, like carbon's receivers composed in one service.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred

from echoapp.echo import EchoFactory
from echoapp.greeter import GreeterConfig, GreeterFactory
from echoapp.limits import Connections, GuardedFactory, TCPLimits, UDPLimits
from echoapp.listen import (
    DEFAULT_ECHO_LISTEN,
    DEFAULT_TCP_LISTEN,
    DEFAULT_UDP_LISTEN,
    StreamListenService,
    UDPListen,
    UDPListenService,
)
from echoapp.metrics import TCPStats, UDPStats, metrics_site
from echoapp.template import DEFAULT_REPLY, ReplyTemplate
from echoapp.udp import UDPGreeter

TCP_NAME = "echoapp-tcp"
ECHO_NAME = "echoapp-echo"
UDP_NAME = "echoapp-udp"


def _named(name: str) -> MultiService:
    service = MultiService()
    service.setName(name)
    return service


class DrainService(Service):
    """
    On stop, after the listeners have stopped accepting (they are added
    after it, and a MultiService stops its children last-first), every
    client gets its goodbye and the connection is closed; twistd waits for
    the returned Deferred, so the process exits once the last one is gone.
    """

    def __init__(self, connections: Connections) -> None:
        self.connections = connections

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.connections.drain()


def _stream_service(
    name: str,
    make_factory: Callable[..., GuardedFactory],
    limits: TCPLimits | None,
    listen: Iterable[str],
    reactor: Any,
    reuse_port: bool,
) -> MultiService:
    """
    One factory per listener, for per-listener metrics, all sharing one
    L{Connections}: the service's limits count across its listeners.
    """
    service = _named(name)
    connections = Connections(limits or TCPLimits())
    DrainService(connections).setServiceParent(service)
    for description in listen:
        factory = make_factory(
            limits=limits, clock=reactor, connections=connections, stats=TCPStats(name, description)
        )
        StreamListenService(description, factory, reactor, reuse_port).setServiceParent(service)
    return service


def tcp_greeter(
    listen: Iterable[str] = (DEFAULT_TCP_LISTEN,),
    config: GreeterConfig | None = None,
    limits: TCPLimits | None = None,
    reactor: Any = None,
    reuse_port: bool = False,
) -> MultiService:
    """The welcome/echo/exit greeter on every endpoint string in C{listen}."""
    return _stream_service(TCP_NAME, partial(GreeterFactory, config), limits, listen, reactor, reuse_port)


def echo(
    listen: Iterable[str] = (DEFAULT_ECHO_LISTEN,),
    limits: TCPLimits | None = None,
    reactor: Any = None,
    reuse_port: bool = False,
) -> MultiService:
    """RFC 862 echo on every endpoint string in C{listen}."""
    return _stream_service(ECHO_NAME, EchoFactory, limits, listen, reactor, reuse_port)


def udp_greeter(
    listen: Iterable[str | UDPListen] = (DEFAULT_UDP_LISTEN,),
    reply: ReplyTemplate = DEFAULT_REPLY,
    limits: UDPLimits | None = None,
    reactor: Any = None,
    reuse_port: bool = False,
) -> MultiService:
    """
    The UDP greeter on every C{udp:PORT[:interface=ADDR]} in C{listen}.
    Its listeners know each other's ports, so none answers another.
    """
    service = _named(UDP_NAME)
    own_ports: set[int] = set()
    for spec in listen:
        spec = spec if isinstance(spec, UDPListen) else UDPListen.parse(spec)
        protocol = UDPGreeter(reply, limits, own_ports, reactor, UDPStats(UDP_NAME, str(spec)))
        UDPListenService(spec, protocol, reactor, reuse_port).setServiceParent(service)
    return service


def everything(
    tcp: Iterable[str] = (DEFAULT_TCP_LISTEN,),
    udp: Iterable[str | UDPListen] = (DEFAULT_UDP_LISTEN,),
    echo_listen: Iterable[str] = (DEFAULT_ECHO_LISTEN,),
    config: GreeterConfig | None = None,
    tcp_limits: TCPLimits | None = None,
    udp_limits: UDPLimits | None = None,
    reactor: Any = None,
    reuse_port: bool = False,
) -> MultiService:
    """
    All three services in one process; the greeters share one message
    configuration, so the TCP and UDP greeters answer alike, and both TCP
    services share one set of limits (each counts its own connections).
    """
    config = config or GreeterConfig()
    service = _named("echoapp")
    for child in (
        tcp_greeter(tcp, config, tcp_limits, reactor, reuse_port),
        udp_greeter(udp, config.reply, udp_limits, reactor, reuse_port),
        echo(echo_listen, tcp_limits, reactor, reuse_port),
    ):
        child.setServiceParent(service)
    return service


class Monitored(MultiService):
    """
    A service tree with its C{/metrics} and C{/healthz} listener, which is
    started first and stopped last, after the tree has drained, so that
    C{/healthz} answers 503 while clients are still being said goodbye to.
    """

    def __init__(self, inner: MultiService, metrics_listen: str, reactor: Any = None) -> None:
        super().__init__()
        self.setName(inner.name or "echoapp")
        group = _named("echoapp-metrics")
        self.metrics = StreamListenService(metrics_listen, metrics_site(inner), reactor)
        self.metrics.setServiceParent(group)
        group.setServiceParent(self)
        inner.setServiceParent(self)
        self.inner = inner
        self.group = group

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        stopped = maybeDeferred(self.inner.stopService)
        stopped.addBoth(lambda _: self.group.stopService())
        return stopped


def monitored(service: MultiService, metrics_listen: str | None, reactor: Any = None) -> MultiService:
    """C{service}, with metrics and health over HTTP if C{metrics_listen} is given."""
    return service if metrics_listen is None else Monitored(service, metrics_listen, reactor)
