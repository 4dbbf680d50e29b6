"""
echoapp-proxy for UDP: each client source gets its own upstream socket
(connected, so the upstream's answers find their way back to that client),
with datagram faults in either direction: loss, duplication, reordering.

The sessions are bounded in number (the least recently heard is dropped to
make room) and in idle time (a sweep closes the quiet ones), so a flood of
spoofed sources costs a bounded number of sockets.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import DatagramProtocol

from echoapp._faults import Draws, FaultPlan, FaultyDatagramProtocol, FaultyDatagrams
from echoapp._limits.descriptors import DESCRIPTORS, HoldsDescriptor
from echoapp._proxy.addresses import check_udp, shown, udp_listen_description, udp_upstream
from echoapp._proxy.named import ProxyService
from echoapp._proxy.schema import ProxySpec
from echoapp._proxy.toxics import ProxyFaults
from echoapp._transports.endpoints import UDPListen
from echoapp._transports.listen import UDPListenService
from echoapp._twisted import global_reactor
from echoapp.config import TCPLimits

MAX_SESSIONS = 1024
IDLE_TIMEOUT = 60.0  # seconds without a datagram either way


class _Side(FaultyDatagramProtocol):
    """
    One session's faults on one stream, as L{FaultyDatagrams} asks them:
    the session is one client source, so every datagram it carries (the
    upstream's connected socket names no address) has that source's draws.
    """

    def __init__(self, plan: FaultPlan, draws: Draws) -> None:
        super().__init__(DatagramProtocol(), plan)
        self.draws = draws

    def draws_for(self, addr: Any) -> Draws:
        return self.draws


class Session(HoldsDescriptor, DatagramProtocol):
    """
    One client source's upstream socket; what comes back goes to that
    client, through the faults.  Its socket counts against the process's
    descriptor ceiling, as a TCP connection does.
    """

    noisy = False
    transport: Any

    def __init__(self, proxy: UDPProxy, client: tuple[str, int]) -> None:
        self.proxy = proxy
        self.client = client
        self.last = proxy.clock.seconds()
        faults = proxy.faults
        self.up_side, self.down_side = (
            _Side(faults.plans[stream], faults.link(stream)) for stream in ("upstream", "downstream")
        )
        self.pending: list[bytes] = []
        self.up: FaultyDatagrams | None = None
        # One per session, so a held datagram follows the next one to the same client.
        self.down = FaultyDatagrams(proxy.transport, self.down_side)
        self.port: Any = None

    def startProtocol(self) -> None:
        self.transport.connect(*self.proxy.upstream)
        self.up = FaultyDatagrams(self.transport, self.up_side)
        pending, self.pending = self.pending, []
        for datagram in pending:
            self.up.write(datagram)

    def send(self, datagram: bytes) -> None:
        """
        A datagram from this session's client, on its way upstream through
        the upstream faults.
        """
        self.last = self.proxy.clock.seconds()
        self.up_side.draws.note(datagram, datagram=True)
        if self.up is None:
            self.pending.append(datagram)
        else:
            self.up.write(datagram)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.last = self.proxy.clock.seconds()
        self.proxy.answer(self, datagram)

    def connectionRefused(self) -> None:
        """Nothing listens upstream (ICMP port unreachable): the client hears nothing, as it would."""

    def close(self) -> None:
        """The session goes: its held and delayed datagrams with it (no timer outlives it)."""
        for faulty in (self.up, self.down):
            if faulty is not None:
                faulty.stop()
        if self.port is not None:
            port, self.port = self.port, None
            port.stopListening()
        self.release_descriptor()


class UDPProxy(DatagramProtocol):
    """The client-facing port of a UDP proxy to C{upstream} (C{(host, port)}, a literal IP address)."""

    noisy = False
    transport: Any

    def __init__(
        self,
        upstream: tuple[str, int],
        faults: ProxyFaults,
        reactor: Any = None,
        max_sessions: int = MAX_SESSIONS,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.upstream = upstream
        self.faults = faults
        self._reactor = reactor
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.sessions: OrderedDict[tuple[str, int], Session] = OrderedDict()
        self._sweep: IDelayedCall | None = None

    @property
    def clock(self) -> Any:
        return self._reactor or global_reactor()

    def startProtocol(self) -> None:
        self._schedule()

    def _schedule(self) -> None:
        self._sweep = self.clock.callLater(max(self.idle_timeout / 4, 0.01), self.sweep)

    def sweep(self) -> None:
        """Close the sessions quiet for longer than the idle timeout; the oldest are first."""
        horizon = self.clock.seconds() - self.idle_timeout
        for client, session in list(self.sessions.items()):
            if session.last <= horizon:
                del self.sessions[client]
                session.close()
        self._schedule()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        client = (addr[0], addr[1])
        session = self.sessions.get(client)
        if session is None:
            # Room for one more socket: past the bound, or with the process's
            # descriptors all held, the least recently heard source goes.
            if self.sessions and (len(self.sessions) >= self.max_sessions or DESCRIPTORS.full()):
                _, oldest = self.sessions.popitem(last=False)
                oldest.close()
            if DESCRIPTORS.full():
                return  # no socket to give a new source (TCP clients hold them all): dropped
            session = Session(self, client)
            family_interface = "::" if ":" in self.upstream[0] else "0.0.0.0"
            try:
                session.port = self.clock.listenUDP(0, session, interface=family_interface)
            except (OSError, CannotListenError):
                return  # the kernel has no socket for it either: dropped, as a full network would
            session.hold_descriptor()
            self.sessions[client] = session
        else:
            self.sessions.move_to_end(client)
        session.send(datagram)

    def answer(self, session: Session, datagram: bytes) -> None:
        """
        What the upstream answered a session goes back to its client through
        the downstream faults, unless the session was closed meanwhile.
        """
        if self.sessions.get(session.client) is not session:
            return  # dropped to make room, or swept: its late answers go nowhere
        self.sessions.move_to_end(session.client)
        session.down_side.draws.note(datagram, datagram=True)
        session.down.write(datagram, session.client)

    def stopProtocol(self) -> None:
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()


class NamedUDPProxy(ProxyService):
    """
    A UDP proxy as the registry and the API keep one (created by
    C{--listen udp:...}, C{"type": "udp"} or a C{udp:} address): a port
    while enabled, its sessions bounded by the TCP limits' connection count
    and idle timeout, its toxics those that apply to datagrams.  A datagram
    session has no close, so there is nothing to drain.
    """

    KIND = "UDP"

    def __init__(self, spec: ProxySpec, faults: ProxyFaults, limits: TCPLimits, reactor: Any = None) -> None:
        super().__init__(spec, faults)
        self.listen, upstream = check_udp(spec)
        self.protocol = UDPProxy(
            upstream, faults, reactor, max_sessions=limits.max_connections, idle_timeout=limits.idle_timeout
        )
        self._reactor = reactor

    def _listener(self) -> UDPListenService:
        return UDPListenService(self.listen, self.protocol, self._reactor)

    def _forget_port(self, port: Any) -> None:
        self.spec.listen = shown(port.getHost())
        self.listen = UDPListen.parse(udp_listen_description(self.spec.listen))

    def set_upstream(self, upstream: str) -> None:
        """New sessions go to C{upstream} (checked by the caller); open ones keep theirs."""
        self.protocol.upstream = udp_upstream(upstream)
        self.spec.upstream = upstream

    def as_json(self) -> dict[str, Any]:
        """toxiproxy's shape, and C{"type": "udp"} (toxiproxy has no UDP proxy to show)."""
        return {**super().as_json(), "type": "udp"}
