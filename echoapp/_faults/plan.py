"""
The one source of faults: named fault sets, each with a toxicity, merged
by one rule into what applies to a connection now, with every random
choice drawn from the seed and the connection's (or datagram source's)
order of arrival, so that concurrent clients get the same draws run after
run whatever order their bytes interleave in.

A service's C{--fault} is one unnamed set whose toxicity is its
C{fraction}; a proxy's toxics are named sets, one plan per stream.  The
wrappers (L{echoapp._faults.stream}, L{echoapp._faults.datagrams}) see
only L{FaultSource}: the faults that apply to a connection now
(L{Draws.current}), and a call when they change (L{FaultSource.watch}).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol

from twisted.internet.interfaces import IReactorTime

from echoapp._faults.held import Wakeups
from echoapp._faults.spec import OFF, Faults
from echoapp._twisted import global_reactor

# Datagram sources remembered (their order, generator and count); the
# oldest is forgotten past this, as the rate table forgets.
MAX_SOURCES = 65_536
_ADDED = ("latency", "jitter")  # the fields whose values add up when sets merge; the rest: the last wins
_NOT_MERGED = ("fraction", "seed")  # a set's fraction is its toxicity; the seed is the plan's
_CONDITIONS = ("first", "after_messages", "match", "active_from", "active_until")
_FIELDS = tuple(f.name for f in fields(Faults) if f.name not in _NOT_MERGED)

# How a set's timed faults count, where toxiproxy's toxics differ from
# echoapp's own fault kinds (docs/reference/faults.rst says how):
IDLE_CLOSE = "idle-close"  # close_after restarts at every chunk (toxiproxy's timeout)
RESET_ON_CHUNK = "reset-on-chunk"  # reset_after counts from the first chunk, which is swallowed (reset_peer)
LIMIT_CLOSES = "limit-closes"  # half_close_after_bytes closes the whole connection (limit_data)
_TIMING_OF = {
    IDLE_CLOSE: "close_after",
    RESET_ON_CHUNK: "reset_after",
    LIMIT_CLOSES: "half_close_after_bytes",
}


@dataclass(frozen=True, slots=True)
class Shape:
    """
    The faults that apply to one connection now, merged, with how their
    timed ones count (L{IDLE_CLOSE}, L{RESET_ON_CHUNK}, L{LIMIT_CLOSES});
    worked out once per change, as asking it is the per-chunk cost.  So
    is what a chunk asks of them: whether writes are held (C{output}) and
    whether reads pass as they come (C{passes_reads}: not slowed, stalled
    or waiting on a condition).
    """

    faults: Faults
    timing: frozenset[str] = frozenset()
    conditional: bool = False
    output: bool = field(init=False, compare=False)
    passes_reads: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        faults = self.faults
        reads = not (self.conditional or faults.shapes_input() or faults.stall == "read")
        object.__setattr__(self, "output", faults.shapes_output())
        object.__setattr__(self, "passes_reads", reads)


class Listener(Protocol):
    """An open connection that wants to hear when its source's faults change."""

    def faults_changed(self) -> None:
        """The faults changed: re-read what holds state (a stalled read, a timer)."""


class FaultSource(Protocol):
    """What a fault wrapper needs of its faults: L{FaultPlan} is the one implementation."""

    clock: IReactorTime
    wakeups: Wakeups  # the one timer every connection's held bytes wait on
    change: str  # the last change, in words (a record's note when a connection hears it)

    def start(self) -> None:
        """The service started: time windows count from now."""

    def arrival(self) -> Draws:
        """A new connection's share of the faults."""

    def source(self, key: Any) -> Draws:
        """A datagram source's share, by its order of first arrival."""

    def watch(self, listener: Listener) -> None:
        """Tell C{listener} when the faults change (until L{unwatch})."""

    def unwatch(self, listener: Listener) -> None:
        """The connection is gone."""


@dataclass(frozen=True, slots=True)
class _Entry:
    name: str
    toxicity: float
    changes: tuple[tuple[str, Any], ...]  # the fields it sets
    timing: frozenset[str]


def _fold(changes: dict[str, Any], timing: set[str], entry: _Entry) -> None:
    """Merge C{entry} into C{changes}: latencies add, for the rest the last set wins (timing with it)."""
    for name, value in entry.changes:
        changes[name] = changes.get(name, 0.0) + value if name in _ADDED else value
    for kind, name in _TIMING_OF.items():
        if name in dict(entry.changes):
            (timing.add if kind in entry.timing else timing.discard)(kind)


