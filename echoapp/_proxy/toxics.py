"""
A proxy's faults, toxiproxy's way: named toxics, each on one stream
(C{upstream}, client to server; C{downstream}, server to client) with its
own toxicity, all drawn from one seeded generator, and live: a toxic added,
changed or removed reaches the connections already open.

Each toxic is an L{echoapp._faults.Faults}; the toxics of one stream are
merged into the faults a connection applies (latencies add up, for the rest
the toxic added last wins).  The shaping itself is L{echoapp._faults}':
each stream is a L{FaultPlan} whose faults are its merged toxics (a change
reaches open connections through the plan's C{faults_changed}), and each
connection's L{ToxicDraws} says which of those toxics it drew.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory

from echoapp._faults import Draws, FaultPlan, Faults, FaultyConnection, FaultyFactory
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
    ignored: tuple[str, ...] = field(default=(), compare=False)  # attributes given that it does not have

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
    The toxics of one proxy, both streams, and the one seed every choice
    comes from: each stream's L{StreamPlan} draws, per connection (or UDP
    session) and by its order of arrival, which toxics with a toxicity
    under 1 apply to it, its jitter and its UDP loss.
    """

    def __init__(self, seed: int | None = None, clock: IReactorTime | None = None) -> None:
        self._clock = clock
        self.seed = seed if seed is not None else random.SystemRandom().randrange(1 << 32)
        self.toxics: dict[str, Toxic] = {}
        self.plans = {stream: StreamPlan(self, stream) for stream in STREAMS}

    @property
    def clock(self) -> IReactorTime:
        if self._clock is None:
            self._clock = global_reactor()
        return self._clock

    def _changed(self) -> None:
        """Every stream's plan takes its merged toxics: open connections hear it (C{faults_changed})."""
        for stream, plan in self.plans.items():
            plan.faults = merged(toxic.faults for toxic in self.on(stream))

    def set(self, toxic: Toxic) -> None:
        """Add C{toxic}, or replace the one of its name (keeping its place)."""
        self.toxics[toxic.name] = toxic
        self._changed()

    def remove(self, name: str) -> None:
        """Drop the toxic C{name}: open connections see the change."""
        del self.toxics[name]
        self._changed()

    def clear(self) -> None:
        """
        Drop every toxic (toxiproxy's C{/reset}): open connections see the
        change.
        """
        self.toxics.clear()
        self._changed()

    def on(self, stream: str) -> list[Toxic]:
        """
        The toxics on C{stream} (C{upstream} or C{downstream}), in the order
        toxiproxy keeps them.
        """
        return [toxic for toxic in self.toxics.values() if toxic.direction == stream]

    def link(self, stream: str) -> ToxicDraws:
        """The draws of one new connection (or UDP session) on C{stream}."""
        draws = self.plans[stream].arrival()
        assert isinstance(draws, ToxicDraws)
        return draws


class StreamPlan(FaultPlan):
    """
    One stream's plan: its faults are the stream's toxics merged (what
    any connection could get), its connections' L{ToxicDraws} pick theirs.
    """

    def __init__(self, proxy: ProxyFaults, stream: str) -> None:
        super().__init__(Faults(seed=proxy.seed), proxy._clock)
        self.proxy = proxy
        self.stream = stream

    def arrival(self) -> Draws:
        draws = ToxicDraws(self, self._arrivals)
        self._arrivals += 1
        return draws


class ToxicDraws(Draws):
    """
    One connection's share of a stream: a toxic's toxicity is drawn once,
    when the connection first meets the toxic, so a connection keeps its
    luck across changes; its faults are the toxics it drew, merged, and
    recomputed only after a change to the plan's faults.
    """

    __slots__ = ("_drawn", "_for", "_luck", "_mine")

    plan: StreamPlan

    def __init__(self, plan: StreamPlan, order: int) -> None:
        super().__init__(plan, order)
        # Apart from the jitter's generator: the luck of a toxic does not hang on how many writes came first.
        self._luck = random.Random(f"{plan.seed}/{plan.stream}/{order}")
        self._drawn: dict[str, bool] = {}
        self._for: Faults | None = None
        self._mine = Faults()

    def current(self) -> Faults | None:
        faults = self.plan.faults
        if faults is not self._for:
            self._for = faults
            toxics = self.plan.proxy.on(self.plan.stream)
            self._mine = merged(toxic.faults for toxic in toxics if self._applies(toxic))
        return self.applying(self._mine)

    def _applies(self, toxic: Toxic) -> bool:
        drawn = self._drawn.get(toxic.name)
        if drawn is None:
            drawn = self._drawn[toxic.name] = toxic.toxicity >= 1 or self._luck.random() < toxic.toxicity
        return drawn


class LiveFaultyConnection(FaultyConnection):
    """
    L{FaultyConnection} that, past C{HELD_BYTES} held by the faults
    (latency, slices: not in the transport's buffer, so the transport would
    never pause for them), pauses the other side of the proxy (the producer
    forwarding to it) rather than this side's reads.
    """

    _producer: Any = None
    _producer_paused = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """Kept, as well as passed on: L{holding} pauses it."""
        self._producer = producer
        super().registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._producer = None
        self._producer_paused = False
        super().unregisterProducer()

    def holding(self, over: bool) -> None:
        if self._producer is None or over == self._producer_paused:
            return
        self._producer_paused = over
        (self._producer.pauseProducing if over else self._producer.resumeProducing)()


class LiveFaultyFactory(FaultyFactory):
    """Wraps every connection (a toxic may come later), each with its own L{ToxicDraws} on C{stream}."""

    protocol = LiveFaultyConnection

    def __init__(self, wrapped: Factory, proxy: ProxyFaults, stream: str) -> None:
        super().__init__(wrapped, proxy.plans[stream])
        self.proxy = proxy
        self.stream = stream


def toxics_json(faults: ProxyFaults) -> list[dict[str, Any]]:
    """A proxy's toxics in toxiproxy's order: the upstream ones, then the downstream ones."""
    return [toxic_json(toxic) for stream in STREAMS for toxic in faults.on(stream)]


def toxic_json(toxic: Toxic) -> dict[str, Any]:
    """
    A toxic as toxiproxy's API shows it (name, type, stream, toxicity,
    attributes).
    """
    return {
        "attributes": dict(toxic.attributes),
        "name": toxic.name,
        "type": toxic.type,
        "stream": toxic.stream,
        "toxicity": int(toxic.toxicity) if float(toxic.toxicity).is_integer() else toxic.toxicity,
    }
