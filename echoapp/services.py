"""
The service trees every entry point runs: the twistd plugins in
L{echoapp._tap} and the C{.tac} files both build their applications here, so
a deployment shape is a few lines of configuration and no copied logic.

Each builder returns a named L{MultiService} with one listening child per
address, like carbon's receivers composed in one service.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from functools import partial
from typing import Any, Protocol

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory, IReactorTime
from twisted.logger import Logger

from echoapp._faults import FaultPlan, Faults, FaultyDatagramProtocol, FaultyFactory
from echoapp._limits.guard import Connections, GuardedFactory
from echoapp._metrics import TCPStats, UDPStats
from echoapp._protocols.echo import EchoFactory
from echoapp._protocols.greeter import GreeterFactory
from echoapp._protocols.udp import UDPGreeter
from echoapp._record import Recorder, RecordingDatagramProtocol, RecordingFactory
from echoapp._record.capture import CaptureFile
from echoapp._record.service import RecordService
from echoapp._starting import StartsOnce
from echoapp._tac import one_line_in_tac
from echoapp._transports.endpoints import (
    DEFAULT_ECHO_LISTEN,
    DEFAULT_TCP_LISTEN,
    DEFAULT_UDP_LISTEN,
    StreamListen,
    UDPListen,
)
from echoapp._transports.haproxy import Network
from echoapp._transports.listen import StreamListenService, UDPListenService, listeners
from echoapp.config import GreeterConfig, TCPLimits, UDPLimits
from echoapp.template import DEFAULT_REPLY, ReplyTemplate

__all__ = [
    "ECHO_NAME",
    "TCP_NAME",
    "UDP_NAME",
    "Faults",
    "StreamListen",
    "UDPListen",
    "echo",
    "everything",
    "named",
    "tcp_greeter",
    "udp_greeter",
]

TCP_NAME = "echoapp-tcp"
ECHO_NAME = "echoapp-echo"
UDP_NAME = "echoapp-udp"

log = Logger(namespace="echoapp.services")


def named(name: str) -> MultiService:
    """
    An empty L{MultiService} called C{name}: the name is what logs, metrics
    and C{echoapp-compose} call the service.
    """
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


class Seeded(Protocol):
    """What L{FaultNotice} tells: faults (a text, as C{--fault} takes it) and their seed."""

    @property
    def faults(self) -> object:
        """What goes wrong, as its C{str} says it."""

    @property
    def seed(self) -> int:
        """The seed of every random choice."""


class FaultNotice(StartsOnce):
    """
    Says at start which faults a service applies and their seed: the seed
    reproduces a failure.  Said in the privileged step, before any listener
    says where it listens, so whoever waits for that line has the seed too.
    """

    def __init__(self, plan: Seeded) -> None:
        self.plan = plan

    def start_once(self) -> None:
        """Said once, in the privileged step where there is one."""
        owner = self.parent.name if self.parent is not None else "echoapp"
        log.info(
            "{service} faults: {faults} (seed={seed})",
            service=owner,
            faults=self.plan.faults,
            seed=self.plan.seed,
        )


def _stream_listens(
    listen: Iterable[str | StreamListen], reuse_port: bool, proxy_from: tuple[Network, ...]
) -> list[StreamListen]:
    """Each listener described once, here at the top: a string gets this builder's reuse-port and trust."""
    return [
        spec if isinstance(spec, StreamListen) else StreamListen.parse(spec, reuse_port, proxy_from)
        for spec in listen
    ]


def _stream_service(
    name: str,
    make_factory: Callable[..., GuardedFactory],
    limits: TCPLimits | None,
    listens: list[StreamListen],
    reactor: IReactorTime | None,
    log_connections: bool,
    faults: FaultPlan | None,
) -> MultiService:
    """
    One factory per listener, for per-listener metrics, all sharing one
    L{Connections}: the service's limits count across its listeners.  With
    C{faults}, every connection goes through them (L{echoapp._faults}).
    """
    service = named(name)
    connections = Connections(limits)
    DrainService(connections).setServiceParent(service)
    if faults is not None:
        FaultNotice(faults).setServiceParent(service)
    for listen in listens:
        factory: Any = make_factory(
            clock=reactor,
            connections=connections,
            stats=TCPStats(name, str(listen)),
            log_connections=log_connections,
        )
        if faults is not None:
            factory = FaultyFactory(factory, faults)
        stream_listener(listen, factory, connections, reactor).setServiceParent(service)
    return service


