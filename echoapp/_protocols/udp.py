"""
The UDP greeter: each datagram gets one reply datagram to its sender.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import udp
from twisted.internet.interfaces import IReactorTime, IUDPTransport
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from echoapp._framing import split_terminator
from echoapp._limits.ratelimit import ThrottledLog, TokenBucket, TokenBuckets
from echoapp._metrics import UDPStats
from echoapp._peers import PeerKeys
from echoapp._twisted import LazyReactor
from echoapp.config import UDPLimits
from echoapp.template import DEFAULT_REPLY, ReplyTemplate

# The largest UDP payload over IPv4 (65535 - 8 UDP - 20 IP header bytes),
# and over IPv6, whose payload length does not count its own header.
MAX_DATAGRAM = 65507
MAX_IPV6_DATAGRAM = 65527


# Source ports below this belong to system services (echo 7, chargen 19,
# DNS 53, ...): answering them is how UDP packet storms and reflection start.
FIRST_UNPRIVILEGED_PORT = 1024


class UDPGreeter(DatagramProtocol):
    """
    Replies are built the way the TCP greeter builds them in raw framing:
    trailing CR/LF stripped and mirrored.  A reply that would not fit in one
    datagram is dropped: a truncated greeting would be a lie.

    UDP sources can be forged, so before answering: no reply to port 0,
    privileged ports or our own listening ports (the echo/chargen loop,
    CVE-1999-0103), and no more than the per-source and global token
    buckets allow.  Every drop is counted; drops are logged throttled.
    """

    noisy = False
    log = Logger(namespace="echoapp.udp")
    transport: IUDPTransport  # set by makeConnection, before any datagram arrives
    # The reactor unless given, found when first needed (the one home of that rule).
    clock: IReactorTime = LazyReactor()  # type: ignore[assignment]

    def __init__(
        self,
        reply: ReplyTemplate = DEFAULT_REPLY,
        limits: UDPLimits | None = None,
        own_ports: set[int] | None = None,
        clock: IReactorTime | None = None,
        stats: UDPStats | None = None,
    ) -> None:
        self.reply = reply
        self.limits = limits = limits or UDPLimits()
        self.own_ports = own_ports if own_ports is not None else set()
        self._clock = clock
        self.key = PeerKeys(limits.ipv6_prefix, limits.max_sources)
        self.stats = stats or UDPStats("echoapp-udp", "")
        self._drops = ThrottledLog("Dropped {count} datagrams ({reasons})")
        self._sendto: Any = None

    def startProtocol(self) -> None:
        """
        The port listens: the rate tables are made now, on the running
        reactor's clock (a bound method each: nothing looked up per datagram).
        """
        limits = self.limits
        now = self.clock.seconds
        self.sources = TokenBuckets(limits.rate, limits.burst, limits.max_sources, now)
        self.everyone = TokenBucket(limits.global_rate, limits.global_rate, now)
        self.own_ports.add(self.transport.getHost().port)
        # On Twisted's own UDP port, replies go straight to the socket's
        # sendto: Port.write first re-validates the address (isIPAddress,
        # about 6% of a reply's CPU) that recvfrom has just given us.  An
        # error falls back to Port.write, whose handling it then gets.
        transport = self.transport
        self._sendto = transport.getHandle().sendto if isinstance(transport, udp.Port) else None

    def stopProtocol(self) -> None:
        """The port stopped: the drops not yet logged are logged now."""
        self._drops.flush()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        try:
            self._answer(datagram, addr)
        except Exception:
            if not self.stats.dropped["error"]:
                self.log.failure(
                    "Answering a datagram from {addr} failed; further failures are only counted", addr=addr
                )
            self._drop("error")

    def _answer(self, datagram: bytes, addr: Any) -> None:
        host, port = addr[0], addr[1]
        if port < FIRST_UNPRIVILEGED_PORT or port in self.own_ports:
            return self._drop("port")
        if ":" in host:  # IPv6: rate-limited per prefix, IPv4-mapped as IPv4
            host = self.key(host)
        if not self.sources.allow(host) or not self.everyone.allow():
            return self._drop("rate")
        message, terminator = split_terminator(datagram)
        reply = self.reply.render(message, terminator)
        if len(reply) > MAX_DATAGRAM and (len(reply) > MAX_IPV6_DATAGRAM or not _over_ipv6(addr[0])):
            return self._drop("size")
        sendto = self._sendto
        if sendto is None:
            if self.transport.write(reply, addr) is False:  # type: ignore[func-returns-value]
                return self._drop("buffer")  # uvloop's buffer is full (native_udp)
        else:
            try:
                sendto(reply, addr)
            except OSError:
                self.transport.write(reply, addr)
        stats = self.stats
        stats.answered += 1
        stats.bytes_in += len(datagram)
        stats.bytes_out += len(reply)

    def reply_dropped(self) -> None:
        """A reply counted as answered was dropped later (a delayed one, on a full buffer)."""
        self.stats.answered -= 1
        self._drop("buffer")

    def _drop(self, reason: str) -> None:
        self.stats.dropped[reason] += 1
        self._drops.note(self.clock, reason)


def _over_ipv6(host: str) -> bool:
    """A reply to C{host} travels over IPv6 (an IPv4-mapped host is reached over IPv4)."""
    return ":" in host and not host.startswith("::ffff:")
