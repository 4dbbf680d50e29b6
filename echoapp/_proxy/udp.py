"""
echoapp-proxy for UDP: each client source gets its own upstream socket
(connected, so the upstream's answers find their way back to that client),
with datagram faults in either direction: loss, duplication, reordering.

The sessions are bounded in number (the source least recently heard from
is dropped to make room), in idle time (a sweep closes the quiet ones) and
in how fast they are made (token buckets per source address and in total):
a flood of spoofed sources costs a bounded number of sockets.  An upstream error
(ICMP port unreachable: the upstream restarts, or is not up yet) ends the
session, as nginx's stream proxy does, so the client's next datagram opens
a fresh one: a restart costs a client at most one datagram.

No datagram may loop: a proxy whose upstream is its own listen address is
refused (L{loops_to_itself}), and a datagram from one of this process's own
session sockets (a proxy pointed at itself, or at another proxy pointed
back) is dropped, as the UDP greeter drops datagrams from its own ports.

A session's socket is a plain non-blocking socket watched by the loop (or
the reactor): no Twisted port, so no log line per source and no per-port
frames on a reply's way back; each wake-up reads every datagram ready, and
a stream with no toxic skips the fault wrapper.
"""

from __future__ import annotations

import socket
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Any

from twisted.internet import udp
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from echoapp._faults import Draws, FaultPlan, FaultyDatagramProtocol, FaultyDatagrams, HeldBytes
from echoapp._limits.descriptors import DESCRIPTORS, HoldsDescriptor
from echoapp._limits.ratelimit import ThrottledLog, TokenBucket, TokenBuckets
from echoapp._peers import PeerKeys, host_of, not_a_host
from echoapp._protocols.udp import FIRST_UNPRIVILEGED_PORT
from echoapp._proxy.addresses import check_udp, shown, udp_listen_description, udp_upstream
from echoapp._proxy.errors import Invalid
from echoapp._proxy.loops import check_udp_loop, loops_to_itself
from echoapp._proxy.named import ProxyService
from echoapp._proxy.schema import ProxySpec
from echoapp._proxy.sockets import closed_read, session_socket
from echoapp._proxy.toxics import ProxyFaults
from echoapp._transports.datagram_batches import BATCH, AcceleratedBatches, SocketBatches, batches, reader
from echoapp._transports.endpoints import UDPListen
from echoapp._transports.listen import READ_SIZE, UDPListenService
from echoapp._transports.native_udp import NativeDatagramPort, watch_readable
from echoapp._twisted import global_reactor
from echoapp.config import TCPLimits

MAX_SESSIONS = 1024
IDLE_TIMEOUT = 60.0  # seconds without a datagram either way
READ_BATCH = 256  # datagrams read per wake-up at most, as the UDP greeter's, then other events
HELD_BYTES = 16 << 20  # what a proxy's toxics hold back (latency, reordering): 32,000 small datagrams
ALL_HELD = HeldBytes(64 << 20)  # ... and every UDP proxy's of the process, together
# New sessions per second (and at once) from one source address, and from
# everyone: a NAT's clients or a test's hundreds of ports get theirs, a
# loop through another process (each hop a new source port) dies within a
# burst, and a spoofed spray cannot churn sockets without bound.
SESSION_RATE, SESSION_BURST = 200.0, 256.0
SESSIONS_RATE, SESSIONS_BURST = 2000.0, 2048.0

# This process's session sockets by local address: from one, a loop if it passed its proxy.
OWN_SOCKETS: dict[tuple[str, int], Session] = {}
# The ports this process's UDP proxies listen on (how many listen on each):
# a datagram from one comes round through the proxies (forged, or a
# proxy's answers to another proxy's port), as the greeter's own ports do.
OWN_PORTS: Counter[int] = Counter()


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


