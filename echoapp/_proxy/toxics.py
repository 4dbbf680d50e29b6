"""
A proxy's faults, toxiproxy's way: named toxics, each on one stream
(C{upstream}, client to server; C{downstream}, server to client) with its
own toxicity, all drawn from one seeded generator, and live: a toxic added,
changed or removed reaches the connections already open.

Each toxic is an L{echoapp._faults.Faults}; the toxics of one stream are
merged into the faults a connection applies (latencies add up, for the rest
the toxic added last wins).  The shaping itself is L{echoapp._faults}'
unchanged: L{LiveFaultyConnection} only reads its faults anew from the
proxy, each time, instead of once at connect.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol, IReactorTime
from twisted.internet.protocol import Factory
from zope.interface import implementer

from echoapp._faults import HELD_BYTES, FaultPlan, Faults, FaultyConnection, FaultyFactory, reset
from echoapp._twisted import global_reactor

STREAMS = ("upstream", "downstream")
_ADDED = ("latency", "jitter")


@dataclass(frozen=True)
class Toxic:
    """
    One named toxic: toxiproxy's C{type} and C{attributes} as the API shows
    them, and the echoapp faults they mean (C{faults}).
    """

    name: str
    type: str
    stream: str
    toxicity: float
    faults: Faults
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def direction(self) -> str:
        """C{upstream} or C{downstream}: toxiproxy takes the stream's name in any case."""
        return self.stream.lower()


def merged(faults: Iterable[Faults]) -> Faults:
    """The faults of several toxics as one: latencies add, for the rest the last set wins."""
    result = Faults()
    defaults = Faults()
    for each in faults:
        changes: dict[str, Any] = {}
        for f in fields(Faults):
            value = getattr(each, f.name)
            if f.name in ("fraction", "seed") or value == getattr(defaults, f.name):
                continue
            changes[f.name] = getattr(result, f.name) + value if f.name in _ADDED else value
        result = replace(result, **changes)
    return result


class ProxyFaults:
    """
    The toxics of one proxy, both streams, and the one seeded generator
    every choice comes from: which connections a toxic with a toxicity
    under 1 applies to, jitter, UDP loss.  C{version} moves on every
    change, so a connection recomputes its faults only after one.
    """

    def __init__(self, seed: int | None = None, clock: IReactorTime | None = None) -> None:
        self._clock = clock
        self.seed = seed if seed is not None else random.SystemRandom().randrange(1 << 32)
        self.random = random.Random(self.seed)
        self.toxics: dict[str, Toxic] = {}
        self.version = 0

    @property
    def clock(self) -> IReactorTime:
        if self._clock is None:
            self._clock = global_reactor()
        return self._clock

    def set(self, toxic: Toxic) -> None:
        """Add C{toxic}, or replace the one of its name (keeping its place)."""
        self.toxics[toxic.name] = toxic
        self.version += 1

    def remove(self, name: str) -> None:
        del self.toxics[name]
        self.version += 1

    def clear(self) -> None:
        self.toxics.clear()
        self.version += 1

    def on(self, stream: str) -> list[Toxic]:
        return [toxic for toxic in self.toxics.values() if toxic.direction == stream]

    def link(self, stream: str) -> LinkPlan:
        """The plan of one new connection's C{stream}."""
        return LinkPlan(self, stream)