def _shape(changes: dict[str, Any], timing: set[str]) -> Shape | None:
    faults = replace(OFF, **changes) if changes else OFF
    if not faults:
        return None
    conditional = any(getattr(faults, name) is not None for name in _CONDITIONS)
    return Shape(faults, frozenset(timing), conditional)


class Draws:
    """
    One connection's (or datagram source's) share of a plan: its order of
    arrival, its own seeded generator, a number drawn once per named set
    (its luck against that set's toxicity, kept across changes), and what
    the conditions count.
    """

    __slots__ = (
        "_luck",
        "_numbers",
        "_on",
        "_shape",
        "_share",
        "_tail",
        "_version",
        "matched",
        "messages",
        "order",
        "plan",
        "random",
        "switched",
    )

    def __init__(self, plan: FaultPlan, order: int) -> None:
        self.plan = plan
        self.order = order
        self.random = random.Random(f"{plan.seed}/{order}")
        self._share = self.random.random()  # drawn first: the unnamed set's luck (a service's fraction)
        self._luck: random.Random | None = None  # the named sets': apart, so jitter draws do not move them
        self._numbers: dict[str, float] = {}
        self._version = -1
        self._shape: Shape | None = None
        self.messages = 0
        self.matched = False
        self._tail = b""
        # Told when a conditional fault switches on or off (the wire record's
        # hook, set only while something records): asked only of conditional shapes.
        self.switched: Callable[[bool, Faults], object] | None = None
        self._on = False

    def note(self, data: bytes, datagram: bool = False) -> None:
        """What arrived: messages are counted (lines; datagrams) and C{match} is looked for."""
        self.messages += 1 if datagram else data.count(b"\n")
        match = self.plan.match
        if match is None:
            return
        if datagram:
            self.matched = match in data
        elif not self.matched:
            seen = self._tail + data
            self.matched = match in seen
            self._tail = seen[-(len(match) - 1) :] if len(match) > 1 else b""

    def watch(self, switched: Callable[[bool, Faults], object]) -> None:
        """
        Tell C{switched} when a conditional fault switches on or off for
        this one (at once, if it is on already: a connection among the
        C{first} is on from its arrival).
        """
        self.switched = switched
        shape = self._shape
        if self._on and shape is not None:
            switched(True, shape.faults)

    def number(self, entry: _Entry) -> float:
        """This one's luck against C{entry}'s toxicity: drawn when first needed, then kept."""
        if not entry.name:
            return self._share
        found = self._numbers.get(entry.name)
        if found is None:
            if self._luck is None:
                self._luck = random.Random(f"{self.plan.seed}/{self.plan.label}/{self.order}")
            found = self._numbers[entry.name] = self._luck.random()
        return found

    def quiet(self) -> bool:
        """
        Whether no fault applies to this one until its plan changes, and no
        condition looks for bytes (C{match}): asked once per change, so that
        a chunk on a stream with no fault costs one check (L{current} is the
        question per chunk otherwise).
        """
        self._refresh()
        return self._shape is None and self.plan.match is None

    def settled(self) -> Shape | None:
        """
        The faults that apply to this one until its plan changes, if no
        condition switches them on and off (else L{None}): asked once per
        change, so that a chunk need not ask L{current}.
        """
        self._refresh()
        shape = self._shape
        return shape if shape is not None and not shape.conditional else None

    def _refresh(self) -> None:
        if self._version != self.plan.version:
            self._version = self.plan.version
            self._shape = self.plan.shape_for(self)

    def current(self) -> Shape | None:
        """The faults that apply to this one now, or L{None}: the one question asked per chunk."""
        if self._version != self.plan.version:
            self._refresh()
        shape = self._shape
        if shape is None or not shape.conditional:
            return shape
        on = self._holds(shape.faults)
        if on is not self._on:
            self._on = on
            if self.switched is not None:
                self.switched(on, shape.faults)
        return shape if on else None

    def _holds(self, faults: Faults) -> bool:
        if faults.first is not None and self.order >= faults.first:
            return False
        if faults.after_messages is not None and self.messages <= faults.after_messages:
            return False
        if faults.match is not None and not self.matched:
            return False
        if faults.active_from is not None or faults.active_until is not None:
            elapsed = self.plan.elapsed()
            if faults.active_from is not None and elapsed < faults.active_from:
                return False
            if faults.active_until is not None and elapsed >= faults.active_until:
                return False
        return True

    def delay(self, faults: Faults, latency: float | None = None) -> float:
        """C{latency} (the reply latency unless given) with this one's jitter."""
        latency = faults.latency if latency is None else latency
        if not faults.jitter:
            return latency
        return max(0.0, latency + self.random.uniform(-faults.jitter, faults.jitter))


