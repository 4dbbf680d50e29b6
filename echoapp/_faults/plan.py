"""
The faults a service applies now, and every random choice behind them:
one generator per connection (or datagram source), derived from the seed
and its order of arrival, so that concurrent clients get the same draws
run after run whatever order their bytes interleave in.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime

from echoapp._faults.spec import Faults
from echoapp._twisted import LazyReactor

# Datagram sources remembered (their order, generator and count); the
# oldest is forgotten past this, as the rate table forgets.
MAX_SOURCES = 65_536


class Listener(Protocol):
    """An open connection that wants to hear when the plan's faults change."""

    def faults_changed(self) -> None:
        """The plan's faults were replaced: re-read what holds state (a stalled read, a reset timer)."""


class Draws:
    """
    One connection's (or datagram source's) share of the plan: its order of
    arrival, its own seeded generator, and what the conditions count.
    """

    __slots__ = ("_share", "_tail", "matched", "messages", "order", "plan", "random")

    def __init__(self, plan: FaultPlan, order: int) -> None:
        self.plan = plan
        self.order = order
        self.random = random.Random(f"{plan.seed}/{order}")
        self._share = self.random.random()  # drawn first: does this one get the faults at all?
        self.messages = 0
        self.matched = False
        self._tail = b""

    def note(self, data: bytes, datagram: bool = False) -> None:
        """What arrived: messages are counted (lines; datagrams) and C{match} is looked for."""
        self.messages += 1 if datagram else data.count(b"\n")
        match = self.plan.faults.match
        if match is None:
            return
        if datagram:
            self.matched = match in data
        elif not self.matched:
            seen = self._tail + data
            self.matched = match in seen
            self._tail = seen[-(len(match) - 1) :] if len(match) > 1 else b""

    def current(self) -> Faults | None:
        """The faults that apply to this one now, or L{None}."""
        return self.applying(self.plan.faults)

    def applying(self, faults: Faults) -> Faults | None:
        """
        C{faults} if their conditions hold for this one now, else L{None}:
        apart from L{current}, so that a plan whose connections each get
        faults of their own (the proxy's toxics) keeps these conditions.
        """
        if not faults:
            return None
        if faults.fraction < 1 and self._share >= faults.fraction:
            return None
        if faults.first is not None and self.order >= faults.first:
            return None
        if faults.after_messages is not None and self.messages <= faults.after_messages:
            return None
        if faults.match is not None and not self.matched:
            return None
        if faults.active_from is not None or faults.active_until is not None:
            elapsed = self.plan.elapsed()
            if faults.active_from is not None and elapsed < faults.active_from:
                return None
            if faults.active_until is not None and elapsed >= faults.active_until:
                return None
        return faults

    def delay(self, faults: Faults, latency: float | None = None) -> float:
        """C{latency} (the reply latency unless given) with this one's jitter."""
        latency = faults.latency if latency is None else latency
        if not faults.jitter:
            return latency
        return max(0.0, latency + self.random.uniform(-faults.jitter, faults.jitter))


class FaultPlan:
    """
    The faults a service applies now and the seed behind every random
    choice.  Tests change C{faults} while the service runs: new connections
    and every open one see the change (open ones are told, for the faults
    that hold state: a stalled read, a reset timer).
    """

    def __init__(self, faults: Faults, clock: IReactorTime | None = None) -> None:
        self._clock = clock
        self.seed = faults.seed if faults.seed is not None else random.SystemRandom().randrange(1 << 32)
        self.random = random.Random(self.seed)  # the plan's own draws (L{applies}, L{delay})
        self._faults = faults
        self._arrivals = 0
        self._started: float | None = None
        self._sources: OrderedDict[Any, Draws] = OrderedDict()
        self.listeners: set[Listener] = set()

    @property
    def faults(self) -> Faults:
        """What goes wrong now."""
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._faults = faults
        for listener in list(self.listeners):
            listener.faults_changed()

    # The reactor unless given: taken when first needed, as options are parsed before it is installed.
    clock: IReactorTime = LazyReactor()  # type: ignore[assignment]

    def start(self) -> None:
        """The service started: C{active-from} and C{active-until} count from now (the first call)."""
        if self._started is None:
            self._started = self.clock.seconds()

    def elapsed(self) -> float:
        """Seconds since L{start}."""
        self.start()
        assert self._started is not None
        return self.clock.seconds() - self._started

    def arrival(self) -> Draws:
        """A new connection's share: the next order of arrival."""
        draws = Draws(self, self._arrivals)
        self._arrivals += 1
        return draws

    def source(self, key: Any) -> Draws:
        """A datagram source's share, by its order of first arrival."""
        draws = self._sources.get(key)
        if draws is None:
            draws = self._sources[key] = self.arrival()
            if len(self._sources) > MAX_SOURCES:
                self._sources.popitem(last=False)
        return draws

    def applies(self) -> bool:
        """Does a new connection get the faults (ignoring conditions)?  Drawn from the plan's generator."""
        faults = self.faults
        return bool(faults) and (faults.fraction >= 1 or self.random.random() < faults.fraction)

    def delay(self) -> float:
        """A latency with jitter, from the plan's generator."""
        faults = self.faults
        if not faults.jitter:
            return faults.latency
        return max(0.0, faults.latency + self.random.uniform(-faults.jitter, faults.jitter))