class Session(HoldsDescriptor):
    """
    One client source's upstream socket, connected to the upstream; what
    comes back goes to that client, through the faults when its stream has
    any.  Its socket counts against the process's descriptor ceiling, as a
    TCP connection does.
    """

    def __init__(self, proxy: UDPProxy, client: tuple[str, int], sock: socket.socket, now: float) -> None:
        self.proxy = proxy
        self.client = client
        self.answer_to: Any = client  # the whole address, a link-local scope id too (L{UDPProxy._open})
        self.socket = sock
        self.read = reader(sock, READ_SIZE)
        local = sock.getsockname()
        self.local = (host_of(local[0]), local[1])  # as a datagram from it is seen: IPv4-mapped as IPv4
        self.last = now
        faults = proxy.faults
        self.up_side, self.down_side = (
            _Side(faults.plans[stream], faults.link(stream)) for stream in ("upstream", "downstream")
        )
        self.up = FaultyDatagrams(self, self.up_side, proxy.held)
        # One per session, so a held datagram follows the next one to the same client.
        self.down = FaultyDatagrams(proxy.transport, self.down_side, proxy.held)
        self._unwatch: Callable[[], None] | None = None
        self.refused = False
        self.up_draws = self.up_side.draws
        # The proxies of this process the datagrams have passed through (L{OWN_SOCKETS}).
        self.path: frozenset[UDPProxy] = frozenset()

    def start(self, reactor: Any) -> None:
        """Read the upstream's answers from now on; the socket is one of ours."""
        OWN_SOCKETS[self.local] = self
        self._unwatch = watch_readable(reactor, self.socket, self.read_ready)

    def send(self, datagram: bytes, noted: bool = False) -> bool:
        """
        A datagram from this session's client, on its way upstream through
        the upstream faults; C{False} when the upstream refused it or an
        earlier one (this socket is done: the caller opens a fresh session).
        """
        if self.refused:
            return False
        draws = self.up_draws
        if not noted:
            draws.note(datagram, datagram=True)
        if draws.current() is not None:
            self.up.write(datagram)
        else:
            self.write(datagram)
        return not self.refused

    def write(self, datagram: bytes, addr: Any = None) -> None:
        """
        Straight to the connected socket (the faults' transport too): a full
        buffer drops it, as UDP may; ICMP port unreachable for an earlier
        datagram marks the session refused.
        """
        try:
            self.socket.send(datagram)
        except ConnectionRefusedError:
            self.refused = True
        except OSError:
            pass

    def read_ready(self) -> None:
        """
        The upstream answered: one answer back to the client per call.  A
        session carries one client's datagrams, rarely more than one ready
        at once, so reading on to C{EAGAIN} would cost a system call (and an
        exception) per answer; the loop watches level-triggered and calls
        again at once while more wait.
        """
        try:
            datagram = self.read()
        except OSError:
            # ICMP port unreachable (or any error): the upstream is gone, as
            # nginx ends the session; the client's next datagram opens a fresh one.
            self.proxy.end(self)
            return
        if datagram is None:
            return
        proxy = self.proxy
        self.last = proxy.now()
        draws = self.down_side.draws
        draws.note(datagram, datagram=True)
        try:
            if draws.current() is not None:
                self.down.write(datagram, self.answer_to)
            else:
                proxy.sendto(datagram, self.answer_to)
        except OSError:
            pass  # the client's side is full: dropped, as UDP may

    def close(self) -> None:
        """The session goes: its held and delayed datagrams with it (no timer outlives it)."""
        self.up.stop()
        self.down.stop()
        unwatch, self._unwatch = self._unwatch, None
        if unwatch is not None:
            unwatch()
            OWN_SOCKETS.pop(self.local, None)
        self.read = (
            closed_read  # a wake-up still queued reads nothing: the number may be another socket's now
        )
        self.socket.close()
        self.release_descriptor()