class FaultPlan:
    """
    The faults of a service (or of one stream of a proxy) and the seed
    behind every choice.  C{faults} is the unnamed set (C{--fault}; tests
    change it while the service runs); L{put} and L{remove} keep named
    sets (a proxy's toxics).  New connections and every open one see a
    change (open ones are told, for the faults that hold state).
    """

    def __init__(
        self,
        faults: Faults | None = None,
        clock: IReactorTime | None = None,
        seed: int | None = None,
        label: str = "",
    ) -> None:
        faults = faults or OFF
        # The reactor arrives once, when the service is made (options hold values).
        self.clock: IReactorTime = clock if clock is not None else global_reactor()
        self.wakeups = Wakeups(self.clock)
        if seed is None:
            seed = faults.seed if faults.seed is not None else random.SystemRandom().randrange(1 << 32)
        self.seed = seed
        self.label = label  # a proxy's stream: named sets' luck differs per stream
        self._entries: dict[str, _Entry] = {}
        self._chancy: dict[str, _Entry] = {}  # the sets with a toxicity under 1: each connection draws
        self._all: tuple[dict[str, Any], set[str]] = ({}, set())  # every set merged, grown as sets are added
        self._all_shape: Shape | None = None
        self._all_stale = False
        self.version = 0
        self.match: bytes | None = None  # what any set looks for, counted before it applies
        self._arrivals = 0
        self._started: float | None = None
        self._sources: OrderedDict[Any, Draws] = OrderedDict()
        self._listeners: set[Listener] = set()
        self.change = ""
        self._faults = OFF
        self.faults = faults

    @property
    def faults(self) -> Faults:
        """The unnamed set: what C{--fault} asked for (or what a test set)."""
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._faults = faults
        note = f"faults now {faults}"
        if faults:
            self.put("", faults, faults.fraction, note=note)
        elif "" in self._entries:
            self.remove("", note=note)
        else:
            self._changed(note)

    def put(
        self,
        name: str,
        faults: Faults,
        toxicity: float = 1.0,
        timing: frozenset[str] = frozenset(),
        note: str | None = None,
    ) -> None:
        """
        Add the set C{name}, or replace it in its place; open connections
        hear it (C{note}: the change in words, for their records).
        """
        changes = tuple((n, getattr(faults, n)) for n in _FIELDS if getattr(faults, n) != getattr(OFF, n))
        entry = _Entry(name, toxicity, changes, timing)
        appended = name not in self._entries
        self._entries[name] = entry
        self._chancy.pop(name, None)
        if toxicity < 1:
            self._chancy[name] = entry
        if appended and not self._all_stale:
            _fold(*self._all, entry)  # a set added last merges last: no need to merge them all again
            self._all_shape = None
        else:
            self._all_stale = True
        if faults.match is not None:
            self.match = faults.match
        self._changed(note or f"{'added' if appended else 'changed'} {name}: {faults}")

    def remove(self, name: str, note: str | None = None) -> None:
        """Drop the set C{name} (L{KeyError} if none); open connections hear it."""
        del self._entries[name]
        self._chancy.pop(name, None)
        self._all_stale = True
        self._changed(note or f"removed {name}")

    def clear(self, note: str = "every set removed") -> None:
        """Drop every set."""
        self._entries.clear()
        self._chancy.clear()
        self._all_stale = True
        self._changed(note)

    def _changed(self, note: str) -> None:
        self.change = note
        self.version += 1
        for listener in list(self._listeners):
            listener.faults_changed()

    def shape_for(self, draws: Draws) -> Shape | None:
        """
        The sets C{draws} drew (each set's toxicity against its number),
        merged; most connections draw them all, and share one merge.
        """
        left_out = [name for name, entry in self._chancy.items() if draws.number(entry) >= entry.toxicity]
        if not left_out:
            if self._all_stale:
                self._all = ({}, set())
                for entry in self._entries.values():
                    _fold(*self._all, entry)
                self._all_stale, self._all_shape = False, None
            if self._all_shape is None:
                self._all_shape = _shape(*self._all) or Shape(OFF)
            return self._all_shape if self._all_shape.faults is not OFF else None
        changes: dict[str, Any] = {}
        timing: set[str] = set()
        for entry in self._entries.values():
            if entry.name not in left_out:
                _fold(changes, timing, entry)
        return _shape(changes, timing)

    def watch(self, listener: Listener) -> None:
        """Tell C{listener} (an open connection) of every change, until L{unwatch}."""
        self._listeners.add(listener)

    def unwatch(self, listener: Listener) -> None:
        """The connection is gone: no more news."""
        self._listeners.discard(listener)

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