class LinkPlan(FaultPlan):
    """
    One connection's faults on one stream, as L{FaultyConnection} asks its
    factory's plan: recomputed after any change to the proxy's toxics.  A
    toxic's toxicity is drawn once per connection, when the connection
    first meets the toxic, so a connection keeps its luck across changes.
    """

    def __init__(self, proxy: ProxyFaults, stream: str) -> None:
        self._proxy = proxy
        self._stream = stream
        self._drawn: dict[str, bool] = {}
        self._version = -1
        self._faults = Faults()
        self.seed = proxy.seed
        self.random = proxy.random
        self.connection: LiveFaultyConnection | None = None

    @property
    def clock(self) -> IReactorTime:
        return self._proxy.clock

    @property
    def faults(self) -> Faults:
        proxy = self._proxy
        if self._version != proxy.version:
            self._version = proxy.version
            before, self._faults = (
                self._faults,
                merged(toxic.faults for toxic in proxy.on(self._stream) if self._applies(toxic)),
            )
            if self.connection is not None:
                self.connection.faults_changed(before, self._faults)
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        """Set by L{FaultPlan}'s own constructor only; the toxics are the truth here."""

    def _applies(self, toxic: Toxic) -> bool:
        drawn = self._drawn.get(toxic.name)
        if drawn is None:
            drawn = self._drawn[toxic.name] = toxic.toxicity >= 1 or self.random.random() < toxic.toxicity
        return drawn


class _Link:
    """What a L{FaultyConnection} asks of its factory, with this connection's own plan."""

    def __init__(self, factory: FaultyFactory, plan: LinkPlan) -> None:
        self._factory = factory
        self.plan = plan

    def __getattr__(self, name: str) -> Any:
        return getattr(self._factory, name)


@implementer(IHalfCloseableProtocol)
class LiveFaultyConnection(FaultyConnection):
    """
    L{FaultyConnection} reading its faults from the proxy each time, and
    passing half-closes through (a plain wrapper would turn a FIN into a
    whole disconnect).  The faults that act once at connect in
    L{echoapp._faults} (a reset after a time, a stalled read) act when they
    are added to an open connection too.
    """

    factory: Any

    @property
    def _faults(self) -> Faults:
        return self.factory.plan.faults

    @_faults.setter
    def _faults(self, faults: Faults) -> None:
        """L{FaultyConnection}'s constructor sets it; the plan is the truth."""

    _producer: Any = None
    _producer_paused = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        Kept, as well as passed on: what the faults hold (latency, slices)
        is not in the transport's buffer, so the transport would never pause
        the other side for it; L{write} and L{_release} do, by L{HELD_BYTES}.
        """
        self._producer = producer
        super().registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._producer = None
        super().unregisterProducer()

    def write(self, data: bytes) -> None:
        super().write(data)
        if self._producer is not None and not self._producer_paused and self._held_bytes > HELD_BYTES:
            self._producer_paused = True
            self._producer.pauseProducing()

    def _release(self) -> None:
        super()._release()
        if self._producer_paused and self._held_bytes <= HELD_BYTES // 2 and self._producer is not None:
            self._producer_paused = False
            self._producer.resumeProducing()

    def faults_changed(self, before: Faults, now: Faults) -> None:
        transport = self.transport
        if transport is None or self._lost:
            return
        if now.reset_after is not None and before.reset_after is None:
            if self._timer is None or not self._timer.active():
                self._timer = self.factory.plan.clock.callLater(now.reset_after, reset, transport)
        elif now.reset_after is None and self._timer is not None and self._timer.active():
            self._timer.cancel()
        if (now.stall == "read") != (before.stall == "read"):
            (transport.pauseProducing if now.stall == "read" else transport.resumeProducing)()

    def readConnectionLost(self) -> None:
        half = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if half is not None:
            half.readConnectionLost()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        half = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if half is not None:
            half.writeConnectionLost()


class LiveFaultyFactory(FaultyFactory):
    """Wraps every connection (a toxic may come later), each with its own L{LinkPlan} on C{stream}."""

    def __init__(self, wrapped: Factory, proxy: ProxyFaults, stream: str) -> None:
        super().__init__(wrapped, FaultPlan(Faults(), proxy.clock if proxy._clock else None))
        self.proxy = proxy
        self.stream = stream

    def buildProtocol(self, addr: Any) -> Any:
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        plan = self.proxy.link(self.stream)
        connection = LiveFaultyConnection(_Link(self, plan), wrapped, plan.faults)  # type: ignore[arg-type]
        plan.connection = connection
        return connection