class UDPProxy(DatagramProtocol):
    """The client-facing port of a UDP proxy to C{upstream} (C{(host, port)}, a literal IP address)."""

    noisy = False
    transport: Any
    log = Logger(namespace="echoapp.proxy.udp")

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
        self.clock: Any = reactor if reactor is not None else global_reactor()  # the reactor, once
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.sessions: OrderedDict[tuple[str, int], Session] = OrderedDict()
        self._sweep: IDelayedCall | None = None
        self._batches: SocketBatches | AcceleratedBatches | None = None
        self._drops = ThrottledLog("UDP proxy dropped {count} datagrams ({reasons})")
        self.key = PeerKeys()
        self.failures = 0
        self.own_port = -1  # the port it listens on, once it does
        self.held = HeldBytes(HELD_BYTES, ALL_HELD)  # every session's held datagrams, both ways

    def startProtocol(self) -> None:
        """
        The port listens: the buckets are taken now, on the clock the
        proxy was made with; on a port we may read ourselves, each
        wake-up reads every datagram ready (L{read_ready}).
        """
        self.now = now = self.clock.seconds
        self.per_source = TokenBuckets(SESSION_RATE, SESSION_BURST, MAX_SESSIONS * 4, now)
        self.everyone = TokenBucket(SESSIONS_RATE, SESSIONS_BURST, now)
        transport = self.transport
        host = getattr(transport, "getHost", None)
        self.own_port = getattr(host(), "port", -1) if host is not None else -1
        OWN_PORTS[self.own_port] += 1
        self.sendto: Callable[[bytes, Any], object] = self._send_to_client
        if isinstance(transport, udp.Port) or (
            isinstance(transport, NativeDatagramPort) and transport.read_directly
        ):
            self._batches = batches(transport.getHandle())
            self.sendto = self._batches.send_to
        if isinstance(transport, udp.Port) and transport.protocol is self:
            transport.doRead = self.read_ready  # type: ignore[method-assign]
        self._schedule()

    def _send_to_client(self, datagram: bytes, client: tuple[str, int]) -> None:
        self.transport.write(datagram, client)

    def _schedule(self) -> None:
        self._sweep = self.clock.callLater(max(self.idle_timeout / 4, 0.01), self.sweep)

    def sweep(self) -> None:
        """Close the sessions quiet for longer than the idle timeout; the oldest are first."""
        horizon = self.now() - self.idle_timeout
        for client, session in list(self.sessions.items()):
            if session.last <= horizon:
                del self.sessions[client]
                session.close()
        self._schedule()

    def read_ready(self) -> None:
        """The port has datagrams: every one ready is forwarded in this one frame, the clock read once."""
        reading = self._batches
        if reading is None:
            return
        recv, sessions = reading.recv, self.sessions
        get, move_to_end = sessions.get, sessions.move_to_end
        now = self.now()
        left, want = READ_BATCH, 1  # as the UDP greeter reads: one first, then all that are ready
        while left > 0:
            try:
                datagrams = recv(want if want < left else left, READ_SIZE)
            except OSError:  # an error for no one (the socket is not connected)
                return
            if not datagrams:
                return
            left -= len(datagrams)
            want = BATCH
            for datagram, addr in datagrams:
                # The common case in line: an open session (IPv4: the address
                # is its key as it is) and no toxic that applies; the rest, and
                # any error, takes the whole way (L{_forward}).
                session = get(addr)
                if session is None or session.refused:
                    self._forward(datagram, addr, now)
                    continue
                try:
                    move_to_end(addr)
                    session.last = now
                    draws = session.up_draws
                    draws.note(datagram, datagram=True)
                    if draws.current() is not None:
                        self._forward(datagram, addr, now, noted=True)
                        continue
                    try:
                        session.socket.send(datagram)
                    except ConnectionRefusedError:
                        session.refused = True
                        self._forward(datagram, addr, now)
                    except OSError:
                        pass  # a full buffer: dropped, as UDP may
                except Exception:
                    self._failed(addr)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self._forward(datagram, addr, self.now())

    def _forward(self, datagram: bytes, addr: Any, now: float, noted: bool = False) -> None:
        client = (addr[0], addr[1])
        try:
            session = self.sessions.get(client)
            if session is None:
                session = self._open(client, now, addr)
                if session is None:
                    return
            else:
                self.sessions.move_to_end(client)
                session.last = now
            if not session.send(datagram, noted):
                # Refused: the upstream was down and is (maybe) back; this
                # socket is spent, a fresh one carries the datagram.
                self.end(session)
                session = self._open(client, now, addr)
                if session is not None:
                    session.send(datagram)
        except Exception:
            self._failed(client)

    def _failed(self, client: Any) -> None:
        """The first failure is logged whole; the rest are counted with the drops (a line per 10 s)."""
        if not self.failures:
            self.log.failure(
                "Forwarding a datagram from {client} failed; further failures are only counted", client=client
            )
        self.failures += 1
        self._drop("error")

    def _open(self, client: tuple[str, int], now: float, addr: Any = None) -> Session | None:
        """A new session for C{client}, unless a guard or the descriptors say no (then it is dropped)."""
        # As the UDP greeter: a system service's port (echo 7, chargen 19)
        # answering the upstream loops for ever, as would a port a proxy of
        # this process listens on; a broadcast or multicast source is forged.
        refused = "port" if client[1] < FIRST_UNPRIVILEGED_PORT or client[1] in OWN_PORTS else None
        if refused or not_a_host(client[0]):
            self._drop(refused or "source")
            return None
        via = OWN_SOCKETS.get(client)
        if via is None and client[0].startswith("::ffff:"):
            via = OWN_SOCKETS.get((client[0][7:], client[1]))
        if via is not None and self in via.path:
            self._drop("loop")  # it has passed this proxy already: every next hop would be a loop
            return None
        host = client[0]
        if ":" in host:
            host = self.key(host)
        if not self.per_source.allow(host) or not self.everyone.allow():
            self._drop("rate")
            return None
        # Room for one more socket (past the bound, or with every descriptor held, the oldest goes).
        if self.sessions and (len(self.sessions) >= self.max_sessions or DESCRIPTORS.full()):
            _, oldest = self.sessions.popitem(last=False)
            oldest.close()
        if DESCRIPTORS.full():
            return None  # no socket to give a new source (TCP clients hold them all): dropped
        try:
            sock = session_socket(self.upstream)
        except OSError:
            return None  # the kernel has no socket for it either: dropped, as a full network would
        session = Session(self, client, sock, now)
        session.answer_to = addr or client
        session.path = via.path | {self} if via is not None else frozenset((self,))
        session.hold_descriptor()
        session.start(self.clock)
        self.sessions[client] = session
        return session

    def _drop(self, reason: str) -> None:
        self._drops.note(self.clock, reason)

    def end(self, session: Session) -> None:
        """C{session} is over (its upstream refused it): closed and forgotten."""
        if self.sessions.get(session.client) is session:
            del self.sessions[session.client]
        session.close()

    def stopProtocol(self) -> None:
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
        # No more reads nor sends by the descriptor's number: it may be reused.
        self._batches = None
        OWN_PORTS[self.own_port] -= 1
        if OWN_PORTS[self.own_port] <= 0:
            del OWN_PORTS[self.own_port]
        self.sendto = self._send_to_client
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()
        self._drops.flush()


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
        check_udp_loop(spec)
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
        """New sessions go to C{upstream} (checked by the caller; a loop, here); open ones keep theirs."""
        address = udp_upstream(upstream)
        if loops_to_itself(self.listen.interface, self.listen.port, address):
            raise Invalid(f"UDP proxy {self.spec.name!r}: its upstream {upstream} is its own listen address")
        self.protocol.upstream = address
        self.spec.upstream = upstream

    def as_json(self) -> dict[str, Any]:
        """toxiproxy's shape, and C{"type": "udp"} (toxiproxy has no UDP proxy to show)."""
        return {**super().as_json(), "type": "udp"}
