"""
One service's open connections: admission against its limits (total, per
peer with room kept for newcomers, the process's descriptor ceiling) and
the drain at shutdown.  Shared by every listener of the service.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred, succeed

from echoapp._limits.descriptors import DESCRIPTORS
from echoapp._peers import BALANCER, PeerKeys
from echoapp.config import TCPLimits


class Member(Protocol):
    """What admission and the drain need of a connection (L{Member})."""

    peer: str

    def shutdown(self) -> None:
        """Say goodbye and close: the drain asks every member."""


class Connections:
    """
    One service's open connections: admission against its limits and the
    process-wide descriptor ceiling, and the drain at shutdown.
    """

    def __init__(self, limits: TCPLimits | None = None) -> None:
        self.limits = limits = limits or TCPLimits()
        self.live: set[Member] = set()
        # Open connections per peer key (L{PeerKeys}: an IPv6 peer is its prefix).
        self.per_peer: dict[str, int] = {}
        self.key = PeerKeys(limits.ipv6_prefix)
        # The last tenth of the service is kept for peers that hold nothing
        # yet: sixty addresses at their per-peer limit must not lock out
        # everyone else.  (No reserve for a cap under ten.)
        self.reserved_from = limits.max_connections - limits.max_connections // 10
        self._idle_waiters: list[Deferred[None]] = []
        self.draining = False

    def refusal(self, peer: str) -> str | None:
        """
        Why (a key of L{echoapp._reasons.REFUSALS}) a new connection from
        host C{peer} is refused, if it is.
        """
        if self.draining:
            return "draining"
        if DESCRIPTORS.full():
            return "fd"
        live = len(self.live)
        if live >= self.limits.max_connections:
            return "limit"
        if peer == BALANCER:
            return None  # its own health checks count against no peer
        held = self.per_peer.get(self.key(peer), 0)
        if held >= self.limits.max_per_peer or (held and live >= self.reserved_from):
            return "per-peer"
        return None

    def add(self, protocol: Member) -> None:
        """
        Admit C{protocol}: it holds a descriptor and, unless it is the
        balancer's own, a place under its peer's limit.
        """
        DESCRIPTORS.hold()
        self.live.add(protocol)
        if protocol.peer != BALANCER:
            key = self.key(protocol.peer)
            self.per_peer[key] = self.per_peer.get(key, 0) + 1

    def remove(self, protocol: Member) -> None:
        """
        C{protocol} has gone: give back what L{add} took, once, and tell a
        drain waiting for the last one.
        """
        if protocol not in self.live:
            return
        DESCRIPTORS.release()
        self.live.discard(protocol)
        if protocol.peer == BALANCER:
            self._idle_if_empty()
            return
        key = self.key(protocol.peer)
        remaining = self.per_peer[key] - 1
        if remaining:
            self.per_peer[key] = remaining
        else:
            del self.per_peer[key]
        self._idle_if_empty()

    def _idle_if_empty(self) -> None:
        if not self.live:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def drain(self) -> Deferred[None]:
        """
        Say goodbye to every client and close; stragglers are aborted after
        the grace period.  Fires once every connection is gone.
        """
        self.draining = True
        if not self.live:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle_waiters.append(waiter)
        for protocol in list(self.live):
            protocol.shutdown()
        return waiter