def stream_listener(
    listen: StreamListen, factory: IProtocolFactory, connections: Connections, reactor: IReactorTime | None
) -> StreamListenService:
    """
    The listener of a service whose clients C{connections} counts (every
    stream service's, echoapp-proxy's too): unless the description says,
    its backlog is as deep as the service's connection limit, so a burst of
    clients up to the limit is accepted, not dropped by the kernel.
    """
    if listen.backlog is None:
        listen = replace(listen, backlog=connections.limits.max_connections)
    return StreamListenService(listen, factory, reactor)


def plan_for(faults: Faults | None, reactor: IReactorTime | None) -> FaultPlan | None:
    """
    The plan that applies C{faults} (none: nothing is wrapped, and the path
    a request takes is the one the benchmark measures).  A L{FaultPlan}
    given instead is taken as it is: C{echoapp.testing} keeps its peer's, to
    change the faults while the peer runs.
    """
    if faults is None or isinstance(faults, FaultPlan):
        return faults
    return FaultPlan(faults, reactor)


def fault_plan(service: MultiService) -> FaultPlan | None:
    """The plan a service built by this module applies, if any: its L{FaultNotice} holds it."""
    for child in service:
        if isinstance(child, FaultNotice) and isinstance(child.plan, FaultPlan):
            return child.plan
    return None


@one_line_in_tac
def tcp_greeter(
    listen: Iterable[str | StreamListen] = (DEFAULT_TCP_LISTEN,),
    config: GreeterConfig | None = None,
    limits: TCPLimits | None = None,
    reactor: IReactorTime | None = None,
    reuse_port: bool = False,
    log_connections: bool = False,
    proxy_from: tuple[Network, ...] = (),
    faults: Faults | None = None,
) -> MultiService:
    """
    The welcome/echo/exit greeter on every endpoint string in C{listen};
    C{log_connections} logs every connection (see L{GuardedFactory});
    C{haproxy:} listeners believe PROXY headers from C{proxy_from} only, when
    given (see L{echoapp._transports.haproxy}); C{faults} go wrong on
    purpose (L{Faults}), their seed said at start.  C{reactor} is the global
    one unless given; it must listen as well as keep time.
    """
    plan = plan_for(faults, reactor)
    listens = _stream_listens(listen, reuse_port, proxy_from)
    return _stream_service(
        TCP_NAME, partial(GreeterFactory, config), limits, listens, reactor, log_connections, plan
    )


@one_line_in_tac
def echo(
    listen: Iterable[str | StreamListen] = (DEFAULT_ECHO_LISTEN,),
    limits: TCPLimits | None = None,
    reactor: IReactorTime | None = None,
    reuse_port: bool = False,
    log_connections: bool = False,
    proxy_from: tuple[Network, ...] = (),
    faults: Faults | None = None,
) -> MultiService:
    """RFC 862 echo on every endpoint string in C{listen}; the rest as L{tcp_greeter}."""
    listens = _stream_listens(listen, reuse_port, proxy_from)
    plan = plan_for(faults, reactor)
    return _stream_service(ECHO_NAME, EchoFactory, limits, listens, reactor, log_connections, plan)


@one_line_in_tac
def udp_greeter(
    listen: Iterable[str | UDPListen] = (DEFAULT_UDP_LISTEN,),
    reply: ReplyTemplate = DEFAULT_REPLY,
    limits: UDPLimits | None = None,
    reactor: IReactorTime | None = None,
    reuse_port: bool = False,
    faults: Faults | None = None,
) -> MultiService:
    """
    The UDP greeter on every C{udp:PORT[:interface=ADDR]} in C{listen}.
    Its listeners know each other's ports, so none answers another.
    """
    return _udp(listen, reply, limits, reactor, reuse_port, plan_for(faults, reactor))


