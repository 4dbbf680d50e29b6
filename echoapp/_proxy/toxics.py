"""
A proxy's faults, toxiproxy's way: named toxics, each on one stream
(C{upstream}, client to server; C{downstream}, server to client) with its
own toxicity, all drawn from one seed, and live: a toxic added, changed or
removed reaches the connections already open.

Each toxic is an L{echoapp._faults.Faults} put, under its name and with
its toxicity, into its stream's L{FaultPlan}, the one source of faults the
services' C{--fault} uses too (one merge rule: latencies add, for the rest
the toxic added last wins).  Where a toxiproxy type times its fault
otherwise than echoapp's own kind (C{timeout}, C{reset_peer},
C{limit_data}), the toxic says so (L{TIMING}).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory

from echoapp._faults import IDLE_CLOSE, LIMIT_CLOSES, RESET_ON_CHUNK, Draws, FaultPlan, Faults, FaultyFactory

STREAMS = ("upstream", "downstream")
# toxiproxy's types whose timing differs from the echoapp fault they map onto.
TIMING = {
    "timeout": frozenset({IDLE_CLOSE}),  # an idle timer: every chunk starts it again
    "reset_peer": frozenset({RESET_ON_CHUNK}),  # from the first chunk, swallowed; never on a silent one
    "limit_data": frozenset({LIMIT_CLOSES}),  # the whole connection closes at the limit
}


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
    """The faults of several toxics as one, by the plans' one rule (latencies add, the last wins)."""
    plan = FaultPlan(seed=0)
    for index, each in enumerate(faults):
        plan.put(str(index), each)
    shape = plan.arrival().current()
    return shape.faults if shape is not None else Faults()


class ProxyFaults:
    """
    The toxics of one proxy, both streams, and the one seed every choice
    comes from: one L{FaultPlan} per stream (C{plans}), in which each
    connection (or UDP session), by its order of arrival, draws which
    toxics with a toxicity under 1 apply to it, its jitter and its loss.
    """

    def __init__(self, seed: int | None = None, clock: IReactorTime | None = None) -> None:
        self.seed = seed if seed is not None else random.SystemRandom().randrange(1 << 32)
        self.toxics: dict[str, Toxic] = {}
        self.plans = {stream: FaultPlan(None, clock, seed=self.seed, label=stream) for stream in STREAMS}

    @property
    def clock(self) -> IReactorTime:
        return self.plans["upstream"].clock

    def set(self, toxic: Toxic) -> None:
        """Add C{toxic}, or replace the one of its name (keeping its place): open connections hear it."""
        old = self.toxics.get(toxic.name)
        if old is not None and old.direction != toxic.direction:
            self.plans[old.direction].remove(toxic.name, f"toxic {toxic.name} moved to {toxic.direction}")
        self.toxics[toxic.name] = toxic
        timing = TIMING.get(toxic.type, frozenset())
        # The note is what a connection open at the change shows in its wire record.
        note = f"toxic {toxic.name} ({toxic.type}, {toxic.faults}) {'updated' if old else 'added'}"
        self.plans[toxic.direction].put(toxic.name, toxic.faults, toxic.toxicity, timing, note)

    def remove(self, name: str) -> None:
        """Drop the toxic C{name}: open connections see the change."""
        toxic = self.toxics.pop(name)
        self.plans[toxic.direction].remove(name, f"toxic {name} ({toxic.type}) removed")

    def clear(self) -> None:
        """Drop every toxic (toxiproxy's C{/reset}): open connections see the change."""
        self.toxics.clear()
        for plan in self.plans.values():
            plan.clear("every toxic removed (reset)")

    def on(self, stream: str) -> list[Toxic]:
        """The toxics on C{stream} (C{upstream} or C{downstream}), in the order toxiproxy keeps them."""
        return [toxic for toxic in self.toxics.values() if toxic.direction == stream]

    def link(self, stream: str) -> Draws:
        """The draws of one new connection (or UDP session) on C{stream}."""
        return self.plans[stream].arrival()


def faulty_factory(wrapped: Factory, proxy: ProxyFaults, stream: str) -> FaultyFactory:
    """
    C{wrapped} with the toxics of C{stream} in front of every connection (a
    toxic may come later); what they hold pauses the proxy's other side.
    """
    return FaultyFactory(wrapped, proxy.plans[stream], pauses_producer=True)


LiveFaultyFactory = faulty_factory  # the name the registry knows


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