def _udp(
    listen: Iterable[str | UDPListen],
    reply: ReplyTemplate,
    limits: UDPLimits | None,
    reactor: IReactorTime | None,
    reuse_port: bool,
    plan: FaultPlan | None,
) -> MultiService:
    service = named(UDP_NAME)
    if plan is not None:
        FaultNotice(plan).setServiceParent(service)
    own_ports: set[int] = set()
    for spec in listen:
        spec = spec if isinstance(spec, UDPListen) else UDPListen.parse(spec, reuse_port)
        protocol: Any = UDPGreeter(reply, limits, own_ports, reactor, UDPStats(UDP_NAME, str(spec)))
        if plan is not None:
            protocol = FaultyDatagramProtocol(protocol, plan)
        UDPListenService(spec, protocol, reactor).setServiceParent(service)
    return service


@one_line_in_tac
def everything(
    tcp: Iterable[str | StreamListen] = (DEFAULT_TCP_LISTEN,),
    udp: Iterable[str | UDPListen] = (DEFAULT_UDP_LISTEN,),
    echo_listen: Iterable[str | StreamListen] = (DEFAULT_ECHO_LISTEN,),
    config: GreeterConfig | None = None,
    tcp_limits: TCPLimits | None = None,
    udp_limits: UDPLimits | None = None,
    reactor: IReactorTime | None = None,
    reuse_port: bool = False,
    log_connections: bool = False,
    proxy_from: tuple[Network, ...] = (),
    faults: Faults | None = None,
) -> MultiService:
    """
    All three services in one process; the greeters share one message
    configuration, so the TCP and UDP greeters answer alike, and both TCP
    services share one set of limits (each counts its own connections) and
    one fault plan (one seed).
    """
    config = config or GreeterConfig()
    plan = plan_for(faults, reactor)
    greeters, shared = partial(GreeterFactory, config), (reactor, log_connections, plan)
    service = named("echoapp")
    for child in (
        _stream_service(
            TCP_NAME, greeters, tcp_limits, _stream_listens(tcp, reuse_port, proxy_from), *shared
        ),
        _udp(udp, config.reply, udp_limits, reactor, reuse_port, plan),
        _stream_service(
            ECHO_NAME, EchoFactory, tcp_limits, _stream_listens(echo_listen, reuse_port, proxy_from), *shared
        ),
    ):
        child.setServiceParent(service)
    return service


def recorded(service: MultiService, recorder: Recorder, capture: CaptureFile | None = None) -> MultiService:
    """
    C{service}, every listener of it recording what it carries in
    C{recorder} (L{echoapp._record}), and with C{capture}, to that pcapng
    file too, opened first and closed last (after the drain), so that the
    file holds every connection whole.  Called on a tree not yet started;
    without it nothing is wrapped, so recording that is off costs nothing.
    """
    for listener in listeners(service):
        parent: Any = listener.parent or service
        owner = str(parent.name or "echoapp")
        note = _fault_note(parent)
        if isinstance(listener, StreamListenService):
            listener.factory = RecordingFactory(listener.factory, recorder, owner, note)  # type: ignore[arg-type]
        else:
            listener.protocol = RecordingDatagramProtocol(listener.protocol, recorder, owner, note)
    if capture is not None:
        children = list(service)
        for child in children:
            child.disownServiceParent()
        RecordService(recorder, capture).setServiceParent(service)  # started first, stopped last
        for child in children:
            child.setServiceParent(service)
    return service


def _fault_note(service: MultiService) -> Callable[[], str]:
    """What a record's header says of the faults its service applies, as they are when it opens."""
    plan = fault_plan(service)
    if plan is None:
        return str
    return lambda: f"seed {plan.seed}, faults {plan.faults}"
